"""The state machine under flow control: ``StepDeferred`` parks a dispatch on a timer
(through the delay tiers) and dispatches it again when the timer fires."""

from __future__ import annotations

from schemas.messages import (
    CancelRequested,
    Dispatched,
    Event,
    Pending,
    PlannedStep,
    RunStarted,
    RunState,
    StepCompleted,
    StepDeferred,
    StepPlanned,
    TimerFired,
)
from streams.machine import CANCELLED, Dispatch, Record, RunPolicy, Schedule, advance

RUN, FN = "run-1", "fn-1"
EVENT = Event(id="evt-1", name="test/happened", data_json="{}", ts=5)
POLICY = RunPolicy()


def started(**fields: object) -> RunState:
    state, _ = advance(None, RunStarted(run_id=RUN, function_id=FN, event=EVENT, ts=10,
                                        **fields), POLICY)  # type: ignore[arg-type]
    assert state is not None
    return state


def deferred(seq: int, retry_at: int = 1500, ts: int = 1000,
             reason: str = "concurrency limit") -> StepDeferred:
    return StepDeferred(run_id=RUN, seq=seq, ts=ts, retry_at=retry_at, reason=reason)


def test_a_deferred_dispatch_waits_on_a_timer_and_is_dispatched_again() -> None:
    state, commands = advance(started(), deferred(1, retry_at=1500, ts=1000), POLICY)

    assert state is not None
    assert state.dispatched == {}
    assert state.pending == {"": Pending(kind="deferred", attempt=0, timer_id="defer:1")}
    schedule = [c for c in commands if isinstance(c, Schedule)]
    assert [(s.delay_ms, s.timer) for s in schedule] == [
        (500, TimerFired(run_id=RUN, timer_id="defer:1", ts=1500))]
    assert not state.answered  # held back is not started: timeouts.start still counts

    state, commands = advance(state, TimerFired(run_id=RUN, timer_id="defer:1", ts=1500),
                              POLICY)

    assert state is not None and state.pending == {}
    assert state.dispatched == {"2": Dispatched(step_id="", attempt=0, deferred=True)}
    (dispatch,) = [c for c in commands if isinstance(c, Dispatch)]
    assert (dispatch.request.seq, dispatch.request.target) == (2, None)


def test_only_the_first_deferral_of_a_step_is_recorded() -> None:
    state, first = advance(started(), deferred(1), POLICY)
    state, _ = advance(state, TimerFired(run_id=RUN, timer_id="defer:1", ts=1500), POLICY)
    state, again = advance(state, deferred(2, retry_at=2500, ts=2000), POLICY)

    (record,) = [c.record for c in first if isinstance(c, Record)]
    assert record.kind == "flow.deferred" and record.next_attempt_at == 1500
    assert "concurrency limit" in record.logs[0].message
    assert [c for c in again if isinstance(c, Record)] == []
    assert state is not None and state.pending[""].timer_id == "defer:2"


def test_a_stale_or_repeated_deferral_changes_nothing() -> None:
    state = started()
    parked, _ = advance(state, deferred(1), POLICY)

    assert advance(state, deferred(7), POLICY) == (state, [])
    assert advance(parked, deferred(1), POLICY) == (parked, [])


def test_a_dispatch_whose_chain_progressed_is_not_deferred() -> None:
    state, _ = advance(started(), StepCompleted(
        run_id=RUN, seq=1, step_id="a", attempt=0, output_json="1", started_at=1, ended_at=2,
        more=True), POLICY)

    assert advance(state, deferred(1), POLICY) == (state, [])


def test_a_deferred_parallel_step_is_dispatched_again_with_its_target() -> None:
    state, _ = advance(started(), StepPlanned(run_id=RUN, seq=1, ts=20, steps=[
        PlannedStep(step_id="a", kind="run"), PlannedStep(step_id="b", kind="run")]), POLICY)
    assert state is not None and set(state.dispatched) == {"2", "3"}

    state, _ = advance(state, deferred(3), POLICY)
    state, commands = advance(state, StepCompleted(
        run_id=RUN, seq=2, step_id="a", attempt=0, output_json="1", started_at=1,
        ended_at=2), POLICY)
    assert not [c for c in commands if isinstance(c, Dispatch)]  # b is still to run

    state, commands = advance(state, TimerFired(run_id=RUN, timer_id="defer:3", ts=1500),
                              POLICY)
    (dispatch,) = [c for c in commands if isinstance(c, Dispatch)]
    assert dispatch.request.target == "b" and "a" in state.memo


def test_a_run_cancelled_while_held_back_ignores_its_timer() -> None:
    state, _ = advance(started(), deferred(1), POLICY)
    state, _ = advance(state, CancelRequested(run_id=RUN, reason="x", ts=1200), POLICY)
    assert state is not None and state.status == CANCELLED

    assert advance(state, TimerFired(run_id=RUN, timer_id="defer:1", ts=1500), POLICY) == (
        state, [])


def test_the_start_timeout_cancels_a_run_that_is_still_held_back() -> None:
    policy = RunPolicy(start_timeout_ms=5000)
    state, _ = advance(None, RunStarted(run_id=RUN, function_id=FN, event=EVENT, ts=10), policy)
    state, _ = advance(state, deferred(1), policy)

    state, _ = advance(state, TimerFired(run_id=RUN, timer_id="timeout:start", ts=5010), policy)

    assert state is not None and state.status == CANCELLED


def test_a_batch_travels_from_the_start_to_every_request() -> None:
    batch = [EVENT, Event(id="evt-2", name="test/happened", data_json='{"n":2}', ts=6)]
    state, commands = advance(None, RunStarted(run_id=RUN, function_id=FN, event=EVENT, ts=10,
                                               batch=batch), POLICY)

    assert state is not None and state.batch == batch
    (dispatch,) = [c for c in commands if isinstance(c, Dispatch)]
    assert dispatch.request.batch == []  # the executor reads it from the run's state
