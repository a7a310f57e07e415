"""The run state machine: ``advance(state, message, policy) -> (state, commands)``.

Pure: no I/O, no clock, no randomness. The orchestrator agent decodes a message
from the ``runs`` topic, calls ``advance`` and performs the commands it returns.

A run is always waiting for something: answers to the step requests it
dispatched (``state.dispatched``, keyed by the request's ``seq``) and steps that
wait on a timer, an event or a child run (``state.pending``, keyed by step id).
When nothing is outstanding, the handler is dispatched again to find its next step.

Idempotency: every step request gets a new ``seq``, executors echo it back, and an
answer whose ``seq`` is not outstanding is stale (a duplicate, or an answer to a
superseded request) and changes nothing. Timers, matched events and finished
children are matched against ``state.pending`` the same way. So any message may
arrive twice, late, or out of order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from schemas.messages import (
    CancelRequested,
    ChainAlive,
    ChildFinished,
    DeadLetter,
    Dispatched,
    ErrorInfo,
    Event,
    EventMatched,
    FunctionFinished,
    HistoryRecord,
    LogLine,
    MemoEntry,
    Pending,
    PlannedStep,
    ReplayRequested,
    RunMessage,
    RunStarted,
    RunState,
    SingletonReleased,
    StepCompleted,
    StepDeferred,
    StepFailed,
    StepPlanned,
    StepRequest,
    TimerFired,
    Waiter,
    WaiterChanged,
)
from stepstream.events import FUNCTION_FAILED
from stepstream.retry import RetryPolicy

RUNNING, COMPLETED, FAILED, CANCELLED = "running", "completed", "failed", "cancelled"
FINAL_STATUSES = frozenset({COMPLETED, FAILED, CANCELLED})

_START_TIMER, _FINISH_TIMER = "timeout:start", "timeout:finish"
_LEASE = "lease:"  # then the dispatch's seq and the due time: lease:{seq}:{due}
_TAKEOVER = "takeover:"  # a lease found by the partition's new owner: takeover:{seq}:{due}


@dataclass(frozen=True, slots=True)
class CancelRule:
    """A ``cancel_on`` rule as the machine needs it."""

    event: str
    condition: str | None
    timeout_ms: int


MAX_STATE_BYTES = 4 * 1024 * 1024
"""The default budget of a run's saved results (``Settings.run_state_max_bytes``)."""


@dataclass(frozen=True, slots=True)
class RunPolicy:
    """The options of a function that steer its runs."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    cancel_on: tuple[CancelRule, ...] = ()
    start_timeout_ms: int | None = None
    finish_timeout_ms: int | None = None
    chain_lease_ms: int = 10_000
    """How long an eager chain may go without a sign of life (a step applied, a
    ``ChainAlive`` heartbeat) before it is presumed dead (its worker crashed) and the
    handler is dispatched again from the last step applied."""
    max_state_bytes: int = MAX_STATE_BYTES
    """The run's saved results (every step's output or error) may take this many bytes;
    the step whose result would pass it fails the run (``RunStateTooLarge``)."""
    paused: bool = False
    """The function is paused (``streams.pauses``): what the run would dispatch is held
    (``Pending`` of kind ``paused``) until ``resume``; steps already dispatched finish."""


# --- commands -------------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class Watch:
    """Add or remove a waiter on the waiters topic."""

    change: WaiterChanged


@dataclass(frozen=True, slots=True)
class StartChild:
    """Start a child run (``step.invoke``) on the runs topic."""

    start: RunStarted


@dataclass(frozen=True, slots=True)
class CancelChild:
    """Cancel a child run the run no longer waits for (``on_parent_cancel="cancel"``)."""

    cancel: CancelRequested


@dataclass(frozen=True, slots=True)
class Release:
    """Give back the singleton key the run held (``streams.singletons``)."""

    released: SingletonReleased


@dataclass(frozen=True, slots=True)
class NotifyParent:
    """Tell the parent run that this child run ended."""

    finished: ChildFinished


@dataclass(frozen=True, slots=True)
class Emit:
    """Produce an event to the events topic."""

    event: Event


Command = (Dispatch | Schedule | Record | SendToDlq | Watch | StartChild | CancelChild
           | Release | NotifyParent | Emit)
Transition = tuple[RunState | None, list[Command]]


def child_run_id(run_id: str, step_id: str) -> str:
    """The run a ``step.invoke`` starts: fixed by the parent run and the step."""
    return f"{run_id}.{step_id}"


PAUSED = "paused"
"""The kind of a ``Pending`` step that a pause of its function holds back."""


def advance(state: RunState | None, message: RunMessage, policy: RunPolicy) -> Transition:
    """Apply one message to a run; returns the new state and what to do about it."""
    state, out = _advance(state, message, policy)
    if policy.paused and state is not None and any(isinstance(c, Dispatch) for c in out):
        state = _hold(state, out, _ts_of(message, state))
    return state, out


def resume(state: RunState, ts: int) -> tuple[RunState, list[Command]]:
    """The run's function was resumed: dispatch what its pause held, in the order held."""
    held = [(step_id, p) for step_id, p in state.pending.items() if p.kind == PAUSED]
    if state.status in FINAL_STATUSES or not held:
        return state, []
    out: list[Command] = []
    state = _record(state, out, "run.resumed", ts, logs=[LogLine(
        ts=ts, level="INFO", message=f"function {state.function_id} resumed")])
    for step_id, pending in held:
        state = _dispatch(_unpark(state, step_id), out, step_id=step_id,
                          attempt=pending.attempt)
    return state, out


def is_held(state: RunState) -> bool:
    """Whether a pause of the run's function holds back one of its dispatches."""
    return any(p.kind == PAUSED for p in state.pending.values())


def _hold(state: RunState, out: list[Command], ts: int) -> RunState:
    """Park the dispatches of a paused function's run instead of sending them."""
    requests = [c.request for c in out if isinstance(c, Dispatch)]
    out[:] = [c for c in out if not isinstance(c, Dispatch)]
    if not is_held(state):
        state = _record(state, out, "run.paused", ts, logs=[LogLine(
            ts=ts, level="INFO", message=f"function {state.function_id} is paused: the run "
                                         "waits until it is resumed")])
    for request in requests:
        state = replace(state, dispatched={
            k: v for k, v in state.dispatched.items() if k != str(request.seq)})
        state = _park(state, request.target or "", Pending(kind=PAUSED,
                                                           attempt=request.attempt))
    return state


def _ts_of(message: RunMessage, state: RunState) -> int:
    ts = getattr(message, "ts", None) or getattr(message, "ended_at", None)
    return int(ts) if ts else state.started_at


def _advance(state: RunState | None, message: RunMessage, policy: RunPolicy) -> Transition:
    if isinstance(message, RunStarted):
        if state is None:
            return _start(state, message, policy)
        if message.singleton_key and state.status in FINAL_STATUSES:
            # Its key was claimed again for a run that ended already (the same event,
            # redelivered): give it back, or nothing ever will.
            return state, [Release(SingletonReleased(message.singleton_key, state.run_id,
                                                     message.ts))]
        return state, []
    if isinstance(message, ReplayRequested):
        return _replay(state, message, policy)
    if state is None or state.status in FINAL_STATUSES:
        return state, []
    out: list[Command] = []
    before, state = state, _apply(state, message, policy, out)
    if state.memo is not before.memo and memo_bytes(state) > policy.max_state_bytes:
        state = _over_budget(before, state, message, policy, out)
    if state.status in FINAL_STATUSES:  # disarm the run's cancel_on rules
        out += [Watch(WaiterChanged(_cancel_waiter(state, i, rule, 0), False))
                for i, rule in enumerate(policy.cancel_on)]
        if state.status == COMPLETED:
            state = completed_marker(state)
    return state, out


def memo_bytes(state: RunState) -> int:
    """About the bytes the run's saved results take (``RunPolicy.max_state_bytes``)."""
    return sum(len(step_id) + len(entry.output_json or "") + (
        len(entry.error.message) + len(entry.error.traceback or "") if entry.error else 0)
        for step_id, entry in state.memo.items())


def _over_budget(before: RunState, state: RunState, message: RunMessage, policy: RunPolicy,
                 out: list[Command]) -> RunState:
    """The transition saved results past the run's budget: the run fails there, with
    the results it had, and what the transition dispatched or scheduled is dropped."""
    grown = [s for s, entry in state.memo.items() if before.memo.get(s) != entry]
    error = ErrorInfo(type="RunStateTooLarge", message=(
        f"the result of step {', '.join(map(repr, grown))} would bring the run's saved "
        f"results to {memo_bytes(state)} bytes, over the run's budget of "
        f"{policy.max_state_bytes} (STEPSTREAM_RUN_STATE_MAX_BYTES)"))
    # Its steps ran, but their results are not saved: the history says they failed.
    out[:] = [Record(replace(c.record, kind="step.failed", output_json=None, error=error))
              if isinstance(c, Record) and c.record.kind == "step.completed"
              and c.record.step_id in grown else c
              for c in out if not isinstance(c, Dispatch | Schedule)]
    return _finish(replace(state, memo=before.memo), FAILED, _ts_of(message, state), out,
                   error=error)


def completed_marker(state: RunState) -> RunState:
    """What the table keeps of a completed run: enough to ignore its late and duplicate
    messages (a run started again by a duplicate event, a stale step answer) and to tell
    its result. A completed run cannot be replayed, so its memo (every step's output),
    its batch and the trigger event's data go; failed and cancelled runs keep theirs for
    a replay."""
    return replace(state, memo={}, batch=[], event=replace(state.event, data_json="{}"))


def _apply(state: RunState, message: RunMessage, policy: RunPolicy,
           out: list[Command]) -> RunState:
    match message:
        case StepCompleted() | StepFailed() | StepPlanned() | FunctionFinished():
            dispatched = state.dispatched.get(str(message.seq))
            if dispatched is None or message.chain != dispatched.chain:
                return state  # stale, a duplicate, or a chain position seen already
            if isinstance(message, StepCompleted) and message.more:
                return _chain_progress(state, message, dispatched, policy, out)
            state = replace(state, answered=True, dispatched={
                k: v for k, v in state.dispatched.items() if k != str(message.seq)})
            state = _answer(state, message, dispatched, policy, out)
        case StepDeferred():
            state = _deferred(state, message, out)
        case ChainAlive():
            state = _chain_alive(state, message)
        case TimerFired() if is_lease(message):
            state = _lease_expired(state, message, policy, out)
        case TimerFired() if message.timer_id.startswith(_TAKEOVER):
            if holds_lease(state, message):  # the chain has no executor: at once
                state = _expire_chain(state, _lease_of(message)[0], message.ts, out)
        case TimerFired():
            state = _timer(state, message, out)
        case EventMatched():
            state = _resolve(state, message.step_id, "event", out, ts=message.ts,
                             output_json=_event_json(message.event))
        case ChildFinished():
            pending = state.pending.get(message.step_id)
            if pending is None or pending.child_run_id != message.child_run_id:
                return state
            state = _resolve(state, message.step_id, "invoke", out, ts=message.ts,
                             output_json=message.output_json, error=message.error)
        case CancelRequested():
            state = _finish(state, CANCELLED, message.ts, out, error=ErrorInfo(
                type="Cancelled", message=message.reason))
    return state


# --- transitions ----------------------------------------------------------------------


def _start(_: None, message: RunStarted, policy: RunPolicy) -> Transition:
    state = RunState(run_id=message.run_id, function_id=message.function_id,
                     event=message.event, status=RUNNING, seq=0, started_at=message.ts,
                     parent_run_id=message.parent_run_id,
                     parent_step_id=message.parent_step_id, batch=message.batch,
                     singleton_key=message.singleton_key)
    out: list[Command] = []
    state = _record(state, out, "run.started", message.ts, event=message.event,
                    backfill=message.backfill)
    for timer_id, timeout_ms in ((_START_TIMER, policy.start_timeout_ms),
                                 (_FINISH_TIMER, policy.finish_timeout_ms)):
        if timeout_ms is not None:
            out.append(Schedule(timeout_ms, TimerFired(state.run_id, timer_id,
                                                       message.ts + timeout_ms)))
    for i, rule in enumerate(policy.cancel_on):
        out.append(Watch(WaiterChanged(_cancel_waiter(state, i, rule, message.ts), True)))
    return _dispatch(state, out, step_id="", attempt=0), out


def _answer(state: RunState, message: StepCompleted | StepFailed | StepPlanned |
            FunctionFinished, dispatched: Dispatched, policy: RunPolicy,
            out: list[Command]) -> RunState:
    match message:
        case StepCompleted():
            state = _record(state, out, "step.completed", message.ended_at,
                            step_id=message.step_id, attempt=message.attempt,
                            output_json=message.output_json, started_at=message.started_at,
                            ended_at=message.ended_at, logs=message.logs)
            state = _memoize(state, message.step_id, MemoEntry(output_json=message.output_json))
            return _next(state, out)
        case StepFailed():
            return _step_failed(state, message, policy, out)
        case StepPlanned():
            for planned in message.steps:
                state = _plan(state, planned, message.ts, out)
            if message.logs:  # the handler's lines before it reached these steps
                state = _record(state, out, "logs", message.ts, logs=message.logs)
            return _next(state, out)
        case FunctionFinished():
            if message.error is not None:
                return _finish(state, FAILED, message.ts, out, error=message.error,
                               logs=message.logs)
            return _finish(state, COMPLETED, message.ts, out, output_json=message.output_json,
                           logs=message.logs)


def _chain_progress(state: RunState, message: StepCompleted, dispatched: Dispatched,
                    policy: RunPolicy, out: list[Command]) -> RunState:
    """One step of an eager chain: apply it; the dispatch stays outstanding."""
    state = _record(state, out, "step.completed", message.ended_at, step_id=message.step_id,
                    attempt=message.attempt, output_json=message.output_json,
                    started_at=message.started_at, ended_at=message.ended_at,
                    logs=message.logs)
    state = _memoize(state, message.step_id, MemoEntry(output_json=message.output_json))
    progressed = replace(dispatched, chain=message.chain + 1, alive_at=message.ended_at)
    if dispatched.lease_due is None:  # the first link: from now on a lease guards it
        due = message.ended_at + policy.chain_lease_ms
        progressed = replace(progressed, lease_due=due)
        out.append(_lease(state, message.seq, message.ended_at, due))
    return replace(state, answered=True,
                   dispatched={**state.dispatched, str(message.seq): progressed})


def _chain_alive(state: RunState, message: ChainAlive) -> RunState:
    """The executor still runs the chain's next step: its lease runs from now."""
    dispatched = state.dispatched.get(str(message.seq))
    if (dispatched is None or dispatched.chain != message.chain
            or message.ts <= (dispatched.alive_at or 0)):
        return state  # the chain moved on or ended, or an older heartbeat
    return replace(state, dispatched={
        **state.dispatched, str(message.seq): replace(dispatched, alive_at=message.ts)})


def lease_timer(run_id: str, seq: int | str, due: int) -> TimerFired:
    """The timer of a chain's lease: it fires at ``due`` (epoch ms)."""
    return TimerFired(run_id, f"{_LEASE}{seq}:{due}", due)


def takeover_timers(state: RunState, now: int) -> list[TimerFired]:
    """The chain leases ``state`` holds, as found by a new owner of the run's partition.

    The executor that runs a chain is the owner of the run's partition (co-partitioning),
    and an owner cancels its chains when it hands the partition over (or it died, or it
    is fenced): whoever is assigned the partition finds those chains without an
    executor, and these timers re-dispatch them at once instead of one lease after
    their last sign of life."""
    return [TimerFired(state.run_id, f"{_TAKEOVER}{seq}:{dispatched.lease_due}", now)
            for seq, dispatched in state.dispatched.items()
            if dispatched.lease_due is not None]


def is_lease(timer: TimerFired) -> bool:
    """Whether ``timer`` is a chain's lease (not a retry, sleep or timeout)."""
    return timer.timer_id.startswith(_LEASE)


def holds_lease(state: RunState, timer: TimerFired) -> bool:
    """Whether ``state`` still waits on the lease ``timer`` (its chain runs, not renewed)."""
    seq, due = _lease_of(timer)
    dispatched = state.dispatched.get(seq)
    return dispatched is not None and dispatched.lease_due == due


def _lease_of(timer: TimerFired) -> tuple[str, int]:
    """The dispatch seq and the due time a lease timer names."""
    _, seq, due = timer.timer_id.split(":")
    return seq, int(due)


def _lease(state: RunState, seq: int, now: int, due: int) -> Schedule:
    return Schedule(due - now, lease_timer(state.run_id, seq, due))


def _lease_expired(state: RunState, message: TimerFired, policy: RunPolicy,
                   out: list[Command]) -> RunState:
    """A chain's lease timer fired: re-dispatch if the chain showed no life for a whole
    lease (its worker is gone), else set the timer for one lease after the last sign."""
    if not holds_lease(state, message):
        return state  # the chain ended, or an earlier timer of it
    seq, _ = _lease_of(message)
    dispatched = state.dispatched[seq]
    expires = (dispatched.alive_at or 0) + policy.chain_lease_ms
    if expires > message.ts:
        out.append(_lease(state, int(seq), message.ts, expires))
        return replace(state, dispatched={**state.dispatched, seq: replace(
            dispatched, lease_due=expires)})
    return _expire_chain(state, seq, message.ts, out)


def _expire_chain(state: RunState, seq: str, now: int, out: list[Command]) -> RunState:
    """The chain of dispatch ``seq`` has no executor any more: dispatch again from the
    last step it applied."""
    state = replace(state, dispatched={k: v for k, v in state.dispatched.items() if k != seq})
    state = _record(state, out, "chain.expired", now)
    return _next(state, out)


def _deferred(state: RunState, message: StepDeferred, out: list[Command]) -> RunState:
    """Flow control held a dispatch back: park it on a timer, dispatch it again then.

    Only a dispatch that has not run anything yet can be deferred (the executor decides
    before the first step). The first deferral of a step is recorded; the re-checks that
    follow (a queued step comes back until it gets its turn) are not.
    """
    dispatched = state.dispatched.get(str(message.seq))
    if dispatched is None or dispatched.chain != 0:
        return state
    state = replace(state, dispatched={
        k: v for k, v in state.dispatched.items() if k != str(message.seq)})
    timer = TimerFired(state.run_id, f"defer:{message.seq}", message.retry_at)
    out.append(Schedule(max(0, message.retry_at - message.ts), timer))
    if not dispatched.deferred:
        state = _record(state, out, "flow.deferred", message.ts,
                        step_id=dispatched.step_id or None, next_attempt_at=message.retry_at,
                        logs=[LogLine(ts=message.ts, level="INFO", step_id=dispatched.step_id
                                      or None, message=f"held back: {message.reason}")])
    return _park(state, dispatched.step_id, Pending(kind="deferred", attempt=dispatched.attempt,
                                                    timer_id=timer.timer_id))


def _step_failed(state: RunState, message: StepFailed, policy: RunPolicy,
                 out: list[Command]) -> RunState:
    retries = policy.retry.retries if message.retries is None else message.retries
    fields = {"step_id": message.step_id, "attempt": message.attempt, "error": message.error,
              "started_at": message.started_at, "ended_at": message.ended_at,
              "logs": message.logs}
    if message.retriable and message.attempt < retries:
        delay = message.retry_after_ms
        if delay is None:
            delay = policy.retry.delay_ms(message.attempt, f"{state.run_id}:{message.step_id}")
        timer = TimerFired(state.run_id, f"retry:{message.step_id}:{message.attempt + 1}",
                           message.ended_at + delay)
        state = _record(state, out, "step.failed", message.ended_at,
                        next_attempt_at=timer.ts, **fields)
        out.append(Schedule(delay, timer))
        return _park(state, message.step_id, Pending(kind="retry", attempt=message.attempt + 1,
                                                     timer_id=timer.timer_id))
    # Out of attempts (or not retriable): the step fails for good. The handler is
    # dispatched again so that its step.run raises StepError where it can be caught.
    state = _record(state, out, "step.failed", message.ended_at, **fields)
    out.append(SendToDlq(DeadLetter(run_id=state.run_id, function_id=state.function_id,
                                    step_id=message.step_id, attempt=message.attempt,
                                    error=message.error, event=state.event,
                                    ts=message.ended_at)))
    return _next(_memoize(state, message.step_id, MemoEntry(error=message.error)), out)


def _plan(state: RunState, planned: PlannedStep, ts: int, out: list[Command]) -> RunState:
    step_id = planned.step_id
    if step_id in state.memo or step_id in state.pending or any(
            d.step_id == step_id for d in state.dispatched.values()):
        return state  # planned twice (a replay): already in hand
    if planned.kind == "run":
        return _dispatch(state, out, step_id=step_id, attempt=0)
    until = planned.until_ms if planned.until_ms is not None else ts
    if planned.kind == "sleep":
        timer = TimerFired(state.run_id, f"sleep:{step_id}", until)
        out.append(Schedule(max(0, until - ts), timer))
        state = _record(state, out, "step.sleeping", ts, step_id=step_id,
                        next_attempt_at=until)
        return _park(state, step_id, Pending(kind="sleep", timer_id=timer.timer_id))
    if planned.kind == "wait":
        timer = TimerFired(state.run_id, f"wait:{step_id}", until)
        waiter = Waiter(run_id=state.run_id, step_id=step_id, kind="step",
                        event_name=planned.event or "", trigger=state.event, expires_at=until,
                        condition=planned.condition)
        out += [Watch(WaiterChanged(waiter, True)), Schedule(max(0, until - ts), timer)]
        state = _record(state, out, "step.waiting", ts, step_id=step_id,
                        next_attempt_at=until)
        return _park(state, step_id, Pending(kind="event", timer_id=timer.timer_id,
                                             event=planned.event,
                                             condition=planned.condition))
    if planned.kind == "invoke":
        child = child_run_id(state.run_id, step_id)
        event = Event(id=child, name=f"stepstream/invoke/{planned.function_id}",
                      data_json=planned.data_json or "{}", ts=ts)
        out.append(StartChild(RunStarted(run_id=child, function_id=planned.function_id or "",
                                         event=event, ts=ts, parent_run_id=state.run_id,
                                         parent_step_id=step_id)))
        state = _record(state, out, "step.invoking", ts, step_id=step_id)
        timer_id = None
        if planned.timeout_ms is not None:
            timer = TimerFired(state.run_id, f"invoke:{step_id}", ts + planned.timeout_ms)
            timer_id = timer.timer_id
            out.append(Schedule(planned.timeout_ms, timer))
        return _park(state, step_id, Pending(kind="invoke", child_run_id=child,
                                             timer_id=timer_id,
                                             abandon=planned.on_parent_cancel == "abandon"))
    return _memoize(state, step_id, MemoEntry(error=ErrorInfo(
        type="UnknownStepKind", message=f"step {step_id!r} has unknown kind {planned.kind!r}")))


def _timer(state: RunState, message: TimerFired, out: list[Command]) -> RunState:
    if message.timer_id == _START_TIMER:
        if state.answered:
            return state
        return _finish(state, CANCELLED, message.ts, out, error=ErrorInfo(
            type="Timeout", message="run did not start within its start timeout"))
    if message.timer_id == _FINISH_TIMER:
        return _finish(state, CANCELLED, message.ts, out, error=ErrorInfo(
            type="Timeout", message="run did not finish within its finish timeout"))
    step_id = next((s for s, p in state.pending.items() if p.timer_id == message.timer_id),
                   None)
    if step_id is None:
        return state
    pending = state.pending[step_id]
    if pending.kind == "invoke":
        _let_go(state, pending, "its parent's invoke timed out", message.ts, out)
        return _resolve(state, step_id, "invoke", out, ts=message.ts, output_json=None,
                        error=ErrorInfo(type="InvokeTimeout", message=(
                            f"child run {pending.child_run_id} did not end within the "
                            "invoke's timeout")))
    if pending.kind in ("retry", "deferred"):
        state = _unpark(state, step_id)
        return _dispatch(state, out, step_id=step_id, attempt=pending.attempt,
                         deferred=pending.kind == "deferred")
    # A sleep ends with no value; a wait that timed out returns None to the handler.
    return _resolve(state, step_id, pending.kind, out, ts=message.ts, output_json="null")


def _resolve(state: RunState, step_id: str, kind: str, out: list[Command], *, ts: int,
             output_json: str | None, error: ErrorInfo | None = None) -> RunState:
    """A pending step of ``kind`` got its value: memoize it and move on."""
    pending = state.pending.get(step_id)
    if pending is None or pending.kind != kind:
        return state
    if kind == "event":
        out.append(Watch(WaiterChanged(_step_waiter(state, step_id, pending), False)))
    state = _unpark(state, step_id)
    if error is not None:
        state = _record(state, out, "step.failed", ts, step_id=step_id, error=error)
        entry = MemoEntry(error=error)
    else:
        state = _record(state, out, "step.completed", ts, step_id=step_id,
                        output_json=output_json, ended_at=ts)
        entry = MemoEntry(output_json=output_json)
    return _next(_memoize(state, step_id, entry), out)


def _finish(state: RunState, status: str, ts: int, out: list[Command], *,
            output_json: str | None = None, error: ErrorInfo | None = None,
            logs: list[LogLine] | None = None) -> RunState:
    for step_id, pending in state.pending.items():
        if pending.kind == "event":
            out.append(Watch(WaiterChanged(_step_waiter(state, step_id, pending), False)))
        _let_go(state, pending, f"its parent run {state.run_id} ended {status}", ts, out)
    state = replace(state, status=status, ended_at=ts, output_json=output_json, error=error,
                    dispatched={}, pending={})
    state = _record(state, out, f"run.{status}", ts, output_json=output_json, error=error,
                    logs=logs or [])
    if state.singleton_key is not None:
        out.append(Release(SingletonReleased(state.singleton_key, state.run_id, ts)))
    if state.parent_run_id is not None and state.parent_step_id is not None:
        if status != COMPLETED and error is None:
            error = ErrorInfo(type="ChildRunFailed", message=f"child run ended {status}")
        out.append(NotifyParent(ChildFinished(
            run_id=state.parent_run_id, step_id=state.parent_step_id, child_run_id=state.run_id,
            ts=ts, output_json=output_json if status == COMPLETED else None,
            error=None if status == COMPLETED else error)))
    if status == FAILED:
        out.append(Emit(_failure_event(state, ts)))
    return state


def _let_go(state: RunState, pending: Pending, why: str, ts: int, out: list[Command]) -> None:
    """The run stops waiting for a child run: cancel it, unless it is to be abandoned."""
    if pending.kind == "invoke" and pending.child_run_id and not pending.abandon:
        out.append(CancelChild(CancelRequested(run_id=pending.child_run_id,
                                               reason=f"cancelled: {why}", ts=ts)))


def _replay(state: RunState | None, message: ReplayRequested, policy: RunPolicy) -> Transition:
    """A failed or cancelled run runs again from its failed steps (or ``from_step``).

    Completed steps stay memoized; the failed ones (or ``from_step`` and every step
    memoized after it) are forgotten, so the handler runs them again. A request made
    before the run last ended is stale (a duplicate, meant for an earlier end).
    """
    if (state is None or state.status not in (FAILED, CANCELLED)
            or message.ts < (state.ended_at or 0)):
        return state, []
    steps = list(state.memo)
    if message.from_step in state.memo:
        forget = set(steps[steps.index(message.from_step):])
    else:
        forget = {s for s, entry in state.memo.items() if entry.error is not None}
    state = replace(state, status=RUNNING, ended_at=None, output_json=None, error=None,
                    memo={s: e for s, e in state.memo.items() if s not in forget})
    out: list[Command] = []
    state = _record(state, out, "run.replayed", message.ts, step_id=message.from_step)
    out += [Watch(WaiterChanged(_cancel_waiter(state, i, rule, message.ts), True))
            for i, rule in enumerate(policy.cancel_on)]  # finishing disarmed them
    return _dispatch(state, out, step_id="", attempt=0), out

# --- helpers --------------------------------------------------------------------------


def _next(state: RunState, out: list[Command]) -> RunState:
    """Replay the handler when nothing is outstanding any more."""
    if state.status in FINAL_STATUSES or state.dispatched or state.pending:
        return state
    return _dispatch(state, out, step_id="", attempt=0)


def _dispatch(state: RunState, out: list[Command], *, step_id: str, attempt: int,
              deferred: bool = False) -> RunState:
    seq = state.seq + 1
    state = replace(state, seq=seq, dispatched={
        **state.dispatched, str(seq): Dispatched(step_id=step_id, attempt=attempt,
                                                 deferred=deferred)})
    # No memo or batch: the executor reads them from the run's state, which is in its own
    # task (co-partitioned), so a request does not grow with the run.
    out.append(Dispatch(StepRequest(run_id=state.run_id, seq=seq, function_id=state.function_id,
                                    event=state.event, attempt=attempt,
                                    target=step_id or None)))
    return state


def _memoize(state: RunState, step_id: str, entry: MemoEntry) -> RunState:
    return replace(state, memo={**state.memo, step_id: entry})


def _park(state: RunState, step_id: str, pending: Pending) -> RunState:
    return replace(state, pending={**state.pending, step_id: pending})


def _unpark(state: RunState, step_id: str) -> RunState:
    return replace(state, pending={k: v for k, v in state.pending.items() if k != step_id})


def _record(state: RunState, out: list[Command], kind: str, ts: int,
            **fields: object) -> RunState:
    seq = state.history_seq + 1
    out.append(Record(HistoryRecord(run_id=state.run_id, seq=seq, ts=ts, kind=kind,
                                    function_id=state.function_id,
                                    event_id=state.event.id,
                                    **fields)))  # type: ignore[arg-type]
    return replace(state, history_seq=seq)


def _step_waiter(state: RunState, step_id: str, pending: Pending) -> Waiter:
    return Waiter(run_id=state.run_id, step_id=step_id, kind="step",
                  event_name=pending.event or "", trigger=state.event, expires_at=0,
                  condition=pending.condition)


def _cancel_waiter(state: RunState, index: int, rule: CancelRule, ts: int) -> Waiter:
    return Waiter(run_id=state.run_id, step_id=f"cancel_on:{index}", kind="cancel",
                  event_name=rule.event, trigger=state.event, expires_at=ts + rule.timeout_ms,
                  condition=rule.condition)


def _event_json(event: Event) -> str:
    return (f'{{"id":{_quote(event.id)},"name":{_quote(event.name)},'
            f'"data":{event.data_json},"ts":{event.ts}}}')


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _failure_event(state: RunState, ts: int) -> Event:
    error = state.error or ErrorInfo(type="Error", message="")
    data = {"function_id": state.function_id, "run_id": state.run_id,
            "error": {"type": error.type, "message": error.message},
            "event": json.loads(_event_json(state.event))}
    return Event(id=f"failed:{state.run_id}", name=FUNCTION_FAILED,
                 data_json=json.dumps(data, separators=(",", ":")), ts=ts)
