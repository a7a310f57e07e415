"""The confluent-kafka clients the engine builds, configured in one place.

Every consumer reads with ``isolation.level=read_committed`` (records of transactions
that are open or aborted are not delivered, and commit markers are skipped) and commits
only what its owner commits. librdkafka calls on one client must not overlap: each
client is owned by one thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stepstream.kafka_security import kafka_client_config
from stepstream.settings import Settings

Lag = dict[tuple[str, int], int]
"""Records not yet taken in, by (topic, partition) this worker has."""


def _isolation(settings: Settings) -> str:
    return "read_committed" if settings.read_committed else "read_uncommitted"


COMPRESSION = "lz4"
"""How the engine's producers compress their batches: JSON outputs and run states shrink
several times, for little CPU; the topics keep what the producer sent
(``compression.type=producer``, Kafka's default)."""

PARTITION_FETCH_BYTES = 50 * 1024 * 1024
"""A partition's share of a fetch: librdkafka's whole-fetch default. The dev broker's gate
(``stepstream.tansu_gate``) hands out a transaction's records only with its end marker,
so one transaction's records in a partition must fit one fetch (1 MiB by default: two
large step outputs). On Kafka it only lets a fetch carry more of one partition."""


def group_consumer(settings: Settings, group_id: str, *, fetch_wait_ms: int,
                   **extra: Any) -> Any:
    """A consumer in ``group_id`` that commits only what its owner commits."""
    from confluent_kafka import Consumer

    return Consumer(kafka_client_config(settings, **{
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": _isolation(settings),
        "fetch.wait.max.ms": fetch_wait_ms,
        "max.partition.fetch.bytes": PARTITION_FETCH_BYTES,
        # What librdkafka fetches ahead, per consumer (64 MB by default): a batch takes
        # at most 500 records, and memory stays bounded under a backlog.
        "queued.max.messages.kbytes": 16 * 1024,
        "session.timeout.ms": int(settings.session_timeout_s * 1000),
        "heartbeat.interval.ms": 1000,
        # Each group of the worker knows it by the same name (ids are per group).
        **({"group.instance.id": settings.instance_id} if settings.instance_id else {}),
        **extra,
    }))


def reader(settings: Settings, *, fetch_wait_ms: int) -> Any:
    """A consumer that only reads partitions it is assigned (changelog restoration)."""
    from confluent_kafka import Consumer

    return Consumer(kafka_client_config(settings, **{
        "group.id": f"{settings.namespace}-reader",  # never joins, never commits
        "enable.auto.commit": False,
        "isolation.level": _isolation(settings),
        "enable.partition.eof": True,
        "fetch.wait.max.ms": fetch_wait_ms,
        "max.partition.fetch.bytes": PARTITION_FETCH_BYTES,
    }))


def transactional_producer(settings: Settings, transactional_id: str) -> Any:
    """A producer whose records go out in transactions, as ``transactional_id``."""
    from confluent_kafka import Producer

    return Producer(kafka_client_config(settings, **{
        "transactional.id": transactional_id,
        "linger.ms": 0,
        "compression.type": COMPRESSION,
        # A worker frozen this long with a transaction open has it aborted by Kafka
        # (the dev broker does not time transactions out: the next owner's
        # init_transactions ends it, see streams.kafka.task).
        "transaction.timeout.ms": 60_000,
    }))


def plain_producer(settings: Settings) -> Any:
    """An idempotent producer for records that belong to no task (the HTTP API's events
    and controls, cron starts, quarantined history records): it retries until the broker
    has each record, in order, once."""
    from confluent_kafka import Producer

    return Producer(kafka_client_config(settings, **{
        "enable.idempotence": True,
        "linger.ms": 0,
        "compression.type": COMPRESSION,
        "message.timeout.ms": 0,  # never give a record up: the broker may be away a while
    }))


def lag_of(consumer: Any, positions: dict[tuple[str, int], int] | None = None) -> Lag:
    """How far each assigned partition's position (``positions``, or the consumer's) is
    behind its end as last fetched."""
    from confluent_kafka import TopicPartition

    if positions is None:
        positions = {(tp.topic, tp.partition): tp.offset
                     for tp in consumer.position(consumer.assignment()) if tp.offset >= 0}
    lag = {}
    for (topic, partition), offset in positions.items():
        high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)[1]
        if high >= 0:
            lag[(topic, partition)] = max(0, high - offset)
    return lag


def commit(consumer: Any, offsets: dict[tuple[str, int], int],
           failed: Callable[[Exception], None]) -> bool:
    """Commit ``offsets`` (the next offset to read, by partition) without waiting for
    the broker: for a consumer whose records may be applied twice (the history
    projector), where waiting would hold its next batch back a round trip. A failure
    seen at once goes to ``failed``; a later one (a rebalance under way) goes unseen:
    either way the records are read again."""
    from confluent_kafka import KafkaException, TopicPartition

    if not offsets:
        return True
    try:
        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                        asynchronous=True)
    except KafkaException as exc:
        failed(exc)
        return False
    return True
