"""Rewinding a partition: one revoked meanwhile is skipped, a refused seek rejoins."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from stepstream.settings import Settings
from streams.kafka.runtime import Runtime


class SeekingConsumer:
    """What ``Runtime._seek`` asks of a consumer: its assignment and ``seek``."""

    def __init__(self, assigned: list[tuple[str, int]], refuse: bool = False) -> None:
        self.assigned, self.refuse = assigned, refuse
        self.seeks: list[tuple[str, int, int]] = []

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(topic, partition) for topic, partition in self.assigned]

    def seek(self, tp: TopicPartition) -> None:
        if self.refuse:
            raise KafkaException(KafkaError(KafkaError._STATE, "Erroneous state"))
        self.seeks.append((tp.topic, tp.partition, tp.offset))


def runtime_with(consumer: Any) -> Runtime:
    runtime = Runtime(Settings(), group_id="g", transactional_prefix="t", processors={},
                      fetch_wait_ms=10, quarantine=lambda *_: None)
    runtime._consumer = consumer
    return runtime


def test_a_partition_revoked_meanwhile_is_not_rewound() -> None:
    # A batch taken before a rebalance holds records of partitions revoked inside it.
    consumer = SeekingConsumer(assigned=[("runs", 1)])
    runtime = runtime_with(consumer)
    runtime._seek({("runs", 1): 5, ("runs", 2): 6})
    assert consumer.seeks == [("runs", 1, 5)]
    assert not runtime._rejoin


def test_a_refused_seek_makes_the_worker_rejoin_instead_of_skipping_records() -> None:
    runtime = runtime_with(SeekingConsumer(assigned=[("runs", 1)], refuse=True))
    runtime._seek({("runs", 1): 5})
    assert runtime._rejoin
