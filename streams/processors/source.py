"""A source topic's processor: each record of a topic stepstream does not own becomes an
event (``streams.source_records``), in the task's transaction with the record's offset.

For a function triggered by the topic, the event goes through the trigger's door (its
``if_``, idempotency and flow control) and starts that function's run, sent to ``runs``
keyed by run id as the trigger sends it. For the runs that wait or cancel on the topic,
the event goes to ``events.by-name`` as the trigger forwards every event. Either way the
output and the source offset commit together: a record starts one run, and is offered
to the waiters once. A record that makes no event is quarantined; one whose schema the
registry cannot give now waits for it (``streams.backoff``), as the trigger waits for
Redis.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from schemas.codec import DecodeError
from stepstream.function import FunctionDef
from streams.backoff import until_done
from streams.kafka.task import Record, Task
from streams.processors.trigger import Trigger
from streams.registry import RegistryUnavailable
from streams.source_records import SourceRecords

log = logging.getLogger("stepstream.source")


class Source:
    """Processes a source topic for ``function`` (None: for the waiters)."""

    def __init__(self, trigger: Trigger, records: SourceRecords,
                 function: FunctionDef | None) -> None:
        self.trigger, self.records, self.function = trigger, records, function
        self.outputs, self.metrics = trigger.outputs, trigger.metrics

    async def process(self, task: Task, message: Any) -> None:
        for record in await self.decide(message):
            task.send(record)

    async def decide(self, message: Any) -> list[Record]:
        """The records one message of the source topic leads to."""
        function = self.function
        try:
            event, record = await until_done(
                functools.partial(self.records.event_of, message,
                                  function.source if function is not None else None),
                what=f"decoding {message.topic()}[{message.partition()}]",
                errors=(RegistryUnavailable,))
        except DecodeError as exc:
            self.metrics.events_received.labels("quarantined").inc()
            log.warning("quarantined %s[%d]@%d: %s", message.topic(), message.partition(),
                        message.offset(), exc)
            return [self.outputs.quarantined(message, str(exc))]
        if function is None:
            return [self.outputs.to("events.by-name", event.name, event)]
        start_ms = function.source.start_ms if function.source is not None else None
        if start_ms is not None and event.ts < start_ms:
            # Before the function's start: the group began at the broker's offset for
            # that time, yet the dev broker answers that lookup with offset 0, and a
            # producer may set any timestamp. The start is the record's time.
            self.metrics.events_received.labels("unmatched").inc()
            return []
        decision = await self.trigger.starter.decide(event, source=(function, record))
        matched = decision.starts or decision.timers or decision.records
        self.metrics.events_received.labels("matched" if matched else "unmatched").inc()
        return self.trigger.decided(decision)
