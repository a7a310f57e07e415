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
is retried; the partitions stay where they are.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from schemas.codec import AvroCodec, DecodeError
from schemas.messages import HistoryRecord
from stepstream.settings import Settings
from streams.backoff import until_done
from streams.kafka.clients import Lag, commit, group_consumer, lag_of
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
                    await self._apply(messages)
                    await loop.run_in_executor(self._thread, _commit, consumer, messages)
        finally:
            await asyncio.shield(loop.run_in_executor(self._thread, consumer.close))

    def _take(self, consumer: Any) -> list[Any]:
        """The next batch: the first record to come, and what has arrived with it
        (librdkafka's ``consume(n, timeout)`` would wait the whole timeout unless n records
        come). Notes the lag behind each partition's end as it goes."""
        first = consumer.poll(POLL_S)
        messages: list[Any] = [] if first is None else [first, *consumer.consume(BATCH - 1, 0)]
        self.lag = lag_of(consumer)
        return messages

    async def _apply(self, messages: list[Any]) -> None:
        records: list[HistoryRecord] = []
        for message in messages:
            if message.error() is not None:
                log.warning("history consumer: %s", message.error())
                continue
            try:
                records.append(self.codec.decode_as(message.value(), HistoryRecord))
            except DecodeError as exc:
                await self.quarantine(message, str(exc))
        if records:
            # Redis down: wait and retry the batch (never skip it, never crash).
            await until_done(lambda: self.store.apply_many(records),
                             what="history projection to Redis", errors=STORE_ERRORS)


def _commit(consumer: Any, messages: list[Any]) -> None:
    """Commit past the batch; a failed commit (a rebalance) means records applied twice,
    which the read model ignores."""
    commit(consumer, {(m.topic(), m.partition()): m.offset() + 1
                      for m in messages if m.error() is None},
           lambda exc: log.info("history offsets not committed (applied again later): %s", exc))
