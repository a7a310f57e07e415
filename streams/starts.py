"""Which runs an event starts, and the policy each run follows (cron ticks:
``streams.schedules``)."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import redis.asyncio as aioredis

from schemas.messages import ErrorInfo, Event, FlowTimer, RunStarted
from stepstream.client import Stepstream
from stepstream.errors import ExpressionError
from stepstream.events import run_id_for
from stepstream.expressions import evaluate, matches, size_of
from stepstream.function import FunctionDef
from stepstream.step import now_ms
from streams.backoff import until_done
from streams.expression_failures import report
from streams.flow.trigger import Decision, FlowTrigger, never_ran
from streams.metrics import Metrics
from streams.redis_client import STORE_ERRORS
from streams.waiters import event_context

log = logging.getLogger("stepstream.starts")

IDEMPOTENCY_TTL_S = 24 * 3600


class Starter:
    """Turns events into ``RunStarted`` messages."""

    def __init__(self, ss: Stepstream, redis: aioredis.Redis, metrics: Metrics) -> None:
        self.redis = redis
        self.metrics = metrics
        self.namespace = ss.settings.namespace
        self.by_trigger: dict[str, list[FunctionDef]] = {}
        for function in ss.functions.values():
            if function.trigger is not None:
                self.by_trigger.setdefault(function.trigger, []).append(function)
        self.functions = ss.functions
        self._flow: FlowTrigger | None = None

    @property
    def flow(self) -> FlowTrigger:
        """Rate limits, debounce and batching (made when a function first needs them)."""
        if self._flow is None:
            self._flow = FlowTrigger(self.redis, self.namespace, self.metrics)
        return self._flow

    async def starts_for(self, event: Event) -> list[RunStarted]:
        """The runs ``event`` starts now (the same event always maps to the same run ids)."""
        return (await self.decide(event)).starts

    async def decide(self, event: Event, *, source: tuple[FunctionDef, dict[str, Any]]
                     | None = None, only: str | None = None) -> Decision:
        """What ``event`` starts now, later (flow-control timers), or drops (rate limits).

        ``source``: the event is a topic's record, for this function only; its
        conditions also see the record as ``record`` (``stepstream.topic_trigger``).
        ``only``: of the functions the event triggers, only this one (a backfill's)."""
        decision = Decision()
        functions = self.by_trigger.get(event.name) if source is None else [source[0]]
        if only is not None:
            functions = [f for f in functions or () if f.id == only]
        if not functions:
            return decision
        context: dict[str, Any] = {"event": event_context(event)}
        size = size_of(event.data_json)
        if source is not None:
            context["record"] = source[1]
            size *= 2  # the value is there twice: event.data and record.value
        for function in functions:
            try:
                if not matches(function.trigger_if, context, size):
                    continue
            except ExpressionError as error:
                report(self.metrics, function.id, "filter", error)
                continue  # as if it did not match: the event may be for other functions
            run_id = run_id_for(function.id, event.id)
            try:
                decision.extend(await self._start(function, event, context, run_id))
            except ExpressionError as error:
                # No key for this run: deduplicating or limiting it under a made-up one
                # ("" or none) would silently break what the option promises, and the
                # same event fails the same way on every delivery. The run fails at once,
                # the expression and its error in its history; the event's other
                # functions start as usual.
                report(self.metrics, function.id, "key", error)
                decision.records += never_ran(function.id, event, run_id, "failed", ErrorInfo(
                    type=type(error).__name__, message=str(error)))
        return decision

    async def _start(self, function: FunctionDef, event: Event, context: dict[str, Any],
                     run_id: str) -> Decision:
        """What ``event`` does for ``function``, whose filter it matched."""
        if function.idempotency is not None and not await self._claim(
                function, evaluate(function.idempotency, context, size_of(event.data_json)),
                run_id):
            self.metrics.events_received.labels("idempotent_skip").inc()
            return Decision()
        if function.flow.at_trigger:
            return await until_done(
                functools.partial(self.flow.admit, function, event, run_id),
                what=f"flow control of {function.id}", errors=STORE_ERRORS)
        return Decision(starts=[RunStarted(run_id=run_id, function_id=function.id, event=event,
                                           ts=now_ms())])

    async def settle(self, timer: FlowTimer) -> Decision:
        """A debounce or batch timer came back: the run it starts, if any."""
        return await until_done(
            functools.partial(self.flow.settle, timer, self.functions.get(timer.function_id)),
            what=f"flow control of {timer.function_id}", errors=STORE_ERRORS)

    async def _claim(self, function: FunctionDef, key: object, run_id: str) -> bool:
        """Whether this run owns the idempotency key (24 h); a redelivery still owns it."""
        if key is None:
            return True  # the expression found nothing to key on: no deduplication
        name = f"{self.namespace}:idem:{function.id}:{key}"
        delay = 0.1
        while True:
            try:
                if await self.redis.set(name, run_id, nx=True, ex=IDEMPOTENCY_TTL_S):
                    return True
                owner = await self.redis.get(name)
                return owner is None or (owner.decode() if isinstance(owner, bytes)
                                         else owner) == run_id
            except aioredis.RedisError as exc:
                # Deciding without Redis could start a duplicate: the event waits instead.
                log.warning("idempotency check for %s waits for Redis: %s", function.id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
