"""Matching events against waiting runs (``streams.waiters``) and the CEL expressions
they use (``stepstream.expressions``)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from schemas.messages import CancelRequested, Event, EventMatched, Waiter
from stepstream.errors import ConfigError
from stepstream.expressions import MAX_EXPRESSION_LENGTH, compile_condition, evaluate, matches
from streams.waiters import (
    WaiterIndex,
    entry_key,
    event_context,
    fires,
    indexed_equality,
    value_key,
)

ORDER = Event(id="evt-1", name="orders/placed", data_json='{"order":7,"user":"ada"}', ts=5)
OTHER_ORDER = Event(id="evt-2", name="orders/placed", data_json='{"order":8}', ts=6)
SAME = "async.data.order == event.data.order"


def waiter(run_id: str = "run-1", step_id: str = "w", *, kind: str = "step",
           trigger: Event = ORDER, expires_at: int = 1_000,
           condition: str | None = SAME) -> Waiter:
    return Waiter(run_id=run_id, step_id=step_id, kind=kind, event_name="orders/paid",
                  trigger=trigger, expires_at=expires_at, condition=condition)


def paid(order: int, ts: int = 100, id: str = "pay-1") -> Event:
    return Event(id=id, name="orders/paid", data_json=f'{{"order":{order},"amount":3}}', ts=ts)


# --- fires ------------------------------------------------------------------------------


def test_an_event_wakes_the_waiter_whose_condition_holds() -> None:
    event = paid(7, ts=100)

    assert fires(waiter("run-1", trigger=ORDER), event) == EventMatched(
        run_id="run-1", step_id="w", event=event, ts=100)
    assert fires(waiter("run-2", trigger=OTHER_ORDER), event) is None


def test_a_condition_sees_the_trigger_as_event_and_the_incoming_one_as_async() -> None:
    conditions = {"by-user": 'event.data.user == "ada" && async.data.amount > 2',
                  "by-name": 'async.name == "orders/paid" && event.id == "evt-1"',
                  "wrong": "async.data.amount > 100"}

    fired = [run for run, condition in conditions.items()
             if fires(waiter(run, condition=condition), paid(1))]

    assert fired == ["by-user", "by-name"]


def test_a_waiter_without_a_condition_takes_any_event_of_its_name() -> None:
    assert fires(waiter(condition=None), paid(99)) is not None


def test_a_cancel_waiter_cancels_the_run() -> None:
    message = fires(waiter(kind="cancel", step_id="cancel_on:0"), paid(7, ts=100, id="c-evt"))

    assert isinstance(message, CancelRequested)
    assert (message.run_id, message.ts) == ("run-1", 100)
    assert "orders/paid" in message.reason and "c-evt" in message.reason


def test_an_expired_waiter_does_not_match() -> None:
    assert fires(waiter(expires_at=100), paid(7, ts=100)) is None
    assert fires(waiter(expires_at=101), paid(7, ts=100)) is not None


def test_a_condition_on_a_missing_field_does_not_match() -> None:
    assert fires(waiter(condition="async.data.nothing_here == 1"), paid(7)) is None


# --- the index --------------------------------------------------------------------------


@pytest.mark.parametrize("condition, paths", [
    ("async.data.order == event.data.order", (("order",), ("order",))),
    ("event.data.a.b == async.data.x", (("x",), ("a", "b"))),
    ("async.data.amount > 2 && async.data.o == event.data.p", (("o",), ("p",))),
    ("async.data.o == event.data.p || true", None),  # not a conjunction
    ('async.data.o == event.data.p && async.data.s == "x && y"', None),  # quoted
    ("!(async.data.o == event.data.p && false)", None),
    ("async.data.o == event.data.p + 1", None),
    ("async.data.o == async.data.p", None),
    ("event.data.o == 3", None),
    (None, None),
])
def test_the_indexed_shape_is_an_equality_the_whole_condition_requires(
        condition: str | None, paths: object) -> None:
    assert indexed_equality(condition) == paths


@pytest.mark.parametrize("a, b", [(1, 1.0), (0.0, -0.0), ("x", "x"), (None, None)])
def test_values_cel_finds_equal_have_one_key(a: object, b: object) -> None:
    assert value_key({"v": a}, ("v",)) == value_key({"v": b}, ("v",))


@pytest.mark.parametrize("a, b", [(True, 1), ("1", 1), (None, "None")])
def test_values_cel_finds_different_have_different_keys(a: object, b: object) -> None:
    assert value_key({"v": a}, ("v",)) != value_key({"v": b}, ("v",))


def indexed(*waiters: Waiter) -> WaiterIndex:
    index = WaiterIndex()
    for w in waiters:
        index.sync(entry_key(w), w)
    return index


def test_an_event_finds_only_the_waiters_expecting_its_value_and_the_scanned_ones() -> None:
    seven, eight = waiter("r7", trigger=ORDER), waiter("r8", trigger=OTHER_ORDER)
    scanned = waiter("any", condition="async.data.amount > 2")
    other_name = replace(waiter("elsewhere", condition=None), event_name="orders/shipped")
    index = indexed(seven, eight, scanned, other_name)
    event = paid(7)

    found = set(index.candidates(event, event_context(event)["data"]))

    assert found == {entry_key(seven), entry_key(scanned)}
    assert len(index) == 4


def test_a_removed_or_replaced_waiter_is_no_longer_found_where_it_was() -> None:
    seven = waiter("r", trigger=ORDER)
    index = indexed(seven)
    index.sync(entry_key(seven), waiter("r", trigger=OTHER_ORDER))  # now expects 8
    assert list(index.candidates(paid(7), {"order": 7})) == []
    assert list(index.candidates(paid(8), {"order": 8})) == [entry_key(seven)]
    index.sync(entry_key(seven), None)
    assert list(index.candidates(paid(8), {"order": 8})) == [] and len(index) == 0


def test_a_waiter_whose_expected_value_is_missing_is_scanned_and_never_matches() -> None:
    w = waiter(condition="async.data.order == event.data.nothing")
    index = indexed(w)
    assert list(index.candidates(paid(7), {"order": 7})) == [entry_key(w)]
    assert fires(w, paid(7)) is None


def test_event_context_is_what_conditions_see() -> None:
    assert event_context(ORDER) == {"id": "evt-1", "name": "orders/placed",
                                    "data": {"order": 7, "user": "ada"}, "ts": 5}


# --- expressions -----------------------------------------------------------------------


@pytest.mark.parametrize("source", ["a ==", "event.data.", "((1)", "1 +* 2", ""])
def test_an_invalid_expression_is_a_config_error(source: str) -> None:
    with pytest.raises(ConfigError, match="invalid CEL expression"):
        compile_condition(source)


def test_an_expression_over_the_length_limit_is_refused() -> None:
    longest = "true" + " " * (MAX_EXPRESSION_LENGTH - 4)

    assert evaluate(longest, {}) is True
    with pytest.raises(ConfigError, match=f"over {MAX_EXPRESSION_LENGTH} characters"):
        compile_condition(longest + " ")


def test_evaluate_returns_the_value_of_the_expression() -> None:
    context = {"event": event_context(ORDER)}

    assert evaluate("event.data.order * 2", context) == 14
    assert evaluate("event.data.user", context) == "ada"


def test_a_missing_field_at_run_time_evaluates_to_none_and_does_not_match() -> None:
    context = {"event": event_context(ORDER)}

    assert evaluate("event.data.missing", context) is None
    assert evaluate("async.data.order == 1", context) is None
    assert matches("event.data.missing == 1", context) is False


def test_only_true_matches() -> None:
    context = {"event": event_context(ORDER)}

    assert matches(None, context) is True
    assert matches("event.data.order == 7", context) is True
    assert matches("event.data.order == 8", context) is False
    assert matches("event.data.order", context) is False  # 7 is not true
    assert matches('"true"', context) is False
