"""Flow control at the executor: a dispatch runs only once it holds a concurrency slot
of each of its function's limits (and, for a run's first dispatch, a throttle token).

``FlowGate.enter`` answers either a ``Held`` (an async context manager that renews the
slots' leases while the steps run and gives them back at the end) or a
``StepDeferred``, which the executor reports instead of running anything: the state
machine parks the dispatch on a timer in the delay topics and dispatches it again when
the timer fires. Nothing waits in a process's memory. A key or priority expression that
fails answers a ``FunctionFinished`` with the error: the run fails.

Eager chains: the slot is taken for the dispatch, and before each further step of its
chain ``Held.keep`` asks to hold on to it, which succeeds only if no run waits ahead
(by priority and age); otherwise the chain ends, the slot goes back, and the next step
queues like any other dispatch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import replace
from types import TracebackType
from typing import Any

from schemas.messages import ErrorInfo, FunctionFinished, StepDeferred, StepRequest
from stepstream.errors import ExpressionError
from stepstream.function import FunctionDef
from stepstream.options import Concurrency, to_ms
from stepstream.settings import Settings
from stepstream.step import ChainBudget, now_ms
from streams.expression_failures import report
from streams.flow.concurrency import ConcurrencySlots, Limit
from streams.flow.keys import FlowKeys, key_value, queue_score
from streams.flow.throttle import REMEMBER_MS, ThrottleKeys, Throttler
from streams.metrics import Metrics
from streams.redis_client import STORE_ERRORS

log = logging.getLogger("stepstream.flow")



def starts_run(request: StepRequest) -> bool:
    """Whether ``request`` would start its run: no step done, none targeted (the throttle
    counts run starts, not steps)."""
    return not request.memo and request.target is None


class Held:
    """The slots a dispatch holds while it runs (none for a function without limits)."""

    def __init__(self, gate: FlowGate | None = None, function: FunctionDef | None = None,
                 limits: list[Limit] | None = None, holder: str = "", waiter: str = "",
                 score: int = 0) -> None:
        self.gate, self.function = gate, function
        self.limits = limits or []
        self.holder, self.waiter, self.score = holder, waiter, score
        self._renewing: asyncio.Task[None] | None = None

    def budget(self, chain: ChainBudget) -> ChainBudget:
        """The chain budget of this dispatch: ``keep`` guards each further step."""
        return replace(chain, allow=self.keep) if self.limits else chain

    async def keep(self) -> bool:
        """Whether the dispatch may run one more step of its chain on its slots."""
        assert self.gate is not None
        try:
            answer = await self.gate.slots.acquire(self.limits, holder=self.holder,
                                                   waiter=self.waiter, score=self.score,
                                                   keep=True)
        except STORE_ERRORS:
            return False  # hand back to the orchestrator; the next dispatch asks again
        return answer.granted

    async def __aenter__(self) -> Held:
        if self.limits and self.gate is not None and self.function is not None:
            self.gate.metrics.concurrency_in_use.labels(self.function.id).inc()
            self._renewing = asyncio.ensure_future(self._renew())
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._renewing is None or self.gate is None or self.function is None:
            return
        self._renewing.cancel()
        self.gate.metrics.concurrency_in_use.labels(self.function.id).dec()
        try:  # shielded: a cancelled dispatch still gives its slots back
            await asyncio.shield(self.gate.slots.release(self.limits, self.holder))
        except STORE_ERRORS as error:
            log.warning("could not release concurrency slots of %s (they lapse): %s",
                        self.holder, error)

    async def _renew(self) -> None:
        assert self.gate is not None
        every = self.gate.slots.lease_ms / 3000
        warned = False
        while True:
            await asyncio.sleep(every)
            with contextlib.suppress(*STORE_ERRORS):
                lost = await self.gate.slots.renew(self.limits, self.holder)
                if lost and not warned:
                    warned = True
                    log.warning("the concurrency lease of %s lapsed while its step ran "
                                "(event loop blocked longer than the lease?)", self.holder)


NOT_HELD = Held()


class FlowGate:
    """Concurrency and throttle checks of the executor, for one worker."""

    def __init__(self, redis: Any, settings: Settings, metrics: Metrics) -> None:
        self.keys = FlowKeys(settings.namespace)
        self.metrics = metrics
        self.poll_ms = settings.flow_poll_ms
        self.slots = ConcurrencySlots(redis, lease_ms=settings.concurrency_lease_ms,
                                      poll_ms=settings.flow_poll_ms)
        self.throttler = Throttler(redis)

    async def enter(self, function: FunctionDef, request: StepRequest
                    ) -> Held | StepDeferred | FunctionFinished:
        """Take what ``request`` needs to run now, or say when to try again."""
        flow = function.flow
        throttled = flow.throttle is not None and starts_run(request)
        if not flow.concurrency and not throttled:
            return NOT_HELD
        try:
            return await self._enter(function, request, throttled)
        except STORE_ERRORS as error:
            log.warning("flow control of %s waits for Redis: %s", function.id, error)
            return self._defer(function, request, now_ms() + self.poll_ms,
                               "flow-control store unavailable", "unavailable")
        except ExpressionError as error:
            # The run has no key (or priority): limiting it under a made-up one ("")
            # would silently share another key's limit, and every attempt computes the
            # same error from the same event. The run fails, naming the expression.
            report(self.metrics, function.id, "key", error)
            return FunctionFinished(run_id=request.run_id, seq=request.seq, ts=now_ms(),
                                    error=ErrorInfo(type=type(error).__name__,
                                                    message=str(error)))

    async def _enter(self, function: FunctionDef, request: StepRequest,
                     throttled: bool) -> Held | StepDeferred:
        flow = function.flow
        score = queue_score(request.event, flow.priority.run if flow.priority else None)
        limits = [self._limit(function.id, i, c, request) for i, c in enumerate(flow.concurrency)]
        throttle_key = key_value(flow.throttle.key, request.event) if throttled and \
            flow.throttle is not None else ""  # every key before any slot is taken
        holder = f"{request.run_id}:{request.seq}"
        waiter = f"{request.run_id}:{request.target or ''}"
        if limits:
            slot = await self.slots.acquire(limits, holder=holder, waiter=waiter, score=score)
            if not slot.granted:
                jitter = random.randint(0, self.poll_ms // 4)  # spreads the re-checks
                return self._defer(function, request, slot.retry_at + jitter,
                                   "waiting for a concurrency slot", "concurrency")
        if throttled and flow.throttle is not None:
            throttle = flow.throttle
            turn = await self.throttler.admit(
                ThrottleKeys(*(self.keys.of(function.id, "throttle", throttle_key, part)
                               for part in ("tat", "waiting", "wexp", "admitted"))),
                interval_ms=to_ms(throttle.period) // throttle.limit, burst=throttle.burst,
                run_id=request.run_id, score=score,
                remember_ms=max(REMEMBER_MS, to_ms(throttle.period)))
            if not turn.granted:
                if limits:
                    await self.slots.release(limits, holder)
                if turn.queued:
                    self.metrics.runs_throttled.labels(function.id).inc()
                return self._defer(function, request, turn.retry_at,
                                   "throttled: waiting for its turn to start", "throttle")
        return Held(self, function, limits, holder, waiter, score)

    def _limit(self, function_id: str, index: int, limit: Concurrency,
               request: StepRequest) -> Limit:
        value = key_value(limit.key, request.event)

        def of(part: str) -> str:
            return self.keys.of(function_id, f"c{index}", value, part)

        return Limit(limit=limit.limit, holders=of("holders"), waiting=of("waiting"),
                     wexp=of("wexp"))

    def _defer(self, function: FunctionDef, request: StepRequest, retry_at: int, reason: str,
               label: str) -> StepDeferred:
        self.metrics.flow_deferred.labels(function.id, label).inc()
        return StepDeferred(run_id=request.run_id, seq=request.seq, ts=now_ms(),
                            retry_at=retry_at, reason=reason)
