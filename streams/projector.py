"""The history projector: the history topic into the Redis read model, in batches.

It is a plain consumer in a group of its own, outside the engine's tasks: its output is
Redis, not Kafka, so a Kafka transaction would not cover it. A batch of hundreds of
records costs one Redis read and one Redis transaction.

Batches adapt to the load: a batch is what has arrived when the projector is ready for
the next one, never a wait for more. Idle, a run's end is in Redis one fetch after it is
on the history topic; under load, the records that arrived while a batch was written
make the next batch, so a batch grows with the rate (up to ``BATCH``).

At-least-once: offsets are committed after their batch is in Redis, and applying a
record twice changes nothing (``RunStore.apply_many``). Redis down: the batch waits and
is retried; the partitions stay where they are. A record of a newer stepstream stops its
partition there until a newer worker projects it (``streams.kafka.newer``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from schemas.codec import AvroCodec, DecodeError, NewerSchemaError
from schemas.messages import HistoryRecord
from stepstream.settings import Settings
from streams.backoff import until_done
from streams.kafka.clients import Lag, commit, group_consumer, lag_of
from streams.kafka.newer import NewerRecords, TopicPartition
from streams.readmodel import RunStore
from streams.redis_client import STORE_ERRORS

log = logging.getLogger("stepstream.projector")

Quarantine = Callable[[Any, str], Awaitable[None]]
"""Sets aside a confluent-kafka message that is not a history record, with the reason."""

BATCH = 500
"""Most records taken and applied at once."""

POLL_S = 1.0
"""Longest wait for the first record of a batch (the loop's pace when nothing comes)."""


class HistoryProjector:
    """Consumes ``{namespace}.history`` and applies it to ``store``."""

    def __init__(self, settings: Settings, store: RunStore, codec: AvroCodec,
                 quarantine: Quarantine) -> None:
        self.settings, self.store, self.codec, self.quarantine = settings, store, codec, quarantine
        self.group_id = f"{settings.namespace}-history-projector"
        self.topics = [settings.topic("history")]
        # One thread owns the consumer: librdkafka calls must not overlap, and a
        # ``consume`` that is still waiting when the worker stops must end before close.
        self._thread = concurrent.futures.ThreadPoolExecutor(1, "stepstream-projector")
        self.lag: Lag = {}
        """Records not yet projected, by partition of the history topic this worker has."""
        self.newer = NewerRecords(settings.newer_schema_wait_s)
        self._paused: dict[TopicPartition, float] = {}  # waiting, until (monotonic)

    async def run(self) -> None:
        """Project until cancelled; then leave the group."""
        loop = asyncio.get_running_loop()
        consumer = group_consumer(self.settings, self.group_id,
                                  fetch_wait_ms=self.settings.fetch_max_wait_ms)
        try:
            await loop.run_in_executor(self._thread, consumer.subscribe, self.topics)
            while True:
                messages = await loop.run_in_executor(self._thread, self._take, consumer)
                if messages:
                    applied, stopped = await self._apply(messages)
                    if stopped:
                        await loop.run_in_executor(self._thread, self._stop, consumer, stopped)
                    await loop.run_in_executor(self._thread, _commit, consumer, applied)
        finally:
            await asyncio.shield(loop.run_in_executor(self._thread, consumer.close))

    def _take(self, consumer: Any) -> list[Any]:
        """The next batch: the first record to come, and what has arrived with it
        (librdkafka's ``consume(n, timeout)`` would wait the whole timeout unless n records
        come). Notes the lag behind each partition's end as it goes."""
        self._resume(consumer)
        first = consumer.poll(POLL_S)
        messages: list[Any] = [] if first is None else [first, *consumer.consume(BATCH - 1, 0)]
        self.lag = lag_of(consumer)
        return messages

    async def _apply(self, messages: list[Any]) -> tuple[list[Any], dict[TopicPartition, int]]:
        """Project ``messages``; returns those done (to commit), and the partitions that
        wait at a record of a newer stepstream, with its offset."""
        records: list[HistoryRecord] = []
        done: list[Any] = []
        stopped: dict[TopicPartition, int] = {}
        for message in messages:
            if message.error() is not None:
                log.warning("history consumer: %s", message.error())
                continue
            tp = (message.topic(), message.partition())
            if tp in stopped:
                continue
            waits_at = self.newer.at(tp)
            if waits_at is not None and self._paused.get(tp, 0.0) > time.monotonic():
                stopped[tp] = waits_at  # fetched before the pause took
                continue
            try:
                records.append(self.codec.decode_as(message.value(), HistoryRecord))
            except DecodeError as exc:
                await self.quarantine(message, str(exc))
            except NewerSchemaError as exc:
                until_s = self.newer.wait(message, exc)
                if until_s is not None:
                    self._paused[tp] = until_s
                    stopped[tp] = message.offset()
                    continue
                await self.quarantine(message, self.newer.reason(exc))
            self.newer.passed(tp, message.offset())
            done.append(message)
        if records:
            # Redis down: wait and retry the batch (never skip it, never crash).
            await until_done(lambda: self.store.apply_many(records),
                             what="history projection to Redis", errors=STORE_ERRORS)
        return done, stopped

    def _stop(self, consumer: Any, stopped: dict[TopicPartition, int]) -> None:
        """Read ``stopped`` partitions again from the record each waits at, once their
        wait is over (``_resume``)."""
        from confluent_kafka import KafkaException
        from confluent_kafka import TopicPartition as Partition

        for (topic, partition), offset in stopped.items():
            try:
                consumer.seek(Partition(topic, partition, offset))
                consumer.pause([Partition(topic, partition)])
            except KafkaException as exc:  # revoked meanwhile: its next owner reads it
                log.info("history %s[%d] not stopped at %d: %s", topic, partition, offset,
                         exc.args[0])

    def _resume(self, consumer: Any) -> None:
        """Read again the partitions whose wait is over; forget those that moved (a
        rebalance resumes what it assigns)."""
        from confluent_kafka import KafkaException
        from confluent_kafka import TopicPartition as Partition

        if not self._paused and not self.newer.waiting:
            return
        assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        self.newer.keep(assigned)
        for tp in [tp for tp in self._paused if tp not in assigned]:
            del self._paused[tp]
        now = time.monotonic()
        for (topic, partition) in [tp for tp, until in self._paused.items() if until <= now]:
            del self._paused[(topic, partition)]
            try:
                consumer.resume([Partition(topic, partition)])
            except KafkaException as exc:  # not ours any more: its next owner reads it
                log.info("history %s[%d] not resumed: %s", topic, partition, exc.args[0])


def _commit(consumer: Any, messages: list[Any]) -> None:
    """Commit past the batch; a failed commit (a rebalance) means records applied twice,
    which the read model ignores."""
    commit(consumer, {(m.topic(), m.partition()): m.offset() + 1
                      for m in messages if m.error() is None},
           lambda exc: log.info("history offsets not committed (applied again later): %s", exc))
