"""The run state machine beyond ``step.run``: parallel steps, sleeps, waits for events,
child runs, ``cancel_on`` rules and timeouts."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from schemas.messages import (
    CancelRequested,
    ChildFinished,
    Dispatched,
    ErrorInfo,
    Event,
    EventMatched,
    FunctionFinished,
    MemoEntry,
    Pending,
    PlannedStep,
    RunStarted,
    RunState,
    StepCompleted,
    StepFailed,
    StepPlanned,
    TimerFired,
    Waiter,
    WaiterChanged,
)
from stepstream.events import FUNCTION_FAILED
from stepstream.retry import RetryPolicy
from streams.machine import (
    CANCELLED,
    COMPLETED,
    FAILED,
    RUNNING,
    CancelRule,
    Command,
    Dispatch,
    Emit,
    NotifyParent,
    Record,
    RunPolicy,
    Schedule,
    SendToDlq,
    StartChild,
    Watch,
    advance,
    child_run_id,
)

RUN = "run-1"
FN = "fn-1"
EVENT = Event(id="evt-1", name="orders/placed", data_json='{"order":7}', ts=5)
BOOM = ErrorInfo(type="RuntimeError", message="boom", traceback="tb")
POLICY = RunPolicy(retry=RetryPolicy(retries=2, initial=timedelta(seconds=1), jitter=0.0))


def started(ts: int = 10, **fields: Any) -> RunStarted:
    return RunStarted(run_id=RUN, function_id=FN, event=EVENT, ts=ts, **fields)


def run_started(policy: RunPolicy = POLICY) -> RunState:
    state, _ = advance(None, started(), policy)
    assert state is not None
    return state


def completed(seq: int, step_id: str, output_json: str = '"ok"', attempt: int = 0,
              ended_at: int = 100) -> StepCompleted:
    return StepCompleted(run_id=RUN, seq=seq, step_id=step_id, attempt=attempt,
                         output_json=output_json, started_at=ended_at - 1, ended_at=ended_at)


def failed(seq: int, step_id: str, attempt: int = 0, *, retriable: bool = True,
           ended_at: int = 100) -> StepFailed:
    return StepFailed(run_id=RUN, seq=seq, step_id=step_id, attempt=attempt, error=BOOM,
                      retriable=retriable, started_at=ended_at - 1, ended_at=ended_at)


def planned(seq: int, *steps: PlannedStep, ts: int = 20) -> StepPlanned:
    return StepPlanned(run_id=RUN, seq=seq, ts=ts, steps=list(steps))


def run(step_id: str) -> PlannedStep:
    return PlannedStep(step_id=step_id, kind="run")


def sleep(step_id: str, until_ms: int | None) -> PlannedStep:
    return PlannedStep(step_id=step_id, kind="sleep", until_ms=until_ms)


def wait(step_id: str, until_ms: int, event: str = "orders/paid",
         condition: str | None = "async.data.order == event.data.order") -> PlannedStep:
    return PlannedStep(step_id=step_id, kind="wait", until_ms=until_ms, event=event,
                       condition=condition)


def invoke(step_id: str, function_id: str = "child-fn",
           data_json: str = '{"x":1}') -> PlannedStep:
    return PlannedStep(step_id=step_id, kind="invoke", function_id=function_id,
                       data_json=data_json)


def kinds(commands: list[Command]) -> list[str]:
    return [type(c).__name__ for c in commands]


def only(commands: list[Command], kind: type) -> list[Any]:
    return [c for c in commands if isinstance(c, kind)]


def records(commands: list[Command]) -> list[str]:
    return [c.record.kind for c in only(commands, Record)]


def step_waiter(step_id: str, until_ms: int) -> Waiter:
    return Waiter(run_id=RUN, step_id=step_id, kind="step", event_name="orders/paid",
                  trigger=EVENT, expires_at=until_ms,
                  condition="async.data.order == event.data.order")


def removed(commands: list[Command]) -> list[tuple[str, str]]:
    """The (run, step) of every waiter the commands remove."""
    return [(c.change.waiter.run_id, c.change.waiter.step_id)
            for c in only(commands, Watch) if not c.change.active]


# --- parallel steps --------------------------------------------------------------------


def test_parallel_steps_are_dispatched_each_on_its_own() -> None:
    state, commands = advance(run_started(), planned(1, run("a"), run("b")), POLICY)

    assert kinds(commands) == ["Dispatch", "Dispatch"]
    requests = [c.request for c in commands]
    assert [(r.seq, r.target, r.attempt, r.memo) for r in requests] == [
        (2, "a", 0, {}), (3, "b", 0, {})]
    assert all((r.run_id, r.function_id, r.event) == (RUN, FN, EVENT) for r in requests)
    assert state.dispatched == {"2": Dispatched(step_id="a", attempt=0),
                                "3": Dispatched(step_id="b", attempt=0)}
    assert (state.seq, state.answered, state.pending) == (3, True, {})


def test_the_handler_is_replayed_only_when_every_parallel_step_is_done() -> None:
    state, _ = advance(run_started(), planned(1, run("a"), run("b")), POLICY)

    state, commands = advance(state, completed(3, "b", '"B"'), POLICY)

    assert records(commands) == ["step.completed"] and only(commands, Dispatch) == []
    assert state.dispatched == {"2": Dispatched(step_id="a", attempt=0)}

    state, commands = advance(state, completed(2, "a", '"A"'), POLICY)

    (dispatch,) = only(commands, Dispatch)
    assert (dispatch.request.seq, dispatch.request.target) == (4, None)
    assert state.memo == {"a": MemoEntry(output_json='"A"'), "b": MemoEntry(output_json='"B"')}
    assert state.dispatched == {"4": Dispatched(step_id="", attempt=0)}


def test_a_parallel_step_is_retried_on_its_own_while_its_sibling_runs() -> None:
    state, _ = advance(run_started(), planned(1, run("a"), run("b")), POLICY)

    state, commands = advance(state, failed(2, "a", ended_at=100), POLICY)
    (schedule,) = only(commands, Schedule)
    assert schedule.timer == TimerFired(run_id=RUN, timer_id="retry:a:1", ts=1_100)
    state, commands = advance(state, completed(3, "b"), POLICY)
    assert only(commands, Dispatch) == []  # a still waits for its retry
    state, commands = advance(state, schedule.timer, POLICY)

    (dispatch,) = only(commands, Dispatch)
    assert (dispatch.request.seq, dispatch.request.target, dispatch.request.attempt) == (
        4, "a", 1)
    assert state.memo == {"b": MemoEntry(output_json='"ok"')}

    state, commands = advance(state, completed(4, "a", attempt=1), POLICY)

    assert only(commands, Dispatch)[0].request.target is None
    assert set(state.memo) == {"a", "b"}


def test_a_parallel_step_that_fails_for_good_waits_for_its_sibling() -> None:
    state, _ = advance(run_started(), planned(1, run("a"), run("b")), POLICY)

    state, commands = advance(state, failed(2, "a", retriable=False), POLICY)

    assert kinds(commands) == ["Record", "SendToDlq"]
    assert state.memo == {"a": MemoEntry(error=BOOM)}

    state, commands = advance(state, completed(3, "b"), POLICY)

    assert len(only(commands, Dispatch)) == 1
    assert state.memo["a"] == MemoEntry(error=BOOM)


def test_a_step_already_in_hand_is_not_dispatched_twice() -> None:
    state = RunState(
        run_id=RUN, function_id=FN, event=EVENT, status=RUNNING, seq=5, started_at=0,
        memo={"done": MemoEntry(output_json="1")},
        dispatched={"5": Dispatched(step_id="", attempt=0),
                    "4": Dispatched(step_id="running", attempt=0)},
        pending={"retrying": Pending(kind="retry", attempt=1, timer_id="retry:retrying:1"),
                 "nap": Pending(kind="sleep", timer_id="sleep:nap")})

    state, commands = advance(state, planned(5, run("done"), run("running"), run("retrying"),
                                             sleep("nap", 99), run("new")), POLICY)

    assert kinds(commands) == ["Dispatch"]
    assert commands[0].request.target == "new"
    assert state.dispatched == {"4": Dispatched(step_id="running", attempt=0),
                                "6": Dispatched(step_id="new", attempt=0)}
    assert set(state.pending) == {"retrying", "nap"}


def test_a_step_planned_twice_in_one_message_is_dispatched_once() -> None:
    state, commands = advance(run_started(), planned(1, run("a"), run("a")), POLICY)

    assert kinds(commands) == ["Dispatch"]
    assert state.dispatched == {"2": Dispatched(step_id="a", attempt=0)}


def test_a_duplicate_or_stale_step_planned_is_ignored() -> None:
    state, _ = advance(run_started(), planned(1, run("a"), run("b")), POLICY)

    for stale in (planned(1, run("a"), run("b")), planned(1, run("c")), planned(9, run("c"))):
        assert advance(state, stale, POLICY) == (state, [])


def test_a_step_of_an_unknown_kind_fails_for_good() -> None:
    state, commands = advance(run_started(), planned(1, PlannedStep(step_id="x", kind="teleport")),
                              POLICY)

    assert state.memo["x"].error is not None
    assert state.memo["x"].error.type == "UnknownStepKind"
    assert only(commands, Dispatch)[0].request.target is None


# --- sleep -----------------------------------------------------------------------------


def test_a_sleep_schedules_its_timer_and_parks_the_step() -> None:
    state, commands = advance(run_started(), planned(1, sleep("nap", 5_020), ts=20), POLICY)

    assert kinds(commands) == ["Schedule", "Record"]
    schedule = commands[0]
    assert (schedule.delay_ms, schedule.timer) == (
        5_000, TimerFired(run_id=RUN, timer_id="sleep:nap", ts=5_020))
    record = commands[1].record
    assert (record.kind, record.step_id, record.next_attempt_at) == ("step.sleeping", "nap", 5_020)
    assert state.pending == {"nap": Pending(kind="sleep", timer_id="sleep:nap")}
    assert state.dispatched == {}


def test_a_sleep_until_a_past_time_is_due_at_once() -> None:
    _, commands = advance(run_started(), planned(1, sleep("nap", 3), ts=20), POLICY)

    assert only(commands, Schedule)[0].delay_ms == 0


def test_a_sleep_without_a_time_is_due_when_planned() -> None:
    _, commands = advance(run_started(), planned(1, sleep("nap", None), ts=20), POLICY)

    (schedule,) = only(commands, Schedule)
    assert (schedule.delay_ms, schedule.timer.ts) == (0, 20)


def test_the_sleep_timer_saves_null_and_replays_the_handler() -> None:
    state, _ = advance(run_started(), planned(1, sleep("nap", 5_020)), POLICY)
    timer = TimerFired(run_id=RUN, timer_id="sleep:nap", ts=5_021)

    state, commands = advance(state, timer, POLICY)

    assert kinds(commands) == ["Record", "Dispatch"]
    record = commands[0].record
    assert (record.kind, record.step_id, record.output_json, record.ts) == (
        "step.completed", "nap", "null", 5_021)
    assert state.memo == {"nap": MemoEntry(output_json="null")}
    assert state.pending == {}
    assert commands[1].request.target is None
    assert advance(state, timer, POLICY) == (state, [])


def test_a_sleep_beside_a_step_ends_when_both_are_done() -> None:
    state, commands = advance(run_started(), planned(1, run("a"), sleep("nap", 500)), POLICY)
    assert kinds(commands) == ["Dispatch", "Schedule", "Record"]

    state, commands = advance(state, TimerFired(run_id=RUN, timer_id="sleep:nap", ts=500),
                              POLICY)
    assert only(commands, Dispatch) == []
    state, commands = advance(state, completed(2, "a"), POLICY)

    assert only(commands, Dispatch)[0].request.target is None
    assert set(state.memo) == {"a", "nap"}


# --- wait_for_event --------------------------------------------------------------------


def waiting() -> RunState:
    state, _ = advance(run_started(), planned(1, wait("w", 60_020), ts=20), POLICY)
    return state


def test_a_wait_adds_a_waiter_and_schedules_its_timeout() -> None:
    state, commands = advance(run_started(), planned(1, wait("w", 60_020), ts=20), POLICY)

    assert kinds(commands) == ["Watch", "Schedule", "Record"]
    assert commands[0].change == WaiterChanged(waiter=step_waiter("w", 60_020), active=True)
    assert (commands[1].delay_ms, commands[1].timer) == (
        60_000, TimerFired(run_id=RUN, timer_id="wait:w", ts=60_020))
    record = commands[2].record
    assert (record.kind, record.step_id, record.next_attempt_at) == ("step.waiting", "w", 60_020)
    assert state.pending == {"w": Pending(
        kind="event", timer_id="wait:w", event="orders/paid",
        condition="async.data.order == event.data.order")}


def test_a_matched_event_resolves_the_wait_and_removes_the_waiter() -> None:
    paid = Event(id="evt-2", name="orders/paid", data_json='{"order":7,"by":"ada"}', ts=30)

    state, commands = advance(waiting(), EventMatched(run_id=RUN, step_id="w", event=paid,
                                                      ts=31), POLICY)

    assert kinds(commands) == ["Watch", "Record", "Dispatch"]
    assert removed(commands) == [(RUN, "w")]
    saved = state.memo["w"]
    assert saved.error is None
    assert json.loads(saved.output_json or "") == {
        "id": "evt-2", "name": "orders/paid", "data": {"order": 7, "by": "ada"}, "ts": 30}
    record = commands[1].record
    assert (record.kind, record.step_id, record.ts) == ("step.completed", "w", 31)
    assert state.pending == {}
    assert isinstance(commands[2], Dispatch)


def test_the_event_of_a_wait_keeps_unusual_text_intact() -> None:
    odd = Event(id='id "quoted"\n', name="orders/paid", data_json='{"s":"é\\u0000"}', ts=30)

    state, _ = advance(waiting(), EventMatched(run_id=RUN, step_id="w", event=odd, ts=31),
                       POLICY)

    assert json.loads(state.memo["w"].output_json or "") == {
        "id": 'id "quoted"\n', "name": "orders/paid", "data": {"s": "é\x00"}, "ts": 30}


def test_a_wait_that_times_out_saves_null_and_removes_the_waiter() -> None:
    state, commands = advance(waiting(), TimerFired(run_id=RUN, timer_id="wait:w", ts=60_020),
                              POLICY)

    assert kinds(commands) == ["Watch", "Record", "Dispatch"]
    assert removed(commands) == [(RUN, "w")]
    assert state.memo == {"w": MemoEntry(output_json="null")}
    late = EventMatched(run_id=RUN, step_id="w", event=EVENT, ts=60_021)
    assert advance(state, late, POLICY) == (state, [])


def test_after_a_match_the_timeout_and_a_second_match_change_nothing() -> None:
    state, _ = advance(waiting(), EventMatched(run_id=RUN, step_id="w", event=EVENT, ts=31),
                       POLICY)

    for late in (TimerFired(run_id=RUN, timer_id="wait:w", ts=60_020),
                 EventMatched(run_id=RUN, step_id="w", event=EVENT, ts=32)):
        assert advance(state, late, POLICY) == (state, [])


def test_an_event_for_a_step_that_is_not_waiting_is_ignored() -> None:
    sleeping, _ = advance(run_started(), planned(1, sleep("nap", 500)), POLICY)

    assert advance(sleeping, EventMatched(run_id=RUN, step_id="nap", event=EVENT, ts=1),
                   POLICY) == (sleeping, [])
    state = waiting()
    assert advance(state, EventMatched(run_id=RUN, step_id="other", event=EVENT, ts=1),
                   POLICY) == (state, [])


def test_a_run_that_ends_while_waiting_removes_its_waiter() -> None:
    state, _ = advance(run_started(), planned(1, run("a"), wait("w", 60_020)), POLICY)

    _, commands = advance(state, CancelRequested(run_id=RUN, reason="stop", ts=40), POLICY)

    assert removed(commands) == [(RUN, "w")]


# --- invoke ----------------------------------------------------------------------------


def invoking() -> RunState:
    state, _ = advance(run_started(), planned(1, invoke("c"), ts=20), POLICY)
    return state


def test_an_invoke_starts_a_child_run() -> None:
    state, commands = advance(run_started(), planned(1, invoke("c"), ts=20), POLICY)

    assert kinds(commands) == ["StartChild", "Record"]
    start = commands[0].start
    child = child_run_id(RUN, "c")
    assert start == RunStarted(
        run_id=child, function_id="child-fn", ts=20, parent_run_id=RUN, parent_step_id="c",
        event=Event(id=child, name="stepstream/invoke/child-fn", data_json='{"x":1}', ts=20))
    assert (commands[1].record.kind, commands[1].record.step_id) == ("step.invoking", "c")
    assert state.pending == {"c": Pending(kind="invoke", child_run_id=child)}


def test_a_child_run_that_completed_gives_the_step_its_output() -> None:
    finished = ChildFinished(run_id=RUN, step_id="c", child_run_id=child_run_id(RUN, "c"),
                             ts=50, output_json='{"total":3}')

    state, commands = advance(invoking(), finished, POLICY)

    assert kinds(commands) == ["Record", "Dispatch"]
    assert state.memo == {"c": MemoEntry(output_json='{"total":3}')}
    assert (commands[0].record.kind, commands[0].record.output_json) == (
        "step.completed", '{"total":3}')
    assert advance(state, finished, POLICY) == (state, [])


def test_a_child_run_that_failed_saves_the_error_for_step_error() -> None:
    error = ErrorInfo(type="StepError", message="step 'x' failed")
    finished = ChildFinished(run_id=RUN, step_id="c", child_run_id=child_run_id(RUN, "c"),
                             ts=50, error=error)

    state, commands = advance(invoking(), finished, POLICY)

    assert state.memo == {"c": MemoEntry(error=error)}
    record = commands[0].record
    assert (record.kind, record.error, record.next_attempt_at) == ("step.failed", error, None)
    assert only(commands, SendToDlq) == []  # the child's own step was dead-lettered
    assert only(commands, Dispatch)[0].request.target is None


def test_a_child_finished_from_another_child_is_ignored() -> None:
    state = invoking()

    for other in (ChildFinished(run_id=RUN, step_id="c", child_run_id="someone-else", ts=1,
                                output_json="1"),
                  ChildFinished(run_id=RUN, step_id="d", child_run_id=child_run_id(RUN, "d"),
                                ts=1, output_json="1")):
        assert advance(state, other, POLICY) == (state, [])


def child_started(policy: RunPolicy = POLICY) -> RunState:
    state, _ = advance(None, started(parent_run_id="parent", parent_step_id="call"), policy)
    assert state is not None
    return state


@pytest.mark.parametrize(("end", "status", "output", "error"), [
    (FunctionFinished(run_id=RUN, seq=1, ts=70, output_json='"child done"'), COMPLETED,
     '"child done"', None),
    (FunctionFinished(run_id=RUN, seq=1, ts=70, error=BOOM), FAILED, None, BOOM),
    (CancelRequested(run_id=RUN, reason="by ops", ts=70), CANCELLED, None,
     ErrorInfo(type="Cancelled", message="by ops")),
])
def test_a_child_run_that_ends_notifies_its_parent(end: Any, status: str, output: str | None,
                                                   error: ErrorInfo | None) -> None:
    state, commands = advance(child_started(), end, POLICY)

    assert state.status == status
    (notify,) = only(commands, NotifyParent)
    assert notify.finished == ChildFinished(run_id="parent", step_id="call", child_run_id=RUN,
                                            ts=70, output_json=output, error=error)


def test_a_run_without_a_parent_notifies_nobody() -> None:
    _, commands = advance(run_started(), FunctionFinished(run_id=RUN, seq=1, ts=70,
                                                          output_json="1"), POLICY)

    assert only(commands, NotifyParent) == []


def test_parent_and_child_runs_meet_through_their_commands() -> None:
    parent, commands = advance(run_started(), planned(1, invoke("c")), POLICY)
    (start,) = only(commands, StartChild)
    child, _ = advance(None, start.start, POLICY)
    assert child is not None and child.run_id == child_run_id(RUN, "c")
    assert advance(child, start.start, POLICY) == (child, [])  # a duplicate start

    child, commands = advance(child, FunctionFinished(run_id=child.run_id, seq=1, ts=80,
                                                      output_json="[1,2]"), POLICY)
    (notify,) = only(commands, NotifyParent)
    parent, commands = advance(parent, notify.finished, POLICY)

    assert parent.memo == {"c": MemoEntry(output_json="[1,2]")}
    assert only(commands, Dispatch)[0].request.target is None


# --- the end of a run ------------------------------------------------------------------


def test_a_failed_run_emits_the_function_failed_event_once() -> None:
    finish = FunctionFinished(run_id=RUN, seq=1, ts=90, error=BOOM)

    state, commands = advance(run_started(), finish, POLICY)

    assert state.status == FAILED
    (emit,) = only(commands, Emit)
    assert (emit.event.id, emit.event.name, emit.event.ts) == (f"failed:{RUN}", FUNCTION_FAILED,
                                                               90)
    assert json.loads(emit.event.data_json) == {
        "function_id": FN, "run_id": RUN, "error": {"type": "RuntimeError", "message": "boom"},
        "event": {"id": "evt-1", "name": "orders/placed", "data": {"order": 7}, "ts": 5}}
    assert advance(state, finish, POLICY) == (state, [])


def test_completed_and_cancelled_runs_emit_no_event() -> None:
    for end in (FunctionFinished(run_id=RUN, seq=1, ts=9, output_json="1"),
                CancelRequested(run_id=RUN, reason="x", ts=9)):
        _, commands = advance(run_started(), end, POLICY)
        assert only(commands, Emit) == []


# --- cancel_on -------------------------------------------------------------------------

RULES = (CancelRule(event="orders/cancelled", condition="async.data.order == event.data.order",
                    timeout_ms=1_000),
         CancelRule(event="ops/stop-all", condition=None, timeout_ms=5_000))
CANCELLING = RunPolicy(retry=POLICY.retry, cancel_on=RULES)


def test_cancel_on_rules_are_armed_when_the_run_starts() -> None:
    state, commands = advance(None, started(ts=10), CANCELLING)

    assert kinds(commands) == ["Record", "Watch", "Watch", "Dispatch"]
    assert [c.change for c in only(commands, Watch)] == [
        WaiterChanged(Waiter(run_id=RUN, step_id="cancel_on:0", kind="cancel",
                             event_name="orders/cancelled", trigger=EVENT, expires_at=1_010,
                             condition="async.data.order == event.data.order"), active=True),
        WaiterChanged(Waiter(run_id=RUN, step_id="cancel_on:1", kind="cancel",
                             event_name="ops/stop-all", trigger=EVENT, expires_at=5_010),
                      active=True)]
    assert advance(state, started(ts=10), CANCELLING) == (state, [])


@pytest.mark.parametrize("end", [
    FunctionFinished(run_id=RUN, seq=1, ts=9, output_json="1"),
    FunctionFinished(run_id=RUN, seq=1, ts=9, error=BOOM),
    CancelRequested(run_id=RUN, reason="matched", ts=9),
    TimerFired(run_id=RUN, timer_id="timeout:finish", ts=9),
])
def test_cancel_on_rules_are_disarmed_when_the_run_ends(end: Any) -> None:
    policy = RunPolicy(retry=POLICY.retry, cancel_on=RULES, finish_timeout_ms=9)
    state, _ = advance(None, started(), policy)

    state, commands = advance(state, end, policy)

    assert state.status in (COMPLETED, FAILED, CANCELLED)
    changes = [c.change for c in only(commands, Watch)]
    assert [(c.waiter.run_id, c.waiter.step_id, c.waiter.kind, c.waiter.event_name, c.active)
            for c in changes] == [(RUN, "cancel_on:0", "cancel", "orders/cancelled", False),
                                  (RUN, "cancel_on:1", "cancel", "ops/stop-all", False)]


def test_a_run_that_goes_on_keeps_its_cancel_on_rules() -> None:
    state, _ = advance(None, started(), CANCELLING)

    _, commands = advance(state, completed(1, "a"), CANCELLING)

    assert only(commands, Watch) == []


# --- timeouts --------------------------------------------------------------------------


def test_timeouts_are_scheduled_when_the_run_starts() -> None:
    policy = RunPolicy(start_timeout_ms=2_000, finish_timeout_ms=60_000)

    _, commands = advance(None, started(ts=10), policy)

    assert [c.timer for c in only(commands, Schedule)] == [
        TimerFired(run_id=RUN, timer_id="timeout:start", ts=2_010),
        TimerFired(run_id=RUN, timer_id="timeout:finish", ts=60_010)]
    assert [c.delay_ms for c in only(commands, Schedule)] == [2_000, 60_000]


def test_without_timeouts_no_timer_is_scheduled() -> None:
    _, commands = advance(None, started(), RunPolicy())

    assert only(commands, Schedule) == []


START_TIMEOUT = RunPolicy(start_timeout_ms=2_000)
START_TIMER = TimerFired(run_id=RUN, timer_id="timeout:start", ts=2_010)


def test_the_start_timeout_cancels_a_run_no_executor_answered() -> None:
    state, commands = advance(run_started(START_TIMEOUT), START_TIMER, START_TIMEOUT)

    assert (state.status, state.ended_at) == (CANCELLED, 2_010)
    assert state.error is not None and state.error.type == "Timeout"
    assert "start timeout" in state.error.message
    assert records(commands) == ["run.cancelled"]
    assert advance(state, completed(1, "a"), START_TIMEOUT) == (state, [])


@pytest.mark.parametrize("answer", [
    completed(1, "a"), failed(1, "a"), planned(1, run("a"), run("b")),
])
def test_the_start_timeout_spares_a_run_an_executor_answered(answer: Any) -> None:
    state, _ = advance(run_started(START_TIMEOUT), answer, START_TIMEOUT)

    assert advance(state, START_TIMER, START_TIMEOUT) == (state, [])


def test_a_stale_answer_does_not_count_as_started() -> None:
    state = run_started(START_TIMEOUT)
    state, _ = advance(state, completed(7, "a"), START_TIMEOUT)

    state, _ = advance(state, START_TIMER, START_TIMEOUT)

    assert state.status == CANCELLED


def test_the_finish_timeout_cancels_a_run_whatever_it_waits_for() -> None:
    policy = RunPolicy(retry=POLICY.retry, finish_timeout_ms=10_000)
    state, _ = advance(None, started(), policy)
    state, _ = advance(state, planned(1, run("a"), wait("w", 99_999), sleep("nap", 99_999)),
                       policy)

    state, commands = advance(state, TimerFired(run_id=RUN, timer_id="timeout:finish",
                                                ts=10_010), policy)

    assert (state.status, state.ended_at) == (CANCELLED, 10_010)
    assert state.error is not None and state.error.type == "Timeout"
    assert "finish timeout" in state.error.message
    assert state.dispatched == {} and state.pending == {}
    assert removed(commands) == [(RUN, "w")]
    for late in (completed(2, "a"), TimerFired(run_id=RUN, timer_id="sleep:nap", ts=1),
                 EventMatched(run_id=RUN, step_id="w", event=EVENT, ts=1)):
        assert advance(state, late, policy) == (state, [])
