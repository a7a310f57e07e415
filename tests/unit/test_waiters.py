"""Matching events against waiting runs (``streams.waiters``) and the CEL expressions
they use (``stepstream.expressions``)."""

from __future__ import annotations

import pytest

from schemas.messages import CancelRequested, Event, EventMatched, Waiter, WaiterSet
from stepstream.errors import ConfigError
from stepstream.expressions import MAX_EXPRESSION_LENGTH, compile_condition, evaluate, matches
from streams.waiters import change, event_context, match

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


# --- change ----------------------------------------------------------------------------


def test_change_adds_and_removes_a_waiter() -> None:
    added = change(WaiterSet(), waiter(), True, now_ms=0)
    assert added == WaiterSet(waiters=[waiter()])

    removed = change(added, waiter(expires_at=0), False, now_ms=0)
    assert removed == WaiterSet(waiters=[])


def test_change_replaces_a_waiter_of_the_same_run_and_step() -> None:
    waiters = change(WaiterSet(), waiter(expires_at=500), True, now_ms=0)

    waiters = change(waiters, waiter(expires_at=900), True, now_ms=0)

    assert waiters.waiters == [waiter(expires_at=900)]


def test_change_keeps_the_waiters_of_other_runs_and_steps() -> None:
    waiters = WaiterSet(waiters=[waiter("run-1", "w"), waiter("run-2", "w"),
                                 waiter("run-1", "v")])

    waiters = change(waiters, waiter("run-1", "w"), False, now_ms=0)

    assert [(w.run_id, w.step_id) for w in waiters.waiters] == [("run-2", "w"), ("run-1", "v")]


def test_change_drops_expired_waiters() -> None:
    waiters = WaiterSet(waiters=[waiter("old", expires_at=100), waiter("edge", expires_at=200),
                                 waiter("live", expires_at=201)])

    waiters = change(waiters, waiter("new", expires_at=900), True, now_ms=200)

    assert [w.run_id for w in waiters.waiters] == ["live", "new"]


def test_change_does_not_modify_the_given_set() -> None:
    waiters = WaiterSet(waiters=[waiter("a")])

    change(waiters, waiter("b"), True, now_ms=0)
    change(waiters, waiter("a"), False, now_ms=0)

    assert waiters == WaiterSet(waiters=[waiter("a")])


# --- match -----------------------------------------------------------------------------


def test_an_event_wakes_the_waiter_whose_condition_holds() -> None:
    waiters = WaiterSet(waiters=[waiter("run-1", trigger=ORDER),
                                 waiter("run-2", trigger=OTHER_ORDER)])
    event = paid(7, ts=100)

    result = match(waiters, event)

    assert result.messages == [EventMatched(run_id="run-1", step_id="w", event=event, ts=100)]
    assert result.remaining == WaiterSet(waiters=[waiter("run-2", trigger=OTHER_ORDER)])


def test_a_condition_sees_the_trigger_as_event_and_the_incoming_one_as_async() -> None:
    waiters = WaiterSet(waiters=[
        waiter("by-user", condition='event.data.user == "ada" && async.data.amount > 2'),
        waiter("by-name", condition='async.name == "orders/paid" && event.id == "evt-1"'),
        waiter("wrong", condition="async.data.amount > 100"),
    ])

    result = match(waiters, paid(1))

    assert [m.run_id for m in result.messages] == ["by-user", "by-name"]
    assert [w.run_id for w in result.remaining.waiters] == ["wrong"]


def test_a_waiter_without_a_condition_takes_any_event_of_its_name() -> None:
    result = match(WaiterSet(waiters=[waiter(condition=None)]), paid(99))

    assert [m.run_id for m in result.messages] == ["run-1"]
    assert result.remaining == WaiterSet()


def test_a_cancel_waiter_cancels_the_run() -> None:
    event = paid(7, ts=100, id="cancel-evt")

    result = match(WaiterSet(waiters=[waiter(kind="cancel", step_id="cancel_on:0")]), event)

    (message,) = result.messages
    assert isinstance(message, CancelRequested)
    assert (message.run_id, message.ts) == ("run-1", 100)
    assert "orders/paid" in message.reason and "cancel-evt" in message.reason


def test_an_expired_waiter_does_not_match() -> None:
    waiters = WaiterSet(waiters=[waiter("expired", expires_at=100),
                                 waiter("live", expires_at=101)])

    result = match(waiters, paid(7, ts=100))

    assert [m.run_id for m in result.messages] == ["live"]
    assert [w.run_id for w in result.remaining.waiters] == ["expired"]


def test_a_condition_on_a_missing_field_does_not_match() -> None:
    waiters = WaiterSet(waiters=[waiter(condition="async.data.nothing_here == 1")])

    result = match(waiters, paid(7))

    assert result.messages == [] and result.remaining == waiters


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
