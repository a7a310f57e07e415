"""The run state machine: ``advance(state, message) -> (state, commands)``.

Pure: no I/O, no clock, no randomness. The orchestrator agent decodes a message
from the ``runs`` topic, calls ``advance`` and performs the commands it returns.

Idempotency comes from ``seq``, the number of the current dispatch. Every
dispatch of the handler gets a new ``seq``; executors echo it back, and a report
whose ``seq`` is not the current one is stale (a duplicate, or an answer to a
dispatch that was superseded) and changes nothing. Timers are matched the same
way by ``timer_id``. So any message may arrive twice, late, or out of order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from schemas.messages import (
    CancelRequested,
    DeadLetter,
    ErrorInfo,
    FunctionFinished,
    HistoryRecord,
    MemoEntry,
    RunMessage,
    RunStarted,
    RunState,
    StepCompleted,
    StepFailed,
    StepRequest,
    TimerFired,
)
from stepstream.retry import RetryPolicy

RUNNING, COMPLETED, FAILED, CANCELLED = "running", "completed", "failed", "cancelled"
FINAL_STATUSES = frozenset({COMPLETED, FAILED, CANCELLED})


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Send ``request`` to the steps topic."""

    request: StepRequest


@dataclass(frozen=True, slots=True)
class Schedule:
    """Deliver ``timer`` back to the runs topic after ``delay_ms``."""

    delay_ms: int
    timer: TimerFired


@dataclass(frozen=True, slots=True)
class Record:
    """Append ``record`` to the history topic."""

    record: HistoryRecord


@dataclass(frozen=True, slots=True)
class SendToDlq:
    """Write a dead letter for a step that exhausted its retries."""

    letter: DeadLetter


Command = Dispatch | Schedule | Record | SendToDlq
Transition = tuple[RunState | None, list[Command]]


def advance(state: RunState | None, message: RunMessage, policy: RetryPolicy) -> Transition:
    """Apply one message to a run; returns the new state and what to do about it."""
    if isinstance(message, RunStarted):
        return _start(state, message)
    if state is None or state.status in FINAL_STATUSES:
        return state, []
    match message:
        case StepCompleted():
            return _step_completed(state, message)
        case StepFailed():
            return _step_failed(state, message, policy)
        case TimerFired():
            return _timer_fired(state, message)
        case FunctionFinished():
            return _function_finished(state, message)
        case CancelRequested():
            return _finish(state, CANCELLED, message.ts, error=ErrorInfo(
                type="Cancelled", message=message.reason))
    return state, []


def _start(state: RunState | None, message: RunStarted) -> Transition:
    if state is not None:
        return state, []  # the same event delivered twice starts one run
    state = RunState(run_id=message.run_id, function_id=message.function_id,
                     event=message.event, status=RUNNING, seq=1, attempt=0,
                     started_at=message.ts)
    state, started = _history(state, "run.started", message.ts, event=message.event)
    return state, [started, _dispatch(state)]


def _step_completed(state: RunState, message: StepCompleted) -> Transition:
    if message.seq != state.seq or state.timer_id is not None:
        return state, []
    memo = {**state.memo, message.step_id: MemoEntry(output_json=message.output_json)}
    state = replace(state, memo=memo, seq=state.seq + 1, attempt=0)
    state, completed = _history(state, "step.completed", message.ended_at,
                                step_id=message.step_id, attempt=message.attempt,
                                output_json=message.output_json,
                                started_at=message.started_at, ended_at=message.ended_at)
    return state, [completed, _dispatch(state)]


def _step_failed(state: RunState, message: StepFailed, policy: RetryPolicy) -> Transition:
    if message.seq != state.seq or state.timer_id is not None:
        return state, []
    if message.retriable and message.attempt < policy.retries:
        delay = message.retry_after_ms
        if delay is None:
            delay = policy.delay_ms(message.attempt, f"{state.run_id}:{message.step_id}")
        timer = TimerFired(run_id=state.run_id, timer_id=f"retry:{state.seq}",
                           ts=message.ended_at + delay)
        state = replace(state, timer_id=timer.timer_id, attempt=message.attempt + 1)
        state, failed = _history(state, "step.failed", message.ended_at,
                                 step_id=message.step_id, attempt=message.attempt,
                                 error=message.error, started_at=message.started_at,
                                 ended_at=message.ended_at, next_attempt_at=timer.ts)
        return state, [failed, Schedule(delay_ms=delay, timer=timer)]
    # Out of attempts (or not retriable): the step fails for good. The handler is
    # dispatched once more so that its step.run raises StepError where it can be caught.
    memo = {**state.memo, message.step_id: MemoEntry(error=message.error)}
    state = replace(state, memo=memo, seq=state.seq + 1, attempt=0)
    state, failed = _history(state, "step.failed", message.ended_at, step_id=message.step_id,
                             attempt=message.attempt, error=message.error,
                             started_at=message.started_at, ended_at=message.ended_at)
    letter = DeadLetter(run_id=state.run_id, function_id=state.function_id,
                        step_id=message.step_id, attempt=message.attempt,
                        error=message.error, event=state.event, ts=message.ended_at)
    return state, [failed, SendToDlq(letter), _dispatch(state)]


def _timer_fired(state: RunState, message: TimerFired) -> Transition:
    if message.timer_id != state.timer_id:
        return state, []
    state = replace(state, timer_id=None, seq=state.seq + 1)
    return state, [_dispatch(state)]


def _function_finished(state: RunState, message: FunctionFinished) -> Transition:
    if message.seq != state.seq or state.timer_id is not None:
        return state, []
    if message.error is not None:
        return _finish(state, FAILED, message.ts, error=message.error)
    return _finish(state, COMPLETED, message.ts, output_json=message.output_json)


def _finish(state: RunState, status: str, ts: int, *, output_json: str | None = None,
            error: ErrorInfo | None = None) -> Transition:
    state = replace(state, status=status, ended_at=ts, output_json=output_json, error=error,
                    timer_id=None, seq=state.seq + 1)
    state, finished = _history(state, f"run.{status}", ts, output_json=output_json, error=error)
    return state, [finished]


def _dispatch(state: RunState) -> Dispatch:
    return Dispatch(StepRequest(run_id=state.run_id, seq=state.seq,
                                function_id=state.function_id, event=state.event,
                                attempt=state.attempt, memo=state.memo))


def _history(state: RunState, kind: str, ts: int, **fields: object) -> tuple[RunState, Record]:
    seq = state.history_seq + 1
    record = HistoryRecord(run_id=state.run_id, seq=seq, ts=ts, kind=kind,
                           function_id=state.function_id, **fields)  # type: ignore[arg-type]
    return replace(state, history_seq=seq), Record(record)
