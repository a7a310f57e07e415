"""``TopicTrigger``: its checks, what registering a function with one records, and the
source groups a worker derives from an app."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from stepstream import CancelOn, Context, Stepstream, TopicTrigger
from stepstream.errors import ConfigError
from stepstream.settings import Settings
from streams.policy import policy_of
from streams.sources import check_sources, source_groups

REFUNDS = TopicTrigger("shop.refunds")


@pytest.mark.parametrize("bad", [
    {"topic": "has space"}, {"topic": ""}, {"topic": "x" * 250},
    {"topic": "ok", "start": "newest"},
    {"topic": "ok", "start": datetime(2026, 1, 1)},  # naive: which zone?
    {"topic": "ok", "id": "record.value."},
])
def test_a_trigger_that_cannot_work_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        TopicTrigger(**bad)  # type: ignore[arg-type]


def test_a_datetime_start_is_a_timestamp_in_ms() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert TopicTrigger("t", start=start).start_ms == 1_767_225_600_000
    assert TopicTrigger("t").start_ms is None


def app() -> Stepstream:
    ss = Stepstream("t", settings=Settings(namespace="ns"))

    @ss.function(id="on-order", trigger=TopicTrigger("shop.orders", start="earliest"),
                 cancel_on=[CancelOn(event=TopicTrigger("shop.orders.cancelled"))])
    async def on_order(ctx: Context) -> None:
        await ctx.step.wait_for_event("paid", event=TopicTrigger("shop.payments"),
                                      timeout=timedelta(hours=1))
        await ctx.step.wait_for_event("refund", event=REFUNDS, timeout=60)

    @ss.function(id="on-signup", trigger="app/signup")
    async def on_signup(ctx: Context) -> None:
        await ctx.step.wait_for_event("paid", event=TopicTrigger(topic="shop.payments"),
                                      timeout=60)

    return ss


def test_a_function_records_its_source_and_the_topics_it_waits_on() -> None:
    functions = app().functions
    order = functions["on-order"]
    assert order.trigger is None and order.source == TopicTrigger("shop.orders",
                                                                  start="earliest")
    assert order.event_name == "shop.orders"
    assert order.waits_on == {"shop.orders.cancelled", "shop.payments", "shop.refunds"}
    assert [rule.event for rule in policy_of(order).cancel_on] == ["shop.orders.cancelled"]
    assert functions["on-signup"].waits_on == {"shop.payments"}


def test_a_group_per_triggered_function_and_per_waited_topic() -> None:
    groups = source_groups("ns", app().functions)
    assert [(g.topic, g.group, g.function.id if g.function else None) for g in groups] == [
        ("shop.orders", "ns.source.on-order", "on-order"),
        ("shop.orders.cancelled", "ns.waits.shop.orders.cancelled", None),
        ("shop.payments", "ns.waits.shop.payments", None),
        ("shop.refunds", "ns.waits.shop.refunds", None)]


def test_a_worker_refuses_missing_source_topics_and_its_own_topics() -> None:
    groups = source_groups("ns", app().functions)
    topics = {"shop.orders": 3, "shop.orders.cancelled": 1, "shop.payments": 2}
    with pytest.raises(ConfigError, match=r"\['shop.refunds'\] do not exist"):
        check_sources(groups, topics, Settings(namespace="ns"))
    check_sources(groups, {**topics, "shop.refunds": 1}, Settings(namespace="ns"))
    ss = Stepstream("t", settings=Settings(namespace="ns"))

    @ss.function(id="loop", trigger=TopicTrigger("ns.runs"))
    async def loop(ctx: Context) -> None:
        pass

    @ss.function(id="state", trigger=TopicTrigger("ns-runs-changelog"))
    async def state(ctx: Context) -> None:
        pass

    with pytest.raises(ConfigError, match=r"\['ns-runs-changelog', 'ns.runs'\] belong to"):
        check_sources(source_groups("ns", ss.functions),
                      {"ns.runs": 8, "ns-runs-changelog": 8}, Settings(namespace="ns"))
