"""A shadow backfill (``stepstream backfill --shadow``): a function's code run over the
records of a time range in this process, each run's output compared with the output of
the live run the same event started.

Nothing is written and no run is started: the records are read from assigned partitions
with no offsets committed; each run goes through ``stepstream.testing``'s harness (the
engine's state machine and replay, in memory, on a virtual clock from the event's
time); ``step.send_event`` keeps its events in memory. Steps declared
``step.run(..., side_effect=True)`` do not run: they return the output the live run
recorded for that step (the read model's run of ``run_id_for(function, event id)``),
else their ``stand_in``, else the shadow run fails for want of one. Every other step
runs for real, in this process: that is the contract of ``--shadow``, that what is not
marked a side effect can run again (reads, computation). A wait gets the event the live
run's wait got; a ``step.invoke`` has no live child to stand for it: such runs fail.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from schemas.codec import DecodeError, default_codec
from schemas.messages import Event, FlowTimer
from stepstream.client import Stepstream
from stepstream.errors import ExpressionError
from stepstream.events import TriggerEvent, decode_event, run_id_for
from stepstream.expressions import matches
from stepstream.step import SideEffect, Unset
from stepstream.testing.harness import run_event
from streams import redis_client
from streams.backfill import Backfill, Progress, batches, in_range, reading_range
from streams.kafka.clients import group_consumer
from streams.readmodel import RunStore
from streams.registry import RegistryDecoder
from streams.shadow_report import Example, ShadowReport, compare
from streams.source_records import SourceRecords
from streams.waiters import event_context

log = logging.getLogger("stepstream.backfill")


class SideEffects:
    """The stub of a shadow run: side-effect steps return the live run's outputs."""

    def __init__(self, recorded: Mapping[str, Any]) -> None:
        self.recorded = recorded
        self.missing: list[str] = []
        """Side-effect steps that had neither a recorded output nor a stand-in."""

    def __call__(self, step_id: str, _attempt: int, body: Callable[..., Any]
                 ) -> Callable[..., Any]:
        if not isinstance(body, SideEffect):
            return body
        if step_id in self.recorded:
            output = self.recorded[step_id]
        elif body.stand_in is not Unset.UNSET:
            output = body.stand_in
        else:
            self.missing.append(step_id)
            output = None  # the run is reported as failed whatever it does next
        return lambda *_: output


class ShadowBackfill:
    """A shadow backfill of ``function_id`` over ``[from_ms, to_ms)``."""

    def __init__(self, ss: Stepstream, function_id: str, *, from_ms: int | None,
                 to_ms: int | None, examples: int = 10) -> None:
        job = Backfill(ss, function_id, from_ms=from_ms, to_ms=to_ms)  # checks the same
        self.settings, self.function, self.topic = ss.settings, job.function, job.topic
        self.group = job.group  # the consumer's group: nothing is committed in it
        self.report = ShadowReport(function_id, self.topic, from_ms, to_ms,
                                   examples=examples)
        self._records = SourceRecords(RegistryDecoder(ss.settings),
                                      limit=ss.settings.max_payload_bytes)
        self._secrets = ss.settings.secrets()

    async def run(self, progress: Progress | None = None) -> ShadowReport:
        """Read the range and run each record's shadow run; returns the report."""
        report = self.report
        consumer = group_consumer(self.settings, self.group, fetch_wait_ms=100)
        redis = redis_client.connect(self.settings.redis_url)
        store = RunStore(redis, self.settings.namespace)
        try:
            starts, ends = reading_range(consumer, self.topic, report.from_ms)
            async for batch in batches(consumer, self.topic, starts, ends):
                for message in batch.messages:
                    report.read += 1
                    if in_range(message, report.from_ms, report.to_ms):
                        report.in_range += 1
                        await self._shadow(message, store)
                if progress is not None:
                    progress(batch.done, batch.total)
        finally:
            consumer.close()
            await redis.aclose()
        log.info("shadow backfill of %s: %s", report.function, report.counts)
        return report

    async def _shadow(self, message: Any, store: RunStore) -> None:
        report = self.report
        try:
            found = await self._event(message)
        except DecodeError:
            report.count("undecodable")
            return
        if found is None or not self._starts(*found):
            report.count("not_started")
            return
        event = found[0]
        run_id = run_id_for(self.function.id, event.id)
        live = await store.get_run(run_id)
        steps = live["steps"] if live is not None else []
        recorded = {s["id"]: s["output"] for s in steps if s["status"] == "completed"}
        stub = SideEffects(recorded)
        try:
            result = await run_event(self.function, event, stub=stub,
                                     events=_waited(recorded), invoked={})
        except Exception as exc:
            report.count("shadow_failed", Example(event.id, run_id,
                                                  [f"{type(exc).__name__}: {exc}"]))
            return
        if stub.missing:
            report.count("shadow_failed", Example(event.id, run_id, [
                f"side-effect steps {stub.missing} have no output recorded in a live run "
                "and no stand_in"]))
            return
        verdict, diff = compare(live, result, self._secrets)
        report.count(verdict, Example(event.id, run_id, diff))

    async def _event(self, message: Any) -> tuple[Event, dict[str, Any] | None] | None:
        """The event the record is, and the record as CEL sees it (a source's); None for
        what is no event (a flow-control timer on the events topic)."""
        if self.function.source is not None:
            return await self._records.event_of(message, self.function.source)
        codec, value = default_codec(), message.value()
        if codec.record_type(value) is FlowTimer:
            return None
        return decode_event(
            value, codec,
            fallback_id=f"{message.topic()}:{message.partition()}:{message.offset()}",
            fallback_ts=message.timestamp()[1],
            limit=self.settings.max_payload_bytes), None

    def _starts(self, event: Event, record: dict[str, Any] | None) -> bool:
        """Whether the live trigger starts a run of the function for ``event``: its name
        and ``if_`` (flow control and idempotency aside: they decide when, not what)."""
        if event.name != self.function.event_name:
            return False
        context: dict[str, Any] = {"event": event_context(event)}
        if record is not None:
            context["record"] = record
        try:
            return matches(self.function.trigger_if, context)
        except ExpressionError:
            return False  # the live trigger reported it and started nothing


def _waited(recorded: Mapping[str, Any]) -> dict[str, TriggerEvent | None]:
    """The events the live run's waits got, by step id (the harness asks only for its
    waits', so other steps' outputs are left out by their shape)."""
    found: dict[str, TriggerEvent | None] = {}
    for step_id, output in recorded.items():
        if isinstance(output, dict) and {"id", "name", "data", "ts"} <= output.keys():
            found[step_id] = TriggerEvent(id=output["id"], name=output["name"],
                                          data=output["data"], ts=output["ts"])
    return found

