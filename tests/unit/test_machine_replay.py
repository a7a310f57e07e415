"""The state machine's part in run history: replaying failed runs, and carrying log lines."""

from __future__ import annotations

from typing import Any

from schemas.messages import (
    CancelRequested,
    ErrorInfo,
    Event,
    FunctionFinished,
    LogLine,
    MemoEntry,
    PlannedStep,
    ReplayRequested,
    RunStarted,
    RunState,
    StepCompleted,
    StepFailed,
    StepPlanned,
)
from stepstream.retry import RetryPolicy
from streams.machine import (
    CancelRule,
    Dispatch,
    Record,
    RunPolicy,
    SendToDlq,
    Watch,
    advance,
)

EVENT = Event(id="evt-1", name="orders/placed", data_json="{}", ts=1)
BOOM = ErrorInfo(type="RuntimeError", message="boom", traceback="tb")
POLICY = RunPolicy(retry=RetryPolicy(retries=0, jitter=0.0))
LINE = LogLine(ts=5, level="INFO", message="hello", step_id="a")


def records(commands: list[Any]) -> list[Any]:
    return [c.record for c in commands if isinstance(c, Record)]


def dispatches(commands: list[Any]) -> list[Any]:
    return [c.request for c in commands if isinstance(c, Dispatch)]


def failed_run(policy: RunPolicy = POLICY) -> RunState:
    """a completes, b fails for good, the handler lets the StepError through."""
    state, _ = advance(None, RunStarted(run_id="r", function_id="fn", event=EVENT, ts=10),
                       policy)
    state, _ = advance(state, StepCompleted(run_id="r", seq=1, step_id="a", attempt=0,
                                            output_json="1", started_at=11, ended_at=12),
                       policy)
    state, commands = advance(state, StepFailed(run_id="r", seq=2, step_id="b", attempt=0,
                                                error=BOOM, retriable=True, started_at=13,
                                                ended_at=14), policy)
    assert any(isinstance(c, SendToDlq) for c in commands)
    state, _ = advance(state, FunctionFinished(run_id="r", seq=3, ts=15, error=ErrorInfo(
        type="StepError", message="step 'b' failed")), policy)
    assert state is not None and state.status == "failed"
    return state


def test_replay_forgets_the_failed_step_keeps_completed_ones_and_dispatches_again() -> None:
    state = failed_run()

    new, commands = advance(state, ReplayRequested(run_id="r", ts=100), POLICY)

    assert new is not None
    assert (new.status, new.ended_at, new.error, new.output_json) == ("running", None, None,
                                                                      None)
    assert new.memo == {"a": MemoEntry(output_json="1")}
    (request,) = dispatches(commands)
    assert (request.target, request.attempt) == (None, 0)
    assert request.seq == state.seq + 1
    assert [(r.kind, r.ts) for r in records(commands)] == [("run.replayed", 100)]


def test_replay_from_a_step_forgets_it_and_every_step_after_it() -> None:
    state = failed_run()

    new, commands = advance(state, ReplayRequested(run_id="r", ts=100, from_step="a"), POLICY)

    assert new is not None and new.memo == {}
    assert [(r.kind, r.step_id) for r in records(commands)] == [("run.replayed", "a")]


def test_a_replayed_run_can_complete_and_its_steps_answer_the_new_dispatch() -> None:
    state, _ = advance(failed_run(), ReplayRequested(run_id="r", ts=100), POLICY)
    assert state is not None
    seq = state.seq

    state, _ = advance(state, StepCompleted(run_id="r", seq=seq, step_id="b", attempt=0,
                                            output_json="2", started_at=101, ended_at=102),
                       POLICY)
    state, commands = advance(state, FunctionFinished(run_id="r", seq=seq + 1, ts=103,
                                                      output_json='"ok"'), POLICY)

    assert state is not None and state.status == "completed"
    assert [r.kind for r in records(commands)] == ["run.completed"]


def test_only_failed_or_cancelled_runs_replay_and_a_request_older_than_the_end_is_stale(
        ) -> None:
    failed = failed_run()
    running, _ = advance(failed, ReplayRequested(run_id="r", ts=100), POLICY)

    assert advance(running, ReplayRequested(run_id="r", ts=101), POLICY) == (running, [])
    stale = ReplayRequested(run_id="r", ts=(failed.ended_at or 0) - 1)
    assert advance(failed, stale, POLICY) == (failed, [])
    assert advance(None, ReplayRequested(run_id="x", ts=1), POLICY) == (None, [])


def test_a_cancelled_run_replays_and_its_cancel_rules_are_armed_again() -> None:
    policy = RunPolicy(cancel_on=(CancelRule(event="orders/cancelled", condition=None,
                                             timeout_ms=1000),))
    state, _ = advance(None, RunStarted(run_id="r", function_id="fn", event=EVENT, ts=10),
                       policy)
    state, _ = advance(state, CancelRequested(run_id="r", reason="by ops", ts=20), policy)
    assert state is not None and state.status == "cancelled"

    new, commands = advance(state, ReplayRequested(run_id="r", ts=30), policy)

    assert new is not None and new.status == "running"
    (watch,) = [c.change for c in commands if isinstance(c, Watch)]
    assert watch.active and watch.waiter.kind == "cancel"
    assert len(dispatches(commands)) == 1


def test_log_lines_of_each_outcome_go_into_its_history_record() -> None:
    policy = RunPolicy(retry=RetryPolicy(retries=1, jitter=0.0))
    state, _ = advance(None, RunStarted(run_id="r", function_id="fn", event=EVENT, ts=10),
                       policy)
    state, completed = advance(state, StepCompleted(
        run_id="r", seq=1, step_id="a", attempt=0, output_json="1", started_at=11,
        ended_at=12, logs=[LINE]), policy)
    state, planned = advance(state, StepPlanned(
        run_id="r", seq=2, ts=13, steps=[PlannedStep(step_id="x", kind="run"),
                                         PlannedStep(step_id="y", kind="run")],
        logs=[LogLine(ts=13, level="INFO", message="fan out")]), policy)
    state, failed = advance(state, StepFailed(
        run_id="r", seq=3, step_id="x", attempt=0, error=BOOM, retriable=True, started_at=14,
        ended_at=15, logs=[LogLine(ts=14, level="ERROR", message="x broke", step_id="x")]),
        policy)

    assert [(r.kind, r.logs) for r in records(completed)] == [("step.completed", [LINE])]
    assert [(r.kind, [m.message for m in r.logs]) for r in records(planned)] == [
        ("logs", ["fan out"])]
    assert [(r.kind, [m.message for m in r.logs]) for r in records(failed)] == [
        ("step.failed", ["x broke"])]

    state = failed_run()
    state, _ = advance(state, ReplayRequested(run_id="r", ts=100), POLICY)
    assert state is not None
    _, finished = advance(state, FunctionFinished(
        run_id="r", seq=state.seq, ts=101, output_json="1",
        logs=[LogLine(ts=101, level="INFO", message="bye")]), POLICY)
    assert [(r.kind, [m.message for m in r.logs]) for r in records(finished)] == [
        ("run.completed", ["bye"])]


def test_a_plan_without_lines_adds_no_record() -> None:
    state, _ = advance(None, RunStarted(run_id="r", function_id="fn", event=EVENT, ts=10),
                       POLICY)
    _, commands = advance(state, StepPlanned(run_id="r", seq=1, ts=13, steps=[
        PlannedStep(step_id="x", kind="run"), PlannedStep(step_id="y", kind="run")]), POLICY)

    assert records(commands) == []
