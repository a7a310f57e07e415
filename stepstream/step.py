"""The step toolkit a handler calls: ``run``, ``sleep``, ``sleep_until``,
``wait_for_event``, ``invoke`` and ``send_event``.

Deterministic replay (DESIGN §2): the handler runs from the top on every
dispatch. A step whose id is in the memo returns its saved output at once. The
first new steps are *discovered*: the toolkit lets the event loop turn a few
times so that steps started together (``asyncio.gather``) are all found, then
either runs the single new ``step.run`` right here, or reports every discovered
step to the orchestrator (``StepPlanned``) to run in parallel or to schedule. The
outcome is raised as a ``StepInterrupt``, a ``BaseException``, so that a user's
``except Exception`` cannot swallow it.

A dispatch with a ``target`` (a parallel or retried step) runs exactly that step;
other new steps it meets wait until the target's outcome ends the dispatch.
"""

from __future__ import annotations

import asyncio
import enum
import json
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar, TypeVarTuple

from schemas.messages import (
    ErrorInfo,
    Event,
    MemoEntry,
    PlannedStep,
    StepCompleted,
    StepFailed,
    StepPlanned,
    StepRequest,
)
from stepstream.clock import now_ms as now_ms  # re-exported: the engine imports it here
from stepstream.errors import (
    ConfigError,
    NondeterminismError,
    NonRetriableError,
    RetryAfterError,
    SerializationError,
    StepError,
)
from stepstream.events import dumps, make_event
from stepstream.expressions import compile_condition
from stepstream.logs import current_step, in_step, memo_returned, replayed_here
from stepstream.options import to_ms
from stepstream.patching import at_frontier, is_reserved, patch_marker
from stepstream.progress import ReportProgress, StepProgress, checked
from stepstream.topic_trigger import TopicTrigger, event_name

T = TypeVar("T")
Ts = TypeVarTuple("Ts")
SendEvents = Callable[[list[Event]], Awaitable[None]]
GoAhead = Callable[[], Awaitable[None]]
Progress = Callable[[StepCompleted], Awaitable[GoAhead | None]]
"""Told each step an eager chain completes; what it returns (if anything) is awaited
before the chain runs its next step's body (the executor: the first link's commit)."""
Stub = Callable[[str, int, Callable[..., Any]], Callable[..., Any]]
"""Given a step's id, its attempt and its body, the body to run instead
(``stepstream.testing``'s mocks, a shadow backfill's recorded outputs; the engine has
none). The body of a step declared ``side_effect=True`` comes as a ``SideEffect``."""


class Unset(enum.Enum):
    """``stand_in`` not given."""

    UNSET = "unset"


@dataclass(frozen=True, slots=True)
class SideEffect:
    """The body of a ``step.run(..., side_effect=True)``, as a ``Stub`` is given it: a
    step whose effect leaves the run (an email, a payment), which a shadow run
    (``stepstream backfill --shadow``) does not run. Called, it runs the body."""

    body: Callable[..., Any]
    stand_in: Any
    """What a shadow run returns for it when the live run recorded no output;
    ``Unset.UNSET``: none declared."""

    def __call__(self, *args: Any) -> Any:
        return self.body(*args)


@dataclass(frozen=True, slots=True)
class ChainBudget:
    """How far one dispatch may run steps eagerly before handing back to the orchestrator."""

    max_steps: int = 100
    max_ms: int = 2000
    allow: Callable[[], Awaitable[bool]] | None = None
    """Asked before each further step of a chain; False ends the chain there (flow
    control: the dispatch keeps its concurrency slot only while no one waits ahead)."""

ParentCancel = Literal["cancel", "abandon"]
"""What ``step.invoke`` does with its child when the parent stops waiting for it."""

_DISCOVERY_TICKS = 4
"""Loop turns to wait for sibling steps; covers gather() and a few awaits before a step."""


class StepInterrupt(BaseException):
    """The dispatch has its outcome; the handler must stop and report it."""

    def __init__(self, outcome: StepCompleted | StepFailed | StepPlanned) -> None:
        super().__init__(type(outcome).__name__)
        self.outcome = outcome


def error_info(exc: BaseException) -> ErrorInfo:
    """An exception as it will be stored and shown."""
    return ErrorInfo(type=type(exc).__name__, message=str(exc),
                     traceback="".join(traceback.format_exception(exc)))


def function_id_of(function: str | Callable[..., Any]) -> str:
    """The id of a registered function, given the id or the handler itself."""
    if isinstance(function, str):
        return function
    registered = getattr(function, "stepstream_function_id", None)
    if registered is None:
        raise ConfigError(f"{function!r} is not a registered stepstream function")
    return str(registered)


class Step:
    """The step toolkit of one dispatch of one run."""

    def __init__(self, request: StepRequest, *, max_output_bytes: int,
                 send_events: SendEvents | None = None, chain: ChainBudget | None = None,
                 on_progress: Progress | None = None, expected_path: Sequence[str] = (),
                 stub: Stub | None = None, report_progress: ReportProgress | None = None
                 ) -> None:
        self._request = request
        self._report_progress = report_progress
        self._stub = stub
        self._expected_path = tuple(expected_path)
        self.path: list[str] = []
        """Step ids the handler asked for, in order (see ``stepstream.replay``)."""
        self.diverged: NondeterminismError | None = None
        self._memo: dict[str, MemoEntry] = dict(request.memo)
        self._chain_budget = chain if request.target is None else None
        self._on_progress = on_progress
        self._before_next_body: GoAhead | None = None
        self._started = time.monotonic()
        self.chain = 0
        """Position of the next outcome in this dispatch's eager chain."""
        self._max_output_bytes = max_output_bytes
        self._send_events = send_events
        self._seen: dict[str, int] = {}
        self._discovered: list[PlannedStep] = []
        self._gate: asyncio.Future[str] | None = None
        self._target_started = False
        self._target: asyncio.Future[StepCompleted | StepFailed] | None = None

    # --- the toolkit ------------------------------------------------------------------

    async def run(self, step_id: str, fn: Callable[[*Ts], Awaitable[T] | T], *args: *Ts,
                  retries: int | None = None, side_effect: bool = False,
                  stand_in: T | Literal[Unset.UNSET] = Unset.UNSET) -> T:
        """Run ``fn(*args)`` as a durable step, or return its saved output.

        Args:
            step_id: unique within the run and stable across deploys; the memo key.
            fn: sync or async callable; its return value must be JSON-serializable.
            *args: JSON-serializable arguments.
            retries: this step's retries, overriding the function's.
            side_effect: the step acts outside the run (sends, pays, writes elsewhere):
                a shadow backfill (``stepstream backfill --shadow``) does not run it and
                takes the output the live run recorded, else ``stand_in``. No effect on
                a worker, where every step runs.
            stand_in: a side-effect step's output in a shadow run that has no recorded
                one (the event had no live run, or it did not get this far).

        Returns:
            The step's output, as JSON round-tripped (tuples come back as lists).

        Raises:
            StepError: the step failed for good, after its retries.
        """
        unique = self._unique_id(step_id)
        if unique in self._memo:
            return self._saved(unique)  # type: ignore[no-any-return]
        # Marked only for a stub to see (a worker has none): live, the body just runs.
        body: Callable[..., Any] = SideEffect(fn, stand_in) \
            if side_effect and self._stub is not None else fn
        if unique == self._request.target:
            raise StepInterrupt(await self._run_target(unique, body, args, retries))
        await self._discover(PlannedStep(step_id=unique, kind="run"))
        outcome = await self._execute(unique, body, args, retries)
        if isinstance(outcome, StepCompleted) and self._may_chain() and await self._allowed():
            return await self._chain_on(outcome)  # type: ignore[no-any-return]
        raise StepInterrupt(outcome)

    def _may_chain(self) -> bool:
        budget = self._chain_budget
        return (budget is not None and self._on_progress is not None
                and self.chain + 1 < budget.max_steps
                and (time.monotonic() - self._started) * 1000 < budget.max_ms)

    async def _allowed(self) -> bool:
        allow = self._chain_budget.allow if self._chain_budget is not None else None
        return allow is None or await allow()

    async def _chain_on(self, outcome: StepCompleted) -> Any:
        """Eager execution: report the step and let the handler go on to the next one."""
        assert self._on_progress is not None
        self._before_next_body = await self._on_progress(replace(outcome, more=True))
        self._memo[outcome.step_id] = MemoEntry(output_json=outcome.output_json)
        self.chain += 1
        self._gate, self._discovered = None, []  # the next step starts a new discovery
        return json.loads(outcome.output_json)

    async def sleep(self, step_id: str, duration: timedelta | float) -> None:
        """Pause the run for ``duration`` (a timedelta or seconds); no worker is busy."""
        await self._durable(step_id, lambda unique: PlannedStep(
            step_id=unique, kind="sleep", until_ms=now_ms() + to_ms(duration)))

    async def sleep_until(self, step_id: str, when: datetime) -> None:
        """Pause the run until ``when`` (timezone-aware)."""
        if when.tzinfo is None:
            raise ConfigError("sleep_until needs a timezone-aware datetime")
        until = round(when.timestamp() * 1000)
        await self._durable(step_id, lambda unique: PlannedStep(
            step_id=unique, kind="sleep", until_ms=until))

    async def wait_for_event(self, step_id: str, *, event: str | TopicTrigger,
                             timeout: timedelta | float, if_: str | None = None
                             ) -> dict[str, Any] | None:
        """Wait for an event named ``event``; returns it, or None after ``timeout``.

        ``event`` may be a ``TopicTrigger``: a record of that topic (the worker reads the
        topics a handler names in a ``TopicTrigger``, ``stepstream.topic_trigger``).
        In ``if_`` (CEL), ``event`` is the run's triggering event and ``async`` the
        incoming one. Only events that arrive after the wait began can match.
        """
        if if_ is not None:
            compile_condition(if_)  # reject a bad expression before anything waits on it
        result = await self._durable(step_id, lambda unique: PlannedStep(
            step_id=unique, kind="wait", event=event_name(event), condition=if_,
            until_ms=now_ms() + to_ms(timeout)))
        return result  # type: ignore[no-any-return]

    async def invoke(self, step_id: str, *, function: str | Callable[..., Any],
                     data: dict[str, Any] | None = None, timeout: timedelta | None = None,
                     on_parent_cancel: ParentCancel = "cancel") -> Any:
        """Run another function as a child run and return its output.

        Args:
            timeout: the step fails (``StepError`` of type ``InvokeTimeout``) if the child
                has not ended by then; None: wait as long as the child runs.
            on_parent_cancel: what happens to the child when this run stops waiting for
                it (this run is cancelled or otherwise ends first, or ``timeout`` passes):
                ``cancel`` it (the default), or ``abandon`` it to run on by itself.

        Raises:
            StepError: the child run failed or was cancelled, or the timeout passed.
        """
        if on_parent_cancel not in ("cancel", "abandon"):
            raise ConfigError(f"on_parent_cancel={on_parent_cancel!r}: expected 'cancel' or "
                              "'abandon'")
        target = function_id_of(function)
        data_json = dumps(data or {}, limit=self._max_output_bytes, what="invoke data")
        timeout_ms = None if timeout is None else to_ms(timeout)
        return await self._durable(step_id, lambda unique: PlannedStep(
            step_id=unique, kind="invoke", function_id=target, data_json=data_json,
            on_parent_cancel="abandon" if on_parent_cancel == "abandon" else None,
            timeout_ms=timeout_ms))

    async def send_event(self, step_id: str,
                         events: dict[str, Any] | Sequence[dict[str, Any]]) -> list[str]:
        """Send events once per run (a memoized step); returns their ids.

        Each event is ``{"name": ..., "data": {...}, "id": optional}``. Without an id, the
        id derives from the run and the step, so a step that runs twice sends the same
        events and starts no function twice.
        """
        batch = [events] if isinstance(events, dict) else list(events)
        # The id run() will give this step: a repeated step id sends new events.
        count = self._seen.get(step_id, 0)
        unique = step_id if count == 0 else f"{step_id}:{count}"

        async def send() -> list[str]:
            if self._send_events is None:
                raise ConfigError("send_event needs a worker (no producer here)")
            built = [make_event(e["name"], e.get("data"), ts=now_ms(),
                                id=e.get("id") or f"{self._request.run_id}:{unique}:{i}",
                                limit=self._max_output_bytes) for i, e in enumerate(batch)]
            await self._send_events(built)
            return [e.id for e in built]

        return await self.run(step_id, send)

    # --- progress (stepstream.progress) -----------------------------------------------

    def progress(self, fraction: float, message: str = "") -> None:
        """Report how far the running step is (``Context.progress``)."""
        fraction, message = checked(fraction, message)
        if self._report_progress is None or replayed_here():
            return  # no one listens, or an earlier dispatch ran this code and said it
        request = self._request
        self._report_progress(StepProgress(
            run_id=request.run_id, step_id=current_step(), attempt=request.attempt,
            fraction=fraction, message=message, ts=now_ms()))

    # --- versioning (stepstream.patching) ---------------------------------------------

    def patched(self, patch_id: str) -> bool:
        """Whether this run takes the code path of ``patch_id`` (``Context.patched``)."""
        marker = patch_marker(patch_id)
        if marker in self._memo:
            return True
        if not at_frontier(self._memo, self.path, self._request.target):
            return False
        raise StepInterrupt(self._marked(marker))

    def deprecate_patch(self, patch_id: str) -> None:
        """Record ``patch_id`` as taken, if this run reaches it first (``Context``)."""
        if patch_marker(patch_id) not in self._memo:
            self.patched(patch_id)

    def _marked(self, marker: str) -> StepCompleted:
        """The dispatch's outcome that saves a patch decision in the memo."""
        now = now_ms()
        return StepCompleted(run_id=self._request.run_id, seq=self._request.seq,
                             step_id=marker, attempt=self._request.attempt,
                             output_json="true", started_at=now, ended_at=now,
                             chain=self.chain)

    # --- discovery --------------------------------------------------------------------

    async def _durable(self, step_id: str,
                       plan: Callable[[str], PlannedStep]) -> Any:
        """A step the orchestrator carries out: its saved value, or plan it."""
        unique = self._unique_id(step_id)
        if unique in self._memo:
            return self._saved(unique)
        await self._discover(plan(unique))
        raise NondeterminismError(f"step {unique!r} cannot run inside an executor")

    async def _discover(self, planned: PlannedStep) -> None:
        """Register a new step; returns only if it is to run here and now."""
        self._discovered.append(planned)
        if self._gate is None:
            self._gate = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().create_task(self._decide())
        chosen = await asyncio.shield(self._gate)
        if chosen != planned.step_id:
            await asyncio.get_running_loop().create_future()  # never: the chosen step ends it

    async def _decide(self) -> None:
        for _ in range(_DISCOVERY_TICKS):
            await asyncio.sleep(0)
        assert self._gate is not None
        if self._gate.done():
            return
        request, found = self._request, self._discovered
        if request.target is not None:
            if not self._target_started:
                self._gate.set_exception(NondeterminismError(
                    f"step {request.target!r} was not reached on replay; the handler "
                    f"waits on {[p.step_id for p in found]} instead"))
            return
        if len(found) == 1 and found[0].kind == "run":
            self._gate.set_result(found[0].step_id)  # one step: run it right here
            return
        self._gate.set_exception(StepInterrupt(StepPlanned(
            run_id=request.run_id, seq=request.seq, ts=now_ms(), steps=list(found),
            chain=self.chain)))

    async def _run_target(self, step_id: str, fn: Callable[..., Any], args: tuple[Any, ...],
                          retries: int | None) -> StepCompleted | StepFailed:
        self._target_started = True
        self._target = asyncio.get_running_loop().create_future()
        try:
            outcome = await self._execute(step_id, fn, args, retries)
        except BaseException:
            self._target.cancel()
            raise
        self._target.set_result(outcome)
        return outcome

    async def target_outcome(self) -> StepCompleted | StepFailed | None:
        """The targeted step's outcome, once it is known; None if it never ran to the end.

        The handler can end before its target does: in ``gather(a, b)`` with ``b``
        targeted, ``a``'s saved StepError reaches the handler first. The dispatch
        still answers for ``b``; the handler's own end is decided when it is replayed
        with every parallel step done, so it does not depend on which answered first.
        """
        if self._target is None:
            return None
        await asyncio.wait([self._target])
        return None if self._target.cancelled() else self._target.result()

    def close(self) -> None:
        """Release steps still waiting on discovery once the dispatch has its outcome."""
        if self._gate is not None and not self._gate.done():
            self._gate.cancel()

    # --- helpers ----------------------------------------------------------------------

    def _unique_id(self, step_id: str) -> str:
        if not step_id:
            raise ValueError("a step needs a non-empty id")
        if is_reserved(step_id):
            raise ValueError(f"step id {step_id!r}: ids starting with '$' are reserved")
        # Repeated ids in one run get ":1", ":2" suffixes, as Inngest does, so a step
        # called in a loop is memoized per iteration.
        count = self._seen.get(step_id, 0)
        self._seen[step_id] = count + 1
        unique = step_id if count == 0 else f"{step_id}:{count}"
        position = len(self.path)
        self.path.append(unique)
        if position < len(self._expected_path) and self._expected_path[position] != unique:
            # An earlier dispatch of this run, on this process, asked for another step
            # here: the handler is not deterministic (see stepstream.replay).
            self.diverged = NondeterminismError(
                f"step {unique!r} was called where an earlier dispatch of this run called "
                f"{self._expected_path[position]!r} (steps so far: {self.path[:-1]}): the "
                "handler calls its steps in another order on replay; code outside steps "
                "must be deterministic")
            raise self.diverged
        return unique

    def _saved(self, step_id: str) -> Any:
        memo_returned()  # the handler's lines are replays until the memo is used up
        saved = self._memo[step_id]
        if saved.error is not None:
            raise StepError(step_id, saved.error.type, saved.error.message,
                            saved.error.traceback)
        return json.loads(saved.output_json or "null")

    async def _execute(self, step_id: str, fn: Callable[..., Any], args: tuple[Any, ...],
                       retries: int | None) -> StepCompleted | StepFailed:
        if self._before_next_body is not None:
            before, self._before_next_body = self._before_next_body, None
            await before()
        request, started = self._request, now_ms()
        try:
            body = fn if self._stub is None else self._stub(step_id, request.attempt, fn)
            result = await in_step(step_id, body, args)  # its log lines carry its id
            output = dumps(result, limit=self._max_output_bytes,
                           what=f"output of step {step_id!r}")
        except Exception as exc:
            retry_after = None
            if isinstance(exc, RetryAfterError):
                retry_after = int(exc.delay.total_seconds() * 1000)
            retriable = not isinstance(exc, NonRetriableError | SerializationError)
            return StepFailed(run_id=request.run_id, seq=request.seq, step_id=step_id,
                              attempt=request.attempt, error=error_info(exc),
                              retriable=retriable, started_at=started, ended_at=now_ms(),
                              retry_after_ms=retry_after, retries=retries,
                              chain=self.chain)
        return StepCompleted(run_id=request.run_id, seq=request.seq, step_id=step_id,
                             attempt=request.attempt, output_json=output,
                             started_at=started, ended_at=now_ms(), chain=self.chain)
