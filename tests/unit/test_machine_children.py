"""Children follow their parent: a run that stops waiting for a child run (it ends, or
the invoke times out) cancels it, unless the invoke said ``abandon``."""

from __future__ import annotations

from schemas.messages import (
    CancelRequested,
    ChildFinished,
    Event,
    PlannedStep,
    RunStarted,
    RunState,
    StepPlanned,
    TimerFired,
)
from streams.machine import (
    CANCELLED,
    CancelChild,
    Command,
    RunPolicy,
    Schedule,
    StartChild,
    advance,
    child_run_id,
)

EVENT = Event(id="evt-1", name="test/happened", ts=5)
POLICY = RunPolicy()
CHILD = child_run_id("parent", "call")


def invoking(**options: object) -> tuple[RunState, list[Command]]:
    """A parent run waiting on its child at step ``call``."""
    state, _ = advance(None, RunStarted(run_id="parent", function_id="fn", event=EVENT, ts=10),
                       POLICY)
    planned = PlannedStep(step_id="call", kind="invoke", function_id="child",
                          **options)  # type: ignore[arg-type]
    state, out = advance(state, StepPlanned(run_id="parent", seq=1, ts=20, steps=[planned]),
                         POLICY)
    assert state is not None and state.pending["call"].child_run_id == CHILD
    assert [c.start.run_id for c in out if isinstance(c, StartChild)] == [CHILD]
    return state, out


def cancels(out: list[Command]) -> list[str]:
    return [c.cancel.run_id for c in out if isinstance(c, CancelChild)]


def test_cancelling_the_parent_cancels_the_child_it_waits_on() -> None:
    state, _ = invoking()
    state, out = advance(state, CancelRequested(run_id="parent", reason="stop", ts=30), POLICY)
    assert state is not None and state.status == CANCELLED
    assert cancels(out) == [CHILD]
    cancel = next(c.cancel for c in out if isinstance(c, CancelChild))
    assert "parent run parent ended cancelled" in cancel.reason and cancel.ts == 30


def test_an_abandoned_child_runs_on() -> None:
    state, _ = invoking(on_parent_cancel="abandon")
    _, out = advance(state, CancelRequested(run_id="parent", reason="stop", ts=30), POLICY)
    assert cancels(out) == []


def test_a_child_that_ended_is_not_cancelled() -> None:
    state, _ = invoking()
    state, _ = advance(state, ChildFinished(run_id="parent", step_id="call", child_run_id=CHILD,
                                            ts=25, output_json="1"), POLICY)
    assert state is not None and "call" in state.memo
    _, out = advance(state, CancelRequested(run_id="parent", reason="stop", ts=30), POLICY)
    assert cancels(out) == []


def test_an_invoke_timeout_fails_the_step_and_cancels_the_child() -> None:
    state, out = invoking(timeout_ms=1000)
    timer = next(c.timer for c in out if isinstance(c, Schedule))
    assert (timer.timer_id, timer.ts) == ("invoke:call", 1020)
    state, out = advance(state, TimerFired(run_id="parent", timer_id="invoke:call", ts=1020),
                         POLICY)
    assert state is not None and state.status == "running"
    error = state.memo["call"].error
    assert error is not None and error.type == "InvokeTimeout"
    assert cancels(out) == [CHILD]
    # The child's end, late, changes nothing: the step has its result.
    late = ChildFinished(run_id="parent", step_id="call", child_run_id=CHILD, ts=1100,
                         output_json="1")
    assert advance(state, late, POLICY) == (state, [])


def test_a_child_that_ends_in_time_disarms_the_timeout() -> None:
    state, _ = invoking(timeout_ms=1000)
    state, _ = advance(state, ChildFinished(run_id="parent", step_id="call", child_run_id=CHILD,
                                            ts=25, output_json="1"), POLICY)
    assert state is not None
    fired = TimerFired(run_id="parent", timer_id="invoke:call", ts=1020)
    assert advance(state, fired, POLICY) == (state, [])
