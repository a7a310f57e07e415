"""Pausing a function, as the run state machine sees it: a paused policy holds what a run
would dispatch (``Pending`` of kind ``paused``); ``resume`` dispatches it."""

from __future__ import annotations

from dataclasses import replace

from schemas.messages import (
    CancelRequested,
    Event,
    PlannedStep,
    RunStarted,
    StepCompleted,
    StepPlanned,
)
from streams.machine import (
    CANCELLED,
    PAUSED,
    Dispatch,
    Record,
    RunPolicy,
    advance,
    is_held,
    resume,
)

EVENT = Event(id="evt-1", name="test/happened", ts=5)
PAUSED_POLICY = RunPolicy(paused=True)


def started(run_id: str = "run-1") -> RunStarted:
    return RunStarted(run_id=run_id, function_id="fn", event=EVENT, ts=10)


def test_a_run_started_while_paused_is_kept_without_a_dispatch() -> None:
    state, out = advance(None, started(), PAUSED_POLICY)
    assert state is not None and state.status == "running"
    assert not [c for c in out if isinstance(c, Dispatch)]
    assert state.dispatched == {} and state.pending[""].kind == PAUSED
    assert [c.record.kind for c in out if isinstance(c, Record)] == ["run.started", "run.paused"]


def test_a_running_step_finishes_then_the_run_waits() -> None:
    state, _ = advance(None, started(), RunPolicy())
    assert state is not None
    state, out = advance(state, StepCompleted(run_id="run-1", seq=1, step_id="a", attempt=0,
                                              output_json="1", started_at=20, ended_at=30),
                         PAUSED_POLICY)
    assert state is not None and state.memo["a"].output_json == "1"
    assert not [c for c in out if isinstance(c, Dispatch)] and is_held(state)


def test_resume_dispatches_every_held_step_once() -> None:
    state, _ = advance(None, started(), RunPolicy())
    assert state is not None
    planned = StepPlanned(run_id="run-1", seq=1, ts=20, steps=[
        PlannedStep(step_id="a", kind="run"), PlannedStep(step_id="b", kind="run")])
    state, out = advance(state, planned, PAUSED_POLICY)
    assert state is not None and set(state.pending) == {"a", "b"}
    assert [c.record.kind for c in out if isinstance(c, Record)].count("run.paused") == 1
    state, out = resume(state, 50)
    requests = [c.request for c in out if isinstance(c, Dispatch)]
    assert [r.target for r in requests] == ["a", "b"]
    assert state.pending == {} and set(state.dispatched) == {str(r.seq) for r in requests}
    assert resume(state, 60) == (state, [])  # a second resume finds nothing held


def test_a_held_run_can_be_cancelled_and_is_not_resumed() -> None:
    state, _ = advance(None, started(), PAUSED_POLICY)
    assert state is not None
    state, _ = advance(state, CancelRequested(run_id="run-1", reason="no", ts=40),
                       PAUSED_POLICY)
    assert state is not None and state.status == CANCELLED and not is_held(state)
    assert resume(state, 50)[1] == []


def test_a_redelivered_start_while_paused_changes_nothing() -> None:
    state, _ = advance(None, started(), PAUSED_POLICY)
    assert state is not None
    assert advance(state, started(), PAUSED_POLICY) == (state, [])
    assert advance(replace(state), started(), RunPolicy())[1] == []
