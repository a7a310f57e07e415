"""The trigger: events (and debounce or batch timers back from the delay tiers) become
run starts (DESIGN §4). Every event is also re-keyed by name for the waiter matcher."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from schemas.codec import DecodeError
from schemas.messages import FlowTimer
from stepstream.events import decode_event
from stepstream.step import now_ms
from streams.flow.trigger import Decision
from streams.kafka.task import Record, Task
from streams.processors.outputs import Outputs
from streams.singletons import start_records
from streams.starts import Starter

log = logging.getLogger("stepstream.trigger")


class Trigger:
    """Processes ``{namespace}.events``."""

    def __init__(self, outputs: Outputs, starter: Starter, *, backfill: str | None = None
                 ) -> None:
        """``backfill``: the backfill this trigger decides for, tagged on the runs it
        starts (``streams.backfill``)."""
        self.outputs, self.starter, self.backfill = outputs, starter, backfill
        self.codec, self.metrics = outputs.codec, outputs.metrics

    async def process(self, task: Task, message: Any) -> None:
        for record in await self.decide(message):
            task.send(record)

    async def decide(self, message: Any) -> list[Record]:
        """The records one events message leads to."""
        value = message.value()
        if self.codec.record_type(value) is FlowTimer:  # back from the delay tiers
            timer = self.codec.decode_as(value, FlowTimer)
            return self.decided(await self.starter.settle(timer))
        try:
            event = decode_event(
                value, self.codec,
                fallback_id=f"{message.topic()}:{message.partition()}:{message.offset()}",
                fallback_ts=message.timestamp()[1],
                limit=self.outputs.settings.max_payload_bytes)
        except DecodeError as exc:
            self.metrics.events_received.labels("quarantined").inc()
            log.warning("quarantined %s[%d]@%d: %s", message.topic(), message.partition(),
                        message.offset(), exc)
            return [self.outputs.quarantined(message, str(exc))]
        decision = await self.starter.decide(event)
        matched = decision.starts or decision.timers or decision.records
        self.metrics.events_received.labels("matched" if matched else "unmatched").inc()
        # Every event also goes to the waiter matcher, keyed by name.
        return [*self.decided(decision), self.outputs.to("events.by-name", event.name, event)]

    def decided(self, decision: Decision) -> list[Record]:
        out = self.outputs
        starts = decision.starts if self.backfill is None else [
            replace(start, backfill=self.backfill) for start in decision.starts]
        records = start_records(out, self.starter.functions, starts)
        records += [out.history(r) for r in decision.records]
        for timer in decision.timers:  # debounce and batch timers come back as events
            records.append(out.delayed("events", f"{timer.function_id}:{timer.key}", timer,
                                       max(0, timer.due_ms - now_ms())))
        return records
