"""The executor: runs the step a request asks for (or an eager chain of steps) and
reports the outcome to the runs topic (DESIGN §4).

A step never runs inside an open transaction: its request is *held* (the steps
partition's committed offset stays at or below it) while the step runs, up to
``executor_concurrency`` at a time, and its outcome is committed together with the
request's offset in a later transaction of the task. A crash before that commit runs
the step again on the partition's next owner; a crash after it does not. For an eager
chain, the request is released with the chain's first link: from then on the run's
state holds the chain's progress and a lease, so a crash re-dispatches from the last
step applied instead of replaying the whole chain. The chain's next step body waits for
that commit; its end does not.

Before each commit the runtime lets the dispatches started (or let go by the last
commit) end or reach such a wait, for up to ``SETTLE_S`` when the worker is not busy
(``settle``): a quick step's outcome then shares its request's transaction.

A request the orchestrator of the same task just sent is handed over at once
(``streams.kafka.local``) when a slot is free. Its copy read back from the topic is then
held until the outcome is committed, or, if that happened first, passes; a copy whose
run no longer awaits it (the outcome was applied) is not run again.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from schemas.messages import (
    ChainAlive,
    Event,
    FunctionFinished,
    StepCompleted,
    StepDeferred,
    StepFailed,
    StepRequest,
)
from stepstream.client import Stepstream
from stepstream.execution import execute
from stepstream.progress import ReportProgress
from stepstream.step import ChainBudget, GoAhead
from streams.chain_heartbeat import ChainHeartbeat
from streams.flow.gate import FlowGate
from streams.kafka.local import is_local
from streams.kafka.task import Fenced, Task
from streams.pauses import FUNCTIONS, until_paused
from streams.processors.orchestrator import RUNS, unknown_function_finished
from streams.processors.outputs import Outputs, by_run_id

log = logging.getLogger("stepstream.executor")

SendEvents = Callable[[list[Event]], Awaitable[None]]
Backpressure = Callable[[bool], None]
"""Told True when requests queue up (stop reading steps), False when they drain."""


@dataclass(eq=False)
class _Claim:
    """A request being run, and its record in the steps topic that it holds until its
    outcome (or an eager chain's first link) is committed."""

    task: Task
    request: StepRequest
    topic: str
    offset: int | None
    """None while only the local hand-over is known (its copy is not read back yet)."""
    released: bool = False
    paused: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while its dispatch waits for a commit, and once it has ended."""

    def release(self) -> tuple[str, int] | None:
        """The record to release with the outcome about to be sent (once)."""
        if self.released:
            return None
        self.released = True
        return None if self.offset is None else (self.topic, self.offset)


class Executor:
    """Processes ``{namespace}.steps``: up to ``concurrency`` requests run at once."""

    def __init__(self, outputs: Outputs, ss: Stepstream, flow: FlowGate, chain: ChainBudget,
                 *, send_events: SendEvents, backpressure: Backpressure,
                 report_progress: ReportProgress | None = None) -> None:
        self.outputs, self.ss, self.flow, self.chain = outputs, ss, flow, chain
        self.report_progress = report_progress  # ctx.progress: advisory, outside transactions
        self.settings, self.codec, self.metrics = outputs.settings, outputs.codec, outputs.metrics
        self.send_events, self.backpressure = send_events, backpressure
        self.concurrency = self.settings.executor_concurrency
        self._waiting: collections.deque[_Claim] = collections.deque()
        self._local: dict[tuple[str, int], _Claim] = {}
        """Requests handed over locally whose copy is not read back yet, by (run, seq)."""
        self._running: dict[asyncio.Task[None], _Claim] = {}
        self._started: list[_Claim] = []  # since the last ``settle``
        self._paused = False

    def __len__(self) -> int:
        """Requests running or waiting for a slot."""
        return len(self._running) + len(self._waiting)

    async def process(self, task: Task, message: Any) -> None:
        request = self.outputs.decoded(task, message, StepRequest, owner=by_run_id)
        if request is None:
            return
        key, topic = (request.run_id, request.seq), message.topic()
        if is_local(message):
            if len(self) < self.concurrency:  # else it runs once read back
                self._local[key] = _Claim(task, request, topic, None)
                self._queue(self._local[key])
            return
        claim = self._local.pop(key, None)
        if claim is not None and claim.task is task:
            if not claim.released:  # still running: its outcome releases this record
                claim.offset = message.offset()
                task.hold(topic, message.offset())
            return
        if not _awaited(task, request):
            log.debug("step request %s of %s at %s[%d]@%d is answered already",
                      request.seq, request.run_id, topic, message.partition(),
                      message.offset())
            return
        task.hold(topic, message.offset())
        self._queue(_Claim(task, request, topic, message.offset()))

    def _queue(self, claim: _Claim) -> None:
        self._waiting.append(claim)
        self._start_waiting()

    def _start_waiting(self) -> None:
        while self._waiting and len(self._running) < self.concurrency:
            claim = self._waiting.popleft()
            if not claim.task.live:
                continue  # revoked while it waited: its next owner runs it
            running = asyncio.ensure_future(self._dispatch(claim))
            self._running[running] = claim
            self._resumed(claim)
            running.add_done_callback(self._done)
        paused = len(self._waiting) >= self.concurrency
        if paused != self._paused:
            self._paused = paused
            self.backpressure(paused)

    def _resumed(self, claim: _Claim) -> None:
        claim.paused.clear()
        self._started.append(claim)

    async def settle(self, within_s: float) -> None:
        """Give the dispatches started (or resumed) since the last call up to
        ``within_s`` to end or to wait for a commit: a quick step's outcome then goes
        out in the transaction that writes its request, which saves a transaction per
        step when the worker is not busy (the runtime asks only then)."""
        await asyncio.sleep(0)  # dispatches the last commit let go on resume
        started, self._started = self._started, []
        if within_s <= 0:
            return
        waits = [asyncio.ensure_future(claim.paused.wait())
                 for claim in started if not claim.paused.is_set()]
        if waits:
            _, late = await asyncio.wait(waits, timeout=within_s)
            for wait in late:
                wait.cancel()

    def task_ended(self, task: Task) -> None:
        """Its partitions went to another worker: what waits for it is theirs to run. With
        ``chain_takeover``, what runs is cancelled too (its outcome could not be committed
        any more; the next owner re-dispatches it at once, see ``Engine._take_over_chains``)."""
        self._waiting = collections.deque(c for c in self._waiting if c.task is not task)
        self._local = {key: c for key, c in self._local.items() if c.task is not task}
        if self.settings.chain_takeover:
            for running, claim in list(self._running.items()):
                if claim.task is task:
                    running.cancel()
        self._start_waiting()

    def _done(self, running: asyncio.Task[None]) -> None:
        self._running.pop(running, None)
        self._start_waiting()
        if running.cancelled():
            return
        exc = running.exception()
        if isinstance(exc, Fenced):
            log.info("a step's outcome was not committed (%s); the partition's next owner "
                     "runs it again", exc)
        elif exc is not None:
            log.error("executor dispatch crashed", exc_info=exc)

    async def _dispatch(self, claim: _Claim) -> None:
        try:
            await self._run(claim)
        finally:
            claim.paused.set()

    async def _run(self, claim: _Claim) -> None:
        task, request = claim.task, _with_state(claim.task, claim.request)
        out, run_id = self.outputs, request.run_id
        function = self.ss.functions.get(request.function_id)
        if function is None:
            await task.send_later([out.to("runs", run_id, unknown_function_finished(
                request, self.ss.app_id))], release=claim.release())
            return

        async def beat(alive: ChainAlive) -> Awaitable[None]:
            return task.send_later([out.to("runs", run_id, alive)])

        heartbeat = ChainHeartbeat(beat, run_id, request.seq,
                                   self.settings.chain_lease_ms / 3000)

        async def progress(link: StepCompleted) -> GoAhead | None:
            self._count_attempt(request.function_id, link)
            heartbeat.advanced(link.chain + 1)
            first = not claim.released
            committed = task.send_later([out.to("runs", run_id, link)],
                                        release=claim.release())

            async def after_commit() -> None:
                claim.paused.set()
                await committed
                self._resumed(claim)

            # The chain runs its next step's body once its first link is committed (a
            # crash before re-runs only that step); its end, or a sleep or wait it
            # plans, may share the first link's transaction.
            return after_commit if first else None

        held = await self.flow.enter(function, request)  # concurrency slots, throttle
        if isinstance(held, StepDeferred | FunctionFinished):
            await task.send_later([out.to("runs", run_id, held)], release=claim.release())
            return
        async with held, heartbeat:
            outcome = await execute(function, request,
                                    max_output_bytes=self.settings.max_payload_bytes,
                                    send_events=self.send_events,
                                    chain=until_paused(held.budget(self.chain),
                                                       task.stores[FUNCTIONS],
                                                       request.function_id),
                                    on_progress=progress,
                                    report_progress=self.report_progress)
        self._count_attempt(request.function_id, outcome)
        await task.send_later([out.to("runs", run_id, outcome)], release=claim.release())

    def _count_attempt(self, function_id: str, outcome: Any) -> None:
        if not isinstance(outcome, StepCompleted | StepFailed):
            return
        ok = isinstance(outcome, StepCompleted)
        step = self.metrics.step(function_id, outcome.step_id)
        self.metrics.step_attempts.labels(function_id, step,
                                          "completed" if ok else "failed").inc()
        self.metrics.step_duration.labels(function_id, step).observe(
            (outcome.ended_at - outcome.started_at) / 1000)

    async def stop(self) -> None:
        """Cancel what runs (the worker stops; the partitions' next owners run it)."""
        self._waiting.clear()
        for running in list(self._running):
            running.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)


def _with_state(task: Task, request: StepRequest) -> StepRequest:
    """``request`` with its run's memo and batch as they are now (a request carries
    neither: its run's state is in the same task)."""
    state = task.stores[RUNS].get(request.run_id.encode()) if RUNS in task.stores else None
    if state is None:
        return request  # a request of the older layout carries them
    return replace(request, memo=state.memo, batch=state.batch)


def _awaited(task: Task, request: StepRequest) -> bool:
    """Whether the run still waits for ``request``'s answer: a request read back after
    its outcome was applied (a local hand-over, a crash after the commit) is not run
    again, nor one whose eager chain is under a lease (that re-dispatches it)."""
    state = task.stores[RUNS].get(request.run_id.encode()) if RUNS in task.stores else None
    if state is None:
        return True  # no state to tell: run it (the orchestrator ignores a stale answer)
    dispatched = state.dispatched.get(str(request.seq))
    return dispatched is not None and dispatched.chain == 0
