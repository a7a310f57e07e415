"""``run``: a function's run in process, on the engine's own pieces, with no broker.

The run state machine (``streams.machine.advance``) drives the run exactly as the
orchestrator does, and each dispatch replays the handler through
``stepstream.execution.execute`` as the executor does: outputs take the same JSON round
trip, retries follow the function's ``RetryPolicy``, a handler that calls its steps in
another order on replay fails with ``NondeterminismError``. What the engine would do
over Kafka, the harness does in memory: timers (retries, sleeps, waits' and the run's
timeouts) fire in order of due time on a virtual clock that jumps to each one; waits get
the events given to ``run``; child runs of ``step.invoke`` end with the outputs given.

Every step is its own dispatch (no eager chains), so the handler is replayed from the
top before every step: the strictest test of its determinism.
"""

from __future__ import annotations

import heapq
import inspect
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from schemas.messages import (
    ChildFinished,
    Event,
    HistoryRecord,
    RunMessage,
    RunStarted,
    RunState,
    TimerFired,
    Waiter,
)
from stepstream.clock import virtual_clock
from stepstream.errors import ConfigError
from stepstream.events import TriggerEvent, dumps, run_id_for
from stepstream.execution import execute
from stepstream.function import FunctionDef
from stepstream.progress import StepProgress
from stepstream.replay import ReplayPaths
from stepstream.retry import RetryPolicy
from stepstream.settings import Settings
from stepstream.step import Stub, error_info
from stepstream.testing.mocks import as_body, stub_of
from stepstream.testing.result import RunResult, result_of
from streams.machine import (
    FINAL_STATUSES,
    Command,
    Dispatch,
    Record,
    Schedule,
    StartChild,
    Watch,
    advance,
)
from streams.policy import policy_of
from streams.waiters import fires

EVENT_ID = "test-event"
"""The triggering event's id (so the run id, and ids derived from it, are stable)."""
_LIMITS = Settings()


def function_of(fn: Callable[..., Awaitable[Any]] | FunctionDef) -> FunctionDef:
    """The definition of a registered handler (``@ss.function``), or a plain async
    function as a definition with the default options."""
    if isinstance(fn, FunctionDef):
        return fn
    registered = getattr(fn, "stepstream_function", None)
    if isinstance(registered, FunctionDef):
        return registered
    return FunctionDef(id=getattr(fn, "__name__", "test-function"), handler=fn,
                       retry=RetryPolicy(), trigger="test/event")


async def run(fn: Callable[..., Awaitable[Any]] | FunctionDef,
              data: Mapping[str, Any] | None = None, *, name: str | None = None,
              mocks: Mapping[str, Any] | None = None,
              events: Mapping[str, Mapping[str, Any] | TriggerEvent | None] | None = None,
              invoked: Mapping[str, Any] | None = None,
              now: datetime | None = None) -> RunResult:
    """Run ``fn`` to its end, in process, as the engine would; returns what happened.

    Args:
        fn: a handler registered with ``@ss.function`` (its options apply), its
            ``FunctionDef``, or a plain async handler (default options).
        data: the triggering event's data.
        name: the triggering event's name (default: the function's trigger).
        mocks: step id -> what runs instead of the step's body (``stepstream.testing.mocks``:
            a value, a callable, an exception, or a list of those, one per attempt).
        events: ``wait_for_event`` step id -> the event it gets: its data (a dict) or a
            whole ``TriggerEvent``; None or absent: the wait times out. An event that
            does not meet the wait's ``if_`` condition does not match, as in the engine.
        invoked: function id -> the output of a child run ``step.invoke`` starts: a
            value, a callable (given the child's data), or an exception (the child fails).
        now: when the run starts on the virtual clock, timezone-aware (default: now).

    Flow control (concurrency, throttle, rate limit, debounce, batching), ``cancel_on``
    and ``on_failure`` are the engine's alone: they do not act here.

    Raises:
        ConfigError: the run invokes a function ``invoked`` has no output for, or
            ``now`` has no timezone.
    """
    function = function_of(fn)
    if now is not None and now.tzinfo is None:
        raise ConfigError("run(now=...) needs a timezone-aware datetime")
    start_ms = round((now or datetime.now(UTC)).timestamp() * 1000)
    event = Event(id=EVENT_ID, name=name or function.event_name or "test/event",
                  data_json=dumps(dict(data or {}), limit=_LIMITS.max_payload_bytes,
                                  what="event data"), ts=start_ms)
    return await run_event(function, event, stub=stub_of(mocks or {}), events=events or {},
                           invoked=invoked or {})


async def run_event(function: FunctionDef, event: Event, *, stub: Stub,
                    events: Mapping[str, Mapping[str, Any] | TriggerEvent | None],
                    invoked: Mapping[str, Any]) -> RunResult:
    """The run ``event`` starts, as ``run`` runs it, from the event's time on the virtual
    clock, with ``stub`` in place of step bodies (``run``'s mocks; a shadow backfill's
    recorded outputs, ``streams.shadow``)."""
    harness = _Harness(function, stub=stub, events=events, invoked=invoked,
                       clock_ms=event.ts)
    with virtual_clock(lambda: harness.clock_ms):
        state = await harness.run(RunStarted(run_id=run_id_for(function.id, event.id),
                                             function_id=function.id, event=event,
                                             ts=event.ts))
    return result_of(state, harness.history, harness.sent, harness.progress)


class _Harness:
    """The engine's processors for one run, in memory."""

    def __init__(self, function: FunctionDef, *, stub: Stub,
                 events: Mapping[str, Mapping[str, Any] | TriggerEvent | None],
                 invoked: Mapping[str, Any], clock_ms: int) -> None:
        self.function, self.stub, self.events, self.invoked = function, stub, events, invoked
        self.policy = policy_of(function, max_state_bytes=_LIMITS.run_state_max_bytes)
        self.clock_ms = clock_ms
        self.state: RunState | None = None
        self.inbox: deque[RunMessage] = deque()
        self.timers: list[tuple[int, int, TimerFired]] = []
        self._order = itertools.count()  # timers due at once fire in the order they were set
        self.history: list[HistoryRecord] = []
        self.sent: list[TriggerEvent] = []
        self.progress: list[StepProgress] = []
        self.paths = ReplayPaths()  # its own: runs of other tests cannot interfere

    async def run(self, start: RunStarted) -> RunState:
        self.inbox.append(start)
        while self.state is None or self.state.status not in FINAL_STATUSES:
            if self.inbox:
                await self._apply(self.inbox.popleft())
            elif self.timers:
                due, _, timer = heapq.heappop(self.timers)
                self.clock_ms = max(self.clock_ms, due)  # the time a timer waits, skipped
                self.inbox.append(timer)
            else:
                raise RuntimeError(f"run {start.run_id} waits for nothing: {self.state}")
        return self.state

    async def _apply(self, message: RunMessage) -> None:
        state, commands = advance(self.state, message, self.policy)
        assert state is not None
        self.state = state
        for command in commands:
            await self._perform(state, command)

    async def _perform(self, state: RunState, command: Command) -> None:
        match command:
            case Dispatch(request):
                # As the executor does: the memo and batch come from the run's state.
                self.inbox.append(await execute(
                    self.function, replace(request, memo=state.memo, batch=state.batch),
                    max_output_bytes=_LIMITS.max_payload_bytes, send_events=self._send,
                    paths=self.paths, stub=self.stub, report_progress=self.progress.append))
            case Schedule(_, timer):
                heapq.heappush(self.timers, (timer.ts, next(self._order), timer))
            case Record(record):
                self.history.append(record)
            case Watch(change) if change.active and change.waiter.kind == "step":
                self._deliver(change.waiter)
            case StartChild(start):
                self.inbox.append(await self._child(start))
            # Dead letters, parents, failure events, cancel_on waiters: nothing to do.

    def _deliver(self, waiter: Waiter) -> None:
        """The event given for this wait, if any, arrives as the wait begins."""
        given = self.events.get(waiter.step_id)
        if given is None:
            return  # it times out
        if isinstance(given, TriggerEvent):
            event = Event(id=given.id, name=given.name, ts=given.ts or self.clock_ms,
                          data_json=dumps(given.data, limit=_LIMITS.max_payload_bytes,
                                          what="event data"))
        else:
            event = Event(id=f"{waiter.run_id}:{waiter.step_id}", name=waiter.event_name,
                          ts=self.clock_ms, data_json=dumps(
                              dict(given), limit=_LIMITS.max_payload_bytes,
                              what="event data"))
        matched = fires(waiter, event)
        if matched is not None:
            self.inbox.append(matched)

    async def _child(self, start: RunStarted) -> ChildFinished:
        """The end of a child run: the output ``invoked`` gives for its function."""
        if start.function_id not in self.invoked:
            raise ConfigError(f"step {start.parent_step_id!r} invokes "
                              f"{start.function_id!r}: pass its output in invoked=")
        parent, step_id = start.parent_run_id or "", start.parent_step_id or ""
        finished = ChildFinished(run_id=parent, step_id=step_id, child_run_id=start.run_id,
                                 ts=self.clock_ms)
        try:
            output = as_body(self.invoked[start.function_id])(
                TriggerEvent.from_envelope(start.event).data)
            if inspect.isawaitable(output):
                output = await output
            return replace(finished, output_json=dumps(
                output, limit=_LIMITS.max_payload_bytes, what="invoked output"))
        except Exception as exc:
            return replace(finished, error=error_info(exc))

    async def _send(self, events: list[Event]) -> None:
        self.sent += [TriggerEvent.from_envelope(e) for e in events]
