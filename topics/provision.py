"""Create the catalog's topics, and refuse to run on topics that do not match it."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from stepstream.errors import ConfigError
from stepstream.kafka_security import kafka_client_config
from stepstream.settings import Settings
from topics.catalog import TopicSpec

Kafka = Settings | str
"""Where the topics live: ``Settings`` (brokers and their security settings), or a bare
bootstrap string for a PLAINTEXT broker."""


class PartitionMismatch(ConfigError):
    """A topic exists with another partition count than the catalog says."""


def _admin(kafka: Kafka) -> AdminClient:
    settings = kafka if isinstance(kafka, Settings) else Settings(brokers=kafka)
    return AdminClient(kafka_client_config(settings, **{"socket.timeout.ms": 10_000}))


def _brokers(kafka: Kafka) -> str:
    return kafka.brokers if isinstance(kafka, Settings) else kafka


def existing_partitions(kafka: Kafka, timeout: float = 10.0) -> dict[str, int]:
    """Partition count of every topic on the broker."""
    try:
        metadata = _admin(kafka).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise ConnectionError(f"cannot reach Kafka at {_brokers(kafka)}: {exc}") from exc
    return {name: len(t.partitions) for name, t in metadata.topics.items() if not t.error}


def check_topics(kafka: Kafka, specs: Iterable[TopicSpec]) -> list[TopicSpec]:
    """The specs whose topic is missing; raises PartitionMismatch for a wrong count."""
    have = existing_partitions(kafka)
    missing, wrong = [], []
    for spec in specs:
        count = have.get(spec.name)
        if count is None:
            missing.append(spec)
        elif count != spec.partitions:
            wrong.append(f"{spec.name} has {count} partitions, expected {spec.partitions}")
    if wrong:
        raise PartitionMismatch(
            "topics do not match the catalog: " + "; ".join(wrong) + ". Runs, steps and "
            "delay topics are co-partitioned by run id: set STEPSTREAM_PARTITIONS to the "
            "existing count, or recreate the topics (see README, 'Partitions').")
    return missing


def ensure_topics(kafka: Kafka, specs: Iterable[TopicSpec], timeout: float = 30.0) -> list[str]:
    """Create the missing topics (idempotent); returns the names it created.

    Raises:
        PartitionMismatch: a topic exists with the wrong partition count.
        ConnectionError: the broker cannot be reached.
    """
    missing = check_topics(kafka, specs)
    if not missing:
        return []
    admin = _admin(kafka)  # must outlive the futures: they fail when it is destroyed
    futures = admin.create_topics(
        [NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication,
                  config=dict(s.configs)) for s in missing],
        operation_timeout=timeout, request_timeout=timeout)
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # a peer worker won the race
                raise
    check_topics(kafka, specs)
    return created
