"""Examples of the run state machine (``streams.machine.advance``), one transition each."""

from __future__ import annotations

import copy
import json
from datetime import timedelta

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
)
from stepstream.events import FUNCTION_FAILED
from stepstream.retry import RetryPolicy
from streams.machine import (
    CANCELLED,
    COMPLETED,
    FAILED,
    RUNNING,
    Command,
    Dispatch,
    Emit,
    Record,
    RunPolicy,
    Schedule,
    SendToDlq,
    advance,
)

RUN = "run-1"
FN = "fn-1"
EVENT = Event(id="evt-1", name="test/happened", data_json='{"n":1}', ts=5)
BOOM = ErrorInfo(type="RuntimeError", message="boom", traceback="tb")
POLICY = RunPolicy(retry=RetryPolicy(retries=3, initial=timedelta(seconds=1), factor=2.0,
                                     jitter=0.0))


def started(ts: int = 10) -> RunStarted:
    return RunStarted(run_id=RUN, function_id=FN, event=EVENT, ts=ts)


def completed(seq: int, step_id: str, output_json: str = '"ok"', attempt: int = 0,
              ended_at: int = 100) -> StepCompleted:
    return StepCompleted(run_id=RUN, seq=seq, step_id=step_id, attempt=attempt,
                         output_json=output_json, started_at=ended_at - 1, ended_at=ended_at)


def failed(seq: int, step_id: str, attempt: int = 0, *, retriable: bool = True,
           retry_after_ms: int | None = None, ended_at: int = 100,
           retries: int | None = None) -> StepFailed:
    return StepFailed(run_id=RUN, seq=seq, step_id=step_id, attempt=attempt, error=BOOM,
                      retriable=retriable, started_at=ended_at - 1, ended_at=ended_at,
                      retry_after_ms=retry_after_ms, retries=retries)


def retries(n: int) -> RunPolicy:
    return RunPolicy(retry=RetryPolicy(retries=n, jitter=0.0))


def kinds(commands: list[Command]) -> list[str]:
    return [type(c).__name__ for c in commands]


def only(commands: list[Command], kind: type) -> list:
    return [c for c in commands if isinstance(c, kind)]


def run_started(policy: RunPolicy = POLICY) -> RunState:
    state, _ = advance(None, started(), policy)
    assert state is not None
    return state


def test_start_creates_a_running_run_and_dispatches_seq_1() -> None:
    state, commands = advance(None, started(ts=10), POLICY)

    assert state is not None
    assert (state.run_id, state.function_id, state.event) == (RUN, FN, EVENT)
    assert (state.status, state.seq, state.started_at, state.answered) == (RUNNING, 1, 10, False)
    assert state.dispatched == {"1": Dispatched(step_id="", attempt=0)}
    assert state.memo == {} and state.pending == {}
    assert (state.parent_run_id, state.parent_step_id) == (None, None)
    assert kinds(commands) == ["Record", "Dispatch"]
    record = commands[0].record
    assert (record.kind, record.seq, record.run_id, record.event) == ("run.started", 1, RUN, EVENT)
    request = commands[1].request
    assert (request.run_id, request.seq, request.function_id, request.attempt) == (RUN, 1, FN, 0)
    assert request.event == EVENT and request.memo == {}
    assert request.target is None  # run the first new step


def test_the_same_run_started_twice_is_one_run() -> None:
    state = run_started()

    again, commands = advance(state, started(ts=999), POLICY)

    assert again is state
    assert commands == []


def test_run_started_does_not_reset_a_run_in_progress() -> None:
    state, _ = advance(run_started(), completed(1, "a"), POLICY)

    again, commands = advance(state, started(), POLICY)

    assert again is state and commands == []
    assert "a" in again.memo


def test_messages_for_an_unknown_run_are_ignored() -> None:
    for message in (completed(1, "a"), failed(1, "a"),
                    TimerFired(run_id=RUN, timer_id="retry:a:1", ts=0),
                    FunctionFinished(run_id=RUN, seq=1, ts=0, output_json="1"),
                    CancelRequested(run_id=RUN, reason="x", ts=0),
                    StepPlanned(run_id=RUN, seq=1, ts=0,
                                steps=[PlannedStep(step_id="a", kind="run")]),
                    EventMatched(run_id=RUN, step_id="w", event=EVENT, ts=0),
                    ChildFinished(run_id=RUN, step_id="c", child_run_id=f"{RUN}.c", ts=0,
                                  output_json="1")):
        assert advance(None, message, POLICY) == (None, [])


def test_step_completed_saves_the_output_and_dispatches_the_next_seq() -> None:
    state, commands = advance(run_started(), completed(1, "a", '{"x":1}', ended_at=50), POLICY)

    assert state.memo == {"a": MemoEntry(output_json='{"x":1}')}
    assert (state.seq, state.status, state.answered) == (2, RUNNING, True)
    assert state.dispatched == {"2": Dispatched(step_id="", attempt=0)}
    assert kinds(commands) == ["Record", "Dispatch"]
    record = commands[0].record
    assert (record.kind, record.step_id, record.output_json, record.seq, record.ts) == (
        "step.completed", "a", '{"x":1}', 2, 50)
    request = commands[1].request
    assert request.seq == 2 and state.memo == {"a": MemoEntry(output_json='{"x":1}')}
    assert request.memo == {}  # the executor reads the memo from the run's state
    assert (request.attempt, request.target) == (0, None)


def test_a_duplicate_step_completed_is_ignored() -> None:
    state, _ = advance(run_started(), completed(1, "a", '"first"'), POLICY)

    again, commands = advance(state, completed(1, "a", '"second"'), POLICY)

    assert again is state and commands == []
    assert state.memo["a"].output_json == '"first"'


def test_a_report_for_a_future_seq_is_ignored() -> None:
    state = run_started()

    assert advance(state, completed(7, "a"), POLICY) == (state, [])


def test_a_retriable_failure_schedules_a_retry_timer() -> None:
    state, commands = advance(run_started(), failed(1, "a", ended_at=1_000), POLICY)

    assert kinds(commands) == ["Record", "Schedule"]
    schedule = commands[1]
    assert schedule.delay_ms == 1_000
    assert schedule.timer == TimerFired(run_id=RUN, timer_id="retry:a:1", ts=2_000)
    assert state.pending == {"a": Pending(kind="retry", attempt=1, timer_id="retry:a:1")}
    assert state.dispatched == {} and state.seq == 1
    assert "a" not in state.memo
    record = commands[0].record
    assert (record.kind, record.step_id, record.attempt, record.error, record.next_attempt_at) == (
        "step.failed", "a", 0, BOOM, 2_000)


def test_retry_delays_grow_with_each_attempt() -> None:
    state, delays = run_started(), []
    for attempt in range(3):
        state, commands = advance(state, failed(state.seq, "a", attempt), POLICY)
        (schedule,) = only(commands, Schedule)
        delays.append(schedule.delay_ms)
        state, commands = advance(state, schedule.timer, POLICY)
        (dispatch,) = only(commands, Dispatch)
        assert (dispatch.request.attempt, dispatch.request.target) == (attempt + 1, "a")

    assert delays == [1_000, 2_000, 4_000]


def test_timer_fired_redispatches_with_the_next_attempt() -> None:
    state, commands = advance(run_started(), failed(1, "a"), POLICY)
    timer = only(commands, Schedule)[0].timer

    state, commands = advance(state, timer, POLICY)

    assert kinds(commands) == ["Dispatch"]
    request = commands[0].request
    assert (request.seq, request.attempt, request.target) == (2, 1, "a")
    assert request.memo == {}
    assert state.pending == {} and state.seq == 2
    assert state.dispatched == {"2": Dispatched(step_id="a", attempt=1)}


def test_a_duplicate_timer_is_ignored() -> None:
    state, commands = advance(run_started(), failed(1, "a"), POLICY)
    timer = only(commands, Schedule)[0].timer
    state, _ = advance(state, timer, POLICY)

    assert advance(state, timer, POLICY) == (state, [])


def test_a_timer_with_another_id_is_ignored() -> None:
    state, _ = advance(run_started(), failed(1, "a"), POLICY)

    for timer_id in ("retry:a:0", "retry:a:2", "retry:b:1", "retry:1", "sleep:a", "wait:a",
                     ""):
        stale = TimerFired(run_id=RUN, timer_id=timer_id, ts=0)
        assert advance(state, stale, POLICY) == (state, [])


def test_a_timer_without_a_pending_timer_is_ignored() -> None:
    state = run_started()

    for timer_id in ("retry:a:1", "sleep:a", "wait:a"):
        assert advance(state, TimerFired(run_id=RUN, timer_id=timer_id, ts=0),
                       POLICY) == (state, [])


def test_reports_arriving_while_a_retry_is_pending_are_ignored() -> None:
    state, _ = advance(run_started(), failed(1, "a"), POLICY)

    for late in (completed(1, "a"), failed(1, "a"),
                 FunctionFinished(run_id=RUN, seq=1, ts=0, output_json="1")):
        assert advance(state, late, POLICY) == (state, [])


def test_the_last_failed_attempt_saves_the_error_and_dead_letters_the_step() -> None:
    policy = retries(1)
    state, commands = advance(run_started(policy), failed(1, "a", 0), policy)
    state, _ = advance(state, only(commands, Schedule)[0].timer, policy)

    state, commands = advance(state, failed(2, "a", 1, ended_at=77), policy)

    assert kinds(commands) == ["Record", "SendToDlq", "Dispatch"]
    assert state.memo == {"a": MemoEntry(error=BOOM)}
    assert (state.seq, state.pending, state.status) == (3, {}, RUNNING)
    assert state.dispatched == {"3": Dispatched(step_id="", attempt=0)}
    letter = commands[1].letter
    assert (letter.run_id, letter.function_id, letter.step_id, letter.attempt, letter.error,
            letter.event, letter.ts) == (RUN, FN, "a", 1, BOOM, EVENT, 77)
    record = commands[0].record
    assert (record.kind, record.attempt, record.next_attempt_at) == ("step.failed", 1, None)
    # The handler is replayed so that its step.run raises StepError.
    request = commands[2].request
    assert request.seq == 3 and state.memo["a"].error == BOOM
    assert (request.attempt, request.target) == (0, None)


def test_a_non_retriable_failure_fails_the_step_at_once() -> None:
    state, commands = advance(run_started(), failed(1, "a", retriable=False), POLICY)

    assert kinds(commands) == ["Record", "SendToDlq", "Dispatch"]
    assert state.memo == {"a": MemoEntry(error=BOOM)}
    assert state.pending == {}
    assert only(commands, SendToDlq)[0].letter.attempt == 0


def test_no_retries_means_the_first_failure_is_final() -> None:
    policy = retries(0)
    state, commands = advance(run_started(policy), failed(1, "a"), policy)

    assert kinds(commands) == ["Record", "SendToDlq", "Dispatch"]
    assert state.memo["a"].error == BOOM


def test_retry_after_overrides_the_backoff() -> None:
    _, commands = advance(run_started(), failed(1, "a", retry_after_ms=30_000, ended_at=5),
                          POLICY)

    (schedule,) = only(commands, Schedule)
    assert schedule.delay_ms == 30_000
    assert schedule.timer == TimerFired(run_id=RUN, timer_id="retry:a:1", ts=30_005)


def test_retry_after_zero_is_honoured_not_replaced_by_the_backoff() -> None:
    _, commands = advance(run_started(), failed(1, "a", retry_after_ms=0), POLICY)

    assert only(commands, Schedule)[0].delay_ms == 0


def test_retry_after_does_not_grant_extra_attempts() -> None:
    policy = retries(0)
    _, commands = advance(run_started(policy), failed(1, "a", retry_after_ms=10), policy)

    assert kinds(commands) == ["Record", "SendToDlq", "Dispatch"]


def test_a_step_completed_after_its_retry_resets_the_attempt() -> None:
    state, commands = advance(run_started(), failed(1, "a"), POLICY)
    state, _ = advance(state, only(commands, Schedule)[0].timer, POLICY)

    state, commands = advance(state, completed(2, "a", attempt=1), POLICY)

    assert state.memo == {"a": MemoEntry(output_json='"ok"')}
    assert state.seq == 3 and state.pending == {}
    assert state.dispatched == {"3": Dispatched(step_id="", attempt=0)}
    assert only(commands, Record)[0].record.attempt == 1
    request = only(commands, Dispatch)[0].request
    assert (request.attempt, request.target) == (0, None)


def test_function_finished_with_output_completes_the_run() -> None:
    state, _ = advance(run_started(), completed(1, "a"), POLICY)

    state, commands = advance(state, FunctionFinished(run_id=RUN, seq=2, ts=300,
                                                      output_json='{"done":true}'), POLICY)

    assert (state.status, state.output_json, state.error, state.ended_at) == (
        COMPLETED, '{"done":true}', None, 300)
    assert kinds(commands) == ["Record"]
    record = commands[0].record
    assert (record.kind, record.output_json, record.ts) == ("run.completed", '{"done":true}', 300)


def test_function_finished_with_an_error_fails_the_run() -> None:
    state, commands = advance(run_started(), FunctionFinished(run_id=RUN, seq=1, ts=9,
                                                              error=BOOM), POLICY)

    assert (state.status, state.error, state.output_json) == (FAILED, BOOM, None)
    assert kinds(commands) == ["Record", "Emit"]
    assert commands[0].record.kind == "run.failed"
    (emit,) = only(commands, Emit)
    assert (emit.event.id, emit.event.name, emit.event.ts) == (f"failed:{RUN}", FUNCTION_FAILED, 9)
    assert json.loads(emit.event.data_json) == {
        "function_id": FN, "run_id": RUN,
        "error": {"type": "RuntimeError", "message": "boom"},
        "event": {"id": EVENT.id, "name": EVENT.name, "data": {"n": 1}, "ts": EVENT.ts}}


def test_a_stale_function_finished_is_ignored() -> None:
    state, _ = advance(run_started(), completed(1, "a"), POLICY)

    stale = FunctionFinished(run_id=RUN, seq=1, ts=9, output_json="1")
    assert advance(state, stale, POLICY) == (state, [])


@pytest.mark.parametrize("finish", [
    FunctionFinished(run_id=RUN, seq=1, ts=9, output_json='"done"'),
    FunctionFinished(run_id=RUN, seq=1, ts=9, error=BOOM),
    CancelRequested(run_id=RUN, reason="stop", ts=9),
])
def test_nothing_changes_a_finished_run(finish: object) -> None:
    state, _ = advance(run_started(), finish, POLICY)
    next_seq = state.seq

    assert state.dispatched == {} and state.pending == {}
    for late in (completed(1, "a"), completed(next_seq, "a"), failed(next_seq, "a"),
                 TimerFired(run_id=RUN, timer_id="retry:a:1", ts=0),
                 TimerFired(run_id=RUN, timer_id="timeout:start", ts=0),
                 TimerFired(run_id=RUN, timer_id="timeout:finish", ts=0),
                 FunctionFinished(run_id=RUN, seq=next_seq, ts=0, output_json="2"),
                 StepPlanned(run_id=RUN, seq=1, ts=0,
                             steps=[PlannedStep(step_id="b", kind="run")]),
                 EventMatched(run_id=RUN, step_id="w", event=EVENT, ts=0),
                 ChildFinished(run_id=RUN, step_id="c", child_run_id=f"{RUN}.c", ts=0),
                 CancelRequested(run_id=RUN, reason="again", ts=0), started()):
        assert advance(state, late, POLICY) == (state, [])


def test_cancel_requested_cancels_the_run() -> None:
    state, commands = advance(run_started(), CancelRequested(run_id=RUN, reason="user asked",
                                                             ts=42), POLICY)

    assert state.status == CANCELLED and state.ended_at == 42
    assert state.error == ErrorInfo(type="Cancelled", message="user asked")
    assert state.dispatched == {} and state.pending == {}
    assert [c.record.kind for c in commands] == ["run.cancelled"]
    assert kinds(commands) == ["Record"]  # no function.failed event for a cancelled run


def test_cancel_during_a_retry_drops_the_pending_timer() -> None:
    state, commands = advance(run_started(), failed(1, "a"), POLICY)
    timer = only(commands, Schedule)[0].timer

    state, _ = advance(state, CancelRequested(run_id=RUN, reason="x", ts=1), POLICY)

    assert state.status == CANCELLED and state.pending == {}
    assert advance(state, timer, POLICY) == (state, [])


def test_history_records_are_numbered_in_order() -> None:
    state, c1 = advance(None, started(), POLICY)
    state, c2 = advance(state, failed(1, "a"), POLICY)
    state, c3 = advance(state, only(c2, Schedule)[0].timer, POLICY)
    state, c4 = advance(state, completed(2, "a", attempt=1), POLICY)
    state, c5 = advance(state, FunctionFinished(run_id=RUN, seq=3, ts=0, output_json="1"),
                        POLICY)

    records = [c.record for c in [*c1, *c2, *c3, *c4, *c5] if isinstance(c, Record)]
    assert [(r.seq, r.kind) for r in records] == [
        (1, "run.started"), (2, "step.failed"), (3, "step.completed"), (4, "run.completed")]
    assert state.history_seq == 4
    assert all(r.run_id == RUN and r.function_id == FN for r in records)


def test_advance_does_not_mutate_the_given_state() -> None:
    state = run_started()
    planned = StepPlanned(run_id=RUN, seq=1, ts=5, steps=[
        PlannedStep(step_id="a", kind="run"), PlannedStep(step_id="b", kind="run"),
        PlannedStep(step_id="s", kind="sleep", until_ms=50),
        PlannedStep(step_id="w", kind="wait", event="x/y", until_ms=60),
        PlannedStep(step_id="c", kind="invoke", function_id="child", data_json="{}")])
    visited = []
    for message in (completed(1, "a"), planned):
        snapshot = copy.deepcopy(state)
        new, _ = advance(state, message, POLICY)
        assert state == snapshot
        visited.append(new)
    # Every kind of message against a state with something of every kind outstanding.
    busy = visited[-1]
    for message in (completed(2, "a"), failed(3, "b"), failed(3, "b", retriable=False),
                    TimerFired(run_id=RUN, timer_id="sleep:s", ts=50),
                    TimerFired(run_id=RUN, timer_id="wait:w", ts=60),
                    EventMatched(run_id=RUN, step_id="w", event=EVENT, ts=55),
                    ChildFinished(run_id=RUN, step_id="c", child_run_id=f"{RUN}.c", ts=7,
                                  output_json="1"),
                    CancelRequested(run_id=RUN, reason="x", ts=9)):
        snapshot = copy.deepcopy(busy)
        advance(busy, message, POLICY)
        assert busy == snapshot, message


def test_a_failure_with_retries_left_is_not_dead_lettered() -> None:
    _, commands = advance(run_started(), failed(1, "a"), POLICY)

    assert only(commands, SendToDlq) == []


def test_a_step_s_own_retries_override_the_function_s() -> None:
    more, commands = advance(run_started(retries(0)), failed(1, "a", 0, retries=2), retries(0))
    assert kinds(commands) == ["Record", "Schedule"]
    more, _ = advance(more, only(commands, Schedule)[0].timer, retries(0))
    more, commands = advance(more, failed(2, "a", 1, retries=2), retries(0))
    assert kinds(commands) == ["Record", "Schedule"]

    fewer, commands = advance(run_started(), failed(1, "a", 0, retries=0), POLICY)

    assert kinds(commands) == ["Record", "SendToDlq", "Dispatch"]
    assert fewer.memo == {"a": MemoEntry(error=BOOM)}


def test_a_report_of_the_wrong_seq_while_the_handler_is_dispatched_is_ignored() -> None:
    state, _ = advance(run_started(), completed(1, "a"), POLICY)

    for stale in (completed(1, "b"), failed(1, "b"),
                  StepPlanned(run_id=RUN, seq=1, ts=0,
                              steps=[PlannedStep(step_id="b", kind="run")]),
                  FunctionFinished(run_id=RUN, seq=3, ts=0, output_json="1")):
        assert advance(state, stale, POLICY) == (state, [])


def test_a_result_past_the_run_state_budget_fails_the_run_with_the_results_it_had() -> None:
    policy = RunPolicy(max_state_bytes=100)
    state, _ = advance(run_started(policy), completed(1, "a", '"' + "x" * 50 + '"'), policy)
    assert state.status == RUNNING and set(state.memo) == {"a"}

    state, commands = advance(state, completed(2, "b", '"' + "y" * 50 + '"', ended_at=90),
                              policy)

    assert (state.status, state.ended_at, set(state.memo)) == (FAILED, 90, {"a"})
    assert state.error is not None and state.error.type == "RunStateTooLarge"
    assert "'b'" in state.error.message and "budget of 100" in state.error.message
    assert only(commands, Dispatch) == []
    assert [(c.record.kind, c.record.step_id) for c in only(commands, Record)] == [
        ("step.failed", "b"), ("run.failed", None)]
