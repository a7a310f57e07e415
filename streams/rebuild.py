"""``stepstream history rebuild``: drop the read model and replay ``{ns}.history`` into it.

The read model holds nothing that is not in the history topic (DESIGN §5), so a
rebuild is: take the rebuild lock (live projectors then wait instead of writing
into a half-built view), delete the namespace's read-model keys, read every
partition of the topic from its first offset to the high watermark it had when
the rebuild began (and on, until the topic is quiet), project each record, and
release the lock. Records produced meanwhile wait in the projectors and are applied
after the lock goes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas.codec import DecodeError, default_codec
from schemas.messages import HistoryRecord
from stepstream.settings import Settings
from streams import redis_client
from streams.readmodel import RunStore

log = logging.getLogger("stepstream.rebuild")

LOCK_TTL_S = 120
"""The lock expires if a rebuild dies; a live one renews it with every batch."""
_BATCH = 500
_EXTRA_POLLS = 3


@dataclass(frozen=True, slots=True)
class RebuildResult:
    """What a rebuild did."""

    deleted_keys: int
    records: int
    runs: int
    skipped: int
    """Messages that were not history records (they are left out)."""
    seconds: float


def _consumer(settings: Settings) -> Any:
    from confluent_kafka import Consumer

    from stepstream.kafka_security import kafka_client_config
    from streams.kafka.clients import PARTITION_FETCH_BYTES

    return Consumer(kafka_client_config(settings, **{
        "group.id": f"{settings.namespace}-history-rebuild-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
        # What the projector reads: no record of an aborted transaction.
        "isolation.level": "read_committed",
        "max.partition.fetch.bytes": PARTITION_FETCH_BYTES,
        "fetch.wait.max.ms": settings.fetch_max_wait_ms}))


def _assign_to_watermarks(consumer: Any, topic: str) -> dict[int, int]:
    """Assign every partition from its start; returns its high watermark now."""
    from confluent_kafka import TopicPartition

    metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise ConnectionError(f"topic {topic} not found")
    ends: dict[int, int] = {}
    starts = []
    for partition in sorted(metadata.partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        ends[partition] = high
        starts.append(TopicPartition(topic, partition, low))
    consumer.assign(starts)
    return ends


def _positions(consumer: Any, topic: str, ends: dict[int, int]) -> dict[int, int]:
    """The last offset consumed per partition, as far as the consumer's position says."""
    from confluent_kafka import TopicPartition

    found = consumer.position([TopicPartition(topic, p) for p in ends])
    return {tp.partition: tp.offset - 1 for tp in found if tp.offset >= 0}


async def rebuild(settings: Settings, *,
                  progress: Callable[[int], None] | None = None) -> RebuildResult:
    """Rebuild the namespace's read model from its history topic.

    Args:
        settings: where the broker, Redis and namespace are.
        progress: called with the number of records applied so far, after each batch.

    Raises:
        ConnectionError: the history topic is missing or the broker does not answer.
    """
    began = time.monotonic()
    client = redis_client.connect(settings.redis_url)
    store = RunStore(client, settings.namespace, rebuilding=True)
    codec = default_codec()
    consumer = _consumer(settings)
    records = skipped = 0
    runs: set[str] = set()
    try:
        await client.set(store.lock_key, "1", ex=LOCK_TTL_S)
        deleted = await store.flush()
        topic = settings.topic("history")
        ends = await asyncio.to_thread(_assign_to_watermarks, consumer, topic)
        position = dict.fromkeys(ends, -1)  # last offset applied, per partition
        # Read to the watermarks, then on until a poll brings nothing (at most a few more
        # polls, for a busy topic): the dev broker has been seen to report a high watermark
        # one short. Records read past the watermarks are applied again by the live
        # projectors, to no effect (the seq check).
        extra = 0
        while True:
            messages = await asyncio.to_thread(consumer.consume, _BATCH, 0.5)
            if all(position[p] + 1 >= end for p, end in ends.items()):
                extra += 1
                if not messages or extra > _EXTRA_POLLS:
                    break
            batch: list[HistoryRecord] = []
            for message in messages:
                if message.error() is not None:
                    continue
                partition, offset = message.partition(), message.offset()
                position[partition] = max(position.get(partition, -1), offset)
                try:
                    batch.append(codec.decode_as(message.value(), HistoryRecord))
                except DecodeError as exc:
                    skipped += 1
                    log.warning("skipped %s[%d]@%d: %s", topic, partition, offset, exc)
            if not messages:  # offsets may have gaps (transaction markers): ask where we are
                position.update(await asyncio.to_thread(_positions, consumer, topic, ends))
            await store.apply_many(batch)
            records += len(batch)
            runs.update(r.run_id for r in batch)
            await client.expire(store.lock_key, LOCK_TTL_S)
            if progress is not None:
                progress(records)
    finally:
        await asyncio.to_thread(consumer.close)
        await client.delete(store.lock_key)
        await client.aclose()
    return RebuildResult(deleted_keys=deleted, records=records, runs=len(runs), skipped=skipped,
                         seconds=time.monotonic() - began)
