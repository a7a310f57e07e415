"""Backfill: start a function's runs for records already in a topic, over a time range
within its retention (``stepstream backfill``).

The topic is the function's source topic (``TopicTrigger``) or, for a function
triggered by name, ``{namespace}.events`` (past events re-delivered to a function added
later; no other function sees them again, and no wait does). Each backfill reads in a
consumer group of its own, from the offsets of ``--from`` to the ends the partitions
had when it began, and commits the runs it starts with its offsets in one transaction,
as a source task does: each record is decided once per backfill. Runs are started as
the live path starts them (the function's ``if_``, ``id=``, idempotency and flow
control), under the same run ids, ``run_id_for(function, event id)``: a run the live
path or an earlier backfill started is not started again while the engine remembers it
(``STEPSTREAM_FINISHED_RUN_RETENTION_S``), since the orchestrator ignores a second
``RunStarted`` of a run it has.

Record timestamps decide the range, not only the broker's ``offsets_for_times`` (the dev
broker answers it with offset 0, and a producer may stamp records out of order).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from schemas.codec import DecodeError, default_codec
from schemas.messages import FlowTimer
from stepstream.client import Stepstream
from stepstream.errors import ConfigError
from stepstream.events import decode_event
from stepstream.function import FunctionDef
from streams import redis_client
from streams.delays import DelayTiers
from streams.kafka.clients import group_consumer, transactional_producer
from streams.kafka.task import Record
from streams.metrics import Metrics
from streams.processors.outputs import Outputs
from streams.processors.source import Source
from streams.processors.trigger import Trigger
from streams.registry import RegistryDecoder
from streams.source_records import SourceRecords
from streams.starts import Starter
from topics.catalog import catalog

log = logging.getLogger("stepstream.backfill")

BATCH = 500
"""Most records decided and committed in one transaction."""

Progress = Callable[[int, int], None]
"""Told (records read, records to read) after each batch."""


@dataclass(frozen=True, slots=True)
class BackfillReport:
    """What a backfill did."""

    group: str
    """Its consumer group (and transactional id)."""
    read: int
    """Records read, in the range or not."""
    in_range: int
    """Records whose timestamp is in the range: each decided once."""
    started: int
    """Run starts sent (runs the engine already has among them change nothing)."""


@dataclass(slots=True)
class Batch:
    """One batch of a range's records."""

    messages: list[Any]
    """Records before the ends, in the range or not."""
    reached: dict[int, int]
    """Each partition's position after the batch."""
    moved: bool
    """Whether a position moved (past records, or past transaction markers only)."""
    done: int
    """Records passed so far, of ``total`` in the whole range."""
    total: int


def reading_range(consumer: Any, topic: str, from_ms: int | None
                  ) -> tuple[dict[int, int], dict[int, int]]:
    """Where each partition of ``topic`` is read from (the consumer's group's offset, when
    it has one: a resumed backfill; else the broker's offset for ``from_ms``) and to
    (its end now)."""
    from confluent_kafka import TopicPartition

    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    if metadata.error is not None or not metadata.partitions:
        raise ConfigError(f"topic {topic!r} does not exist")
    numbers = sorted(metadata.partitions)
    marks = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10,
                                               cached=False) for p in numbers}
    starts = {p: low for p, (low, _) in marks.items()}
    if from_ms is not None:
        for tp in consumer.offsets_for_times(
                [TopicPartition(topic, p, from_ms) for p in numbers], timeout=10):
            starts[tp.partition] = tp.offset if tp.offset >= 0 else marks[tp.partition][1]
    for tp in consumer.committed([TopicPartition(topic, p) for p in numbers], timeout=10):
        if tp.offset >= 0:
            starts[tp.partition] = tp.offset
    return starts, {p: high for p, (_, high) in marks.items()}


async def batches(consumer: Any, topic: str, starts: dict[int, int], ends: dict[int, int]
                  ) -> AsyncIterator[Batch]:
    """The records of ``topic`` from ``starts`` to ``ends``, a batch at a time."""
    from confluent_kafka import TopicPartition

    left = {p for p in ends if starts[p] < ends[p]}
    consumer.assign([TopicPartition(topic, p, starts[p]) for p in sorted(left)])
    total = sum(ends[p] - starts[p] for p in left)
    reached = {p: starts[p] for p in left}
    while left:
        messages = [m for m in consumer.consume(BATCH, timeout=1.0)
                    if m.error() is None and m.offset() < ends[m.partition()]]
        before = dict(reached)
        for tp in consumer.position([TopicPartition(topic, p) for p in left]):
            # Past transaction markers too; none yet (negative) before a first fetch.
            reached[tp.partition] = max(reached[tp.partition], tp.offset)
        left = {p for p in left if reached[p] < ends[p]}
        yield Batch(messages, dict(reached), reached != before,
                    sum(min(reached[p], ends[p]) - starts[p] for p in reached), total)


def in_range(message: Any, from_ms: int | None, to_ms: int | None) -> bool:
    """Whether the record's timestamp is in ``[from_ms, to_ms)``."""
    _, ts = message.timestamp()
    return (from_ms is None or ts >= from_ms) and (to_ms is None or ts < to_ms)


class Backfill:
    """One backfill of ``function_id`` over ``[from_ms, to_ms)`` (None: the topic's
    first record; the partitions' ends when it begins)."""

    def __init__(self, ss: Stepstream, function_id: str, *, from_ms: int | None,
                 to_ms: int | None, group: str | None = None) -> None:
        function = ss.functions.get(function_id)
        if function is None:
            raise ConfigError(f"app {ss.app_id!r} has no function {function_id!r}")
        if function.source is None and function.trigger is None:
            raise ConfigError(f"{function_id!r} is not triggered by events or a topic")
        if from_ms is not None and to_ms is not None and to_ms <= from_ms:
            raise ConfigError("--to must be later than --from")
        self.ss, self.settings = ss, ss.settings
        self.from_ms, self.to_ms = from_ms, to_ms
        self.function = _from_any_time(function)
        self.topic = (function.source.topic if function.source is not None
                      else self.settings.topic("events"))
        self.group = group or (f"{self.settings.namespace}.backfill.{function_id}."
                               f"{uuid.uuid4().hex[:8]}")

    async def run(self, progress: Progress | None = None) -> BackfillReport:
        """Read the range and start its runs; returns once the ends are reached."""
        settings = self.settings
        metrics = Metrics()
        partitions = {spec.name: spec.partitions for spec in catalog(settings)}
        codec = default_codec()
        outputs = Outputs(settings, codec, metrics, partitions, DelayTiers(settings))
        redis = redis_client.connect(settings.redis_url)
        trigger = Trigger(outputs, Starter(self.ss, redis, metrics), backfill=self.group)
        source = Source(trigger, SourceRecords(RegistryDecoder(settings),
                                               limit=settings.max_payload_bytes),
                        self.function) if self.function.source is not None else None
        consumer = group_consumer(settings, self.group, fetch_wait_ms=100)
        producer = transactional_producer(settings, self.group)
        try:
            starts, ends = reading_range(consumer, self.topic, self.from_ms)
            producer.init_transactions(30)
            return await self._read(consumer, producer, starts, ends, trigger, source,
                                    progress)
        finally:
            consumer.close()
            producer.flush(10)
            await redis.aclose()

    async def _read(self, consumer: Any, producer: Any, starts: dict[int, int],
                    ends: dict[int, int], trigger: Trigger, source: Source | None,
                    progress: Progress | None) -> BackfillReport:
        read = kept = started = 0
        async for batch in batches(consumer, self.topic, starts, ends):
            records: list[Record] = []
            for message in batch.messages:
                read += 1
                if not in_range(message, self.from_ms, self.to_ms):
                    continue
                kept += 1
                decided = await self._decide(message, trigger, source)
                started += sum(1 for r in decided if r.topic == self.settings.topic("runs"))
                records += decided
            if records or batch.moved:
                self._commit(consumer, producer, records, batch.reached)
            if progress is not None:
                progress(batch.done, batch.total)
        log.info("backfill %s: %d records read, %d in range, %d run starts", self.group,
                 read, kept, started)
        return BackfillReport(self.group, read, kept, started)

    async def _decide(self, message: Any, trigger: Trigger, source: Source | None
                      ) -> list[Record]:
        if source is not None:
            return await source.decide(message)
        value = message.value()
        if trigger.codec.record_type(value) is FlowTimer:
            return []  # the live trigger's own timers, not events
        try:
            event = decode_event(
                value, trigger.codec,
                fallback_id=f"{message.topic()}:{message.partition()}:{message.offset()}",
                fallback_ts=message.timestamp()[1], limit=self.settings.max_payload_bytes)
        except DecodeError:
            return []  # the live trigger quarantined it when it came
        return trigger.decided(await trigger.starter.decide(event, only=self.function.id))

    def _commit(self, consumer: Any, producer: Any, records: list[Record],
                positions: dict[int, int]) -> None:
        """The batch's run starts with the group's offsets, in one transaction."""
        from confluent_kafka import TopicPartition

        producer.begin_transaction()
        for record in records:
            producer.produce(record.topic, record.value, record.key, partition=record.partition)
        producer.send_offsets_to_transaction(
            [TopicPartition(self.topic, p, o) for p, o in positions.items() if o >= 0],
            consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(60)


def _from_any_time(function: FunctionDef) -> FunctionDef:
    """``function`` with its topic read from any time: the backfill's range replaces
    its ``start=``, which says only where its live group begins."""
    if function.source is None:
        return function
    return dataclasses.replace(function, source=dataclasses.replace(
        function.source, start="earliest"))

