"""Fakes for unit tests of the runtime's bookkeeping (integration tests use the broker)."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streams.kafka.store import MemoryBackend, StateStore, WholeValues
from streams.kafka.task import Refused, Task


class FakeMessage:
    """What confluent-kafka's consumer hands over."""

    def __init__(self, topic: str, partition: int, offset: int, value: bytes | None,
                 produced_ms: int = 0, key: bytes | None = None,
                 headers: list[tuple[str, bytes | None]] | None = None) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._value, self._produced_ms, self._key = value, produced_ms, key
        self._headers = headers

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, self._produced_ms)

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._headers


class FakeTransactionalProducer:
    """Records each committed transaction: its records and offsets. ``fail_next`` makes
    the next commit raise that KafkaError code (e.g. an abortable or a fencing one);
    ``max_bytes`` refuses larger values as librdkafka does (``message.max.bytes``)."""

    def __init__(self) -> None:
        self.transactions: list[tuple[list[tuple[str, int, bytes | None, bytes | None]],
                                      dict[tuple[str, int], int]]] = []
        self.aborted = 0
        self.consumer_commits = 0
        self.fail_next: Any = None
        self.max_bytes: int | None = None
        self._open: list[tuple[str, int, bytes | None, bytes | None]] = []
        self._offsets: dict[tuple[str, int], int] = {}

    def begin_transaction(self) -> None:
        self._open, self._offsets = [], {}

    def produce(self, topic: str, value: bytes | None, key: bytes | None, *, partition: int,
                on_delivery: Any) -> None:
        if self.max_bytes is not None and len(value or b"") > self.max_bytes:
            from confluent_kafka import KafkaError, KafkaException

            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large"))
        self._open.append((topic, partition, key, value))

    def send_offsets_to_transaction(self, offsets: list[Any], _metadata: Any,
                                    _timeout: float) -> None:
        self._offsets = {(tp.topic, tp.partition): tp.offset for tp in offsets}

    def flush(self, _timeout: float = 0) -> int:
        return 0

    def commit_offsets(self, offsets: list[Any]) -> None:
        """A consumer's commit of offsets alone, recorded as a transaction without records."""
        self.transactions.append(([], {(tp.topic, tp.partition): tp.offset for tp in offsets}))
        self.consumer_commits += 1

    def commit_transaction(self, _timeout: float) -> None:
        if self.fail_next is not None:
            from confluent_kafka import KafkaError, KafkaException

            code, self.fail_next = self.fail_next, None
            fatal = code == KafkaError._FENCED
            raise KafkaException(KafkaError(code, "injected", fatal=fatal,
                                            txn_requires_abort=not fatal))
        self.transactions.append((self._open, self._offsets))

    def abort_transaction(self, _timeout: float) -> None:
        self.aborted += 1

    def purge(self) -> None:
        self._open = []

    def close(self) -> bool:
        return True

    def values(self, topic: str) -> list[bytes | None]:
        """The values committed to ``topic``, in order."""
        return [value for records, _ in self.transactions
                for (t, _, _, value) in records if t == topic]

    def offsets(self) -> dict[tuple[str, int], int]:
        """The input offsets committed last, by partition."""
        merged: dict[tuple[str, int], int] = {}
        for _, offsets in self.transactions:
            merged.update(offsets)
        return merged


def fake_task(partition: int = 0, *, refused: Refused | None = None,
              **stores: StateStore[Any]) -> tuple[Task, Any]:
    producer = FakeTransactionalProducer()
    return Task(partition, producer, dict(stores), lambda: None,
                commit_offsets=producer.commit_offsets, stopping=lambda: False,
                retry_for_s=0, refused=refused), producer


def bytes_store(changelog: str = "ns-runs-changelog", partition: int = 0) -> StateStore[bytes]:
    return StateStore(changelog, partition, MemoryBackend(), WholeValues(bytes, bytes))


class SeekingConsumer:
    """What ``Runtime._seek`` and ``_apply_pauses`` ask of a consumer."""

    def __init__(self, assigned: list[tuple[str, int]], refuse: bool = False) -> None:
        self.assigned, self.refuse = assigned, refuse
        self.seeks: list[tuple[str, int, int]] = []
        self.paused: set[tuple[str, int]] = set()

    def pause(self, tps: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in tps}

    def resume(self, tps: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in tps}

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(topic, partition) for topic, partition in self.assigned]

    def seek(self, tp: TopicPartition) -> None:
        if self.refuse:
            raise KafkaException(KafkaError(KafkaError._STATE, "Erroneous state"))
        self.seeks.append((tp.topic, tp.partition, tp.offset))
