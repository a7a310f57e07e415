"""confluent-kafka consumers in groups of their own, beside Faust's (the history projector,
the delay tiers): one thread owns each, since librdkafka calls must not overlap."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stepstream.kafka_security import kafka_client_config
from stepstream.settings import Settings

Lag = dict[tuple[str, int], int]
"""Records not yet taken in, by (topic, partition) this worker has."""


def group_consumer(settings: Settings, group_id: str, *, fetch_wait_ms: int) -> Any:
    """A consumer in ``group_id`` that commits only what its owner commits."""
    from confluent_kafka import Consumer

    return Consumer(kafka_client_config(settings, **{
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": fetch_wait_ms,
        "session.timeout.ms": int(settings.session_timeout_s * 1000),
        "heartbeat.interval.ms": 1000,
    }))


def lag_of(consumer: Any) -> Lag:
    """How far each assigned partition's position is behind its (cached) end."""
    lag = {}
    for tp in consumer.position(consumer.assignment()):
        high = consumer.get_watermark_offsets(tp, cached=True)[1]
        if tp.offset >= 0 and high >= 0:
            lag[(tp.topic, tp.partition)] = max(0, high - tp.offset)
    return lag


def commit(consumer: Any, offsets: dict[tuple[str, int], int],
           failed: Callable[[Exception], None]) -> bool:
    """Commit ``offsets`` (the next offset to read, by partition) and wait for it; a
    failure (a rebalance under way) goes to ``failed``: the records are read again."""
    from confluent_kafka import KafkaException, TopicPartition

    if not offsets:
        return True
    try:
        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                        asynchronous=False)
    except KafkaException as exc:
        failed(exc)
        return False
    return True
