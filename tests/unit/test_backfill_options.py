"""What ``stepstream backfill`` accepts before it touches Kafka."""

from __future__ import annotations

import argparse

import pytest

from stepstream import Stepstream, TopicTrigger
from stepstream.cli_backfill import moment, until
from stepstream.errors import ConfigError
from streams.backfill import Backfill

ss = Stepstream(app_id="backfill-options")


@ss.function(id="orders", trigger=TopicTrigger("shop.orders", start="latest"))
async def orders(ctx: object) -> None:
    return None


@ss.function(id="named", trigger="shop/order")
async def named(ctx: object) -> None:
    return None


@ss.function(id="hourly", cron="0 * * * *")
async def hourly(ctx: object) -> None:
    return None


def test_times_are_earliest_or_iso_with_an_offset() -> None:
    assert moment("earliest") is None
    assert moment("2026-11-01T00:00Z") == 1_793_491_200_000
    assert moment("2026-11-01T02:00+02:00") == 1_793_491_200_000
    with pytest.raises(argparse.ArgumentTypeError, match="offset"):
        moment("2026-11-01T00:00")
    with pytest.raises(argparse.ArgumentTypeError, match="takes a time"):
        until("earliest")


def test_the_topic_is_the_source_topic_or_the_events_topic() -> None:
    assert Backfill(ss, "orders", from_ms=None, to_ms=None).topic == "shop.orders"
    assert Backfill(ss, "named", from_ms=0, to_ms=1).topic == "stepstream.events"


def test_the_range_replaces_the_functions_start() -> None:
    job = Backfill(ss, "orders", from_ms=0, to_ms=None)

    assert job.function.source is not None and job.function.source.start_ms is None
    assert ss.functions["orders"].source == TopicTrigger("shop.orders", start="latest")


@pytest.mark.parametrize(("function", "from_ms", "to_ms", "message"), [
    ("missing", None, None, "has no function 'missing'"),
    ("hourly", None, None, "not triggered by events or a topic"),
    ("orders", 5, 5, "--to must be later than --from"),
])
def test_what_cannot_be_backfilled_is_refused(function: str, from_ms: int | None,
                                              to_ms: int | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Backfill(ss, function, from_ms=from_ms, to_ms=to_ms)


def test_each_backfill_has_a_group_of_its_own_unless_resumed() -> None:
    first = Backfill(ss, "orders", from_ms=None, to_ms=None).group
    second = Backfill(ss, "orders", from_ms=None, to_ms=None).group

    assert first != second and first.startswith("stepstream.backfill.orders.")
    assert Backfill(ss, "orders", from_ms=None, to_ms=None, group=first).group == first
