"""Flow control at the trigger: rate limit, debounce and batching decide whether an
event starts a run now, later (a ``FlowTimer`` through the delay topics), or never.

Every decision is idempotent by run id or event id (see the mechanisms' modules), so
the trigger agent may process an event or a timer twice: it produces the same
messages again, and the orchestrator keeps one run per run id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.messages import ErrorInfo, Event, FlowTimer, HistoryRecord, RunStarted
from stepstream.events import run_id_for
from stepstream.function import FunctionDef
from stepstream.options import to_ms
from stepstream.step import now_ms
from streams.flow.batch import Batcher, BatchKeys
from streams.flow.debounce import DebounceKeys, Debouncer
from streams.flow.keys import FlowKeys, key_value
from streams.flow.ratelimit import RateLimiter, Verdict
from streams.metrics import Metrics

RATE_LIMITED = "RateLimited"
"""The error type of the ``cancelled`` entries that show events a rate limit dropped."""


@dataclass
class Decision:
    """What the trigger agent produces for one event or timer."""

    starts: list[RunStarted] = field(default_factory=list)
    timers: list[FlowTimer] = field(default_factory=list)
    """Deliver each back to the events topic at its ``due_ms``."""
    records: list[HistoryRecord] = field(default_factory=list)
    """History of events that start no run (dropped by a rate limit)."""

    def extend(self, other: Decision) -> None:
        """Add ``other``'s messages to these."""
        self.starts += other.starts
        self.timers += other.timers
        self.records += other.records


def batch_start(function_id: str, batch: str, events: list[Event]) -> RunStarted:
    """The run of a closed batch: named by the batch, ``event`` is the first event."""
    return RunStarted(run_id=run_id_for(function_id, f"batch:{batch}"), function_id=function_id,
                      event=events[0], ts=now_ms(), batch=events)


def dropped(function: FunctionDef, event: Event, run_id: str, key: str) -> list[HistoryRecord]:
    """The history of an event a rate limit dropped: a run that never ran, ``cancelled``."""
    limit = function.flow.rate_limit
    assert limit is not None
    where = f" for key {key!r}" if key else ""
    return never_ran(function.id, event, run_id, "cancelled", ErrorInfo(type=RATE_LIMITED, message=(
        f"dropped: rate limit of {limit.limit} runs per {limit.period} reached{where}")))


def never_ran(function_id: str, event: Event, run_id: str, status: str,
              error: ErrorInfo, ts: int | None = None) -> list[HistoryRecord]:
    """The history of a run that ended (``status``) with ``error`` before it started."""
    ts = now_ms() if ts is None else ts
    return [HistoryRecord(run_id=run_id, seq=1, ts=ts, kind="run.started",
                          function_id=function_id, event=event, event_id=event.id),
            HistoryRecord(run_id=run_id, seq=2, ts=ts, kind=f"run.{status}",
                          function_id=function_id, error=error, event_id=event.id)]


class FlowTrigger:
    """The trigger's flow-control decisions for the functions that have them."""

    def __init__(self, redis: Any, namespace: str, metrics: Metrics) -> None:
        self.keys = FlowKeys(namespace)
        self.metrics = metrics
        self.rates = RateLimiter(redis)
        self.debouncer = Debouncer(redis)
        self.batcher = Batcher(redis)

    async def admit(self, function: FunctionDef, event: Event, run_id: str) -> Decision:
        """What ``event`` does, given that it matched ``function``."""
        flow, decision = function.flow, Decision()
        # Every key first: one that fails (ExpressionError) leaves Redis untouched.
        rate_key, debounce_key, batch_key = (
            key_value(o.key if o else None, event)
            for o in (flow.rate_limit, flow.debounce, flow.batch_events))
        if flow.rate_limit is not None:
            key = rate_key
            verdict = await self.rates.decide(
                self.keys.of(function.id, "rate", key, "admitted"),
                self.keys.of(function.id, "rate", key, "dropped"),
                run_id=run_id, limit=flow.rate_limit.limit,
                period_ms=to_ms(flow.rate_limit.period))
            if not verdict.admitted:
                if verdict is Verdict.DROPPED:
                    self.metrics.runs_rate_limited.labels(function.id).inc()
                decision.records += dropped(function, event, run_id, key)
                return decision
        if flow.debounce is not None:
            key = debounce_key
            pushed = await self.debouncer.push(
                self._debounce_keys(function.id, key), event_id=event.id, event_ts=event.ts,
                period_ms=to_ms(flow.debounce.period))
            if pushed.superseded:
                self.metrics.runs_debounced.labels(function.id).inc(pushed.superseded)
            if pushed.timer_due is not None:
                decision.timers.append(FlowTimer(kind="debounce", function_id=function.id,
                                                 key=key, token=event.id,
                                                 due_ms=pushed.timer_due, event=event))
            return decision
        if flow.batch_events is not None:
            key = batch_key
            added = await self.batcher.add(self._batch_keys(function.id, key), event,
                                           max_size=flow.batch_events.max_size,
                                           timeout_ms=to_ms(flow.batch_events.timeout))
            if added.closed:
                decision.starts.append(batch_start(function.id, added.batch, added.closed))
            if added.timer_due is not None:
                decision.timers.append(FlowTimer(kind="batch", function_id=function.id,
                                                 key=key, token=added.batch,
                                                 due_ms=added.timer_due))
            return decision
        decision.starts.append(RunStarted(run_id=run_id, function_id=function.id, event=event,
                                          ts=now_ms()))
        return decision

    async def settle(self, timer: FlowTimer, function: FunctionDef | None) -> Decision:
        """A debounce or batch timer fired: the run it starts, if any."""
        decision = Decision()
        if function is None:
            return decision
        flow = function.flow
        if timer.kind == "debounce" and timer.event is not None and flow.debounce is not None:
            if await self.debouncer.fire(self._debounce_keys(function.id, timer.key),
                                         event_id=timer.token):
                decision.starts.append(RunStarted(
                    run_id=run_id_for(function.id, timer.event.id), function_id=function.id,
                    event=timer.event, ts=now_ms()))
        elif timer.kind == "batch" and flow.batch_events is not None:
            events = await self.batcher.fire(self._batch_keys(function.id, timer.key),
                                             timer.token,
                                             timeout_ms=to_ms(flow.batch_events.timeout))
            if events:
                decision.starts.append(batch_start(function.id, timer.token, events))
        return decision

    def _debounce_keys(self, function_id: str, key: str) -> DebounceKeys:
        of = self.keys.of
        return DebounceKeys(latest=of(function_id, "debounce", key, "latest"),
                            seen=of(function_id, "debounce", key, "seen"),
                            fired=of(function_id, "debounce", key, "fired"))

    def _batch_keys(self, function_id: str, key: str) -> BatchKeys:
        def of(part: str) -> str:
            return self.keys.of(function_id, "batch", key, part)

        return BatchKeys(meta=of("meta"), items=of("items"), seen=of("seen"), of=of("of"),
                         closed=of("closed"), closed_at=of("closed_at"))
