"""Records a task sends to its own input partitions, handed to their processors at once.

A run's ``runs`` and ``steps`` records are partitioned like its state, so most of what
a task sends (a step request, a step's outcome) is input of the same task. Waiting for
it to come back through the broker costs a transaction commit and a fetch per hop; so
the runtime hands such a record to its processor right away, inside the transaction
that writes it (Kafka Streams forwards records between the processors of one task the
same way). The record is still written: the copy read back later finds its work done
(the run's state has moved on) and changes nothing. Only topics whose processors are
idempotent against the task's state are delivered locally.
"""

from __future__ import annotations

import time
from typing import Any

from streams.kafka.task import Record

_CREATE_TIME = 1  # confluent_kafka.TIMESTAMP_CREATE_TIME


class LocalMessage:
    """A ``Record`` shaped like the confluent-kafka messages processors get; it has no
    offset (-1) until the broker has it."""

    __slots__ = ("_record", "_ts_ms")

    def __init__(self, record: Record) -> None:
        self._record, self._ts_ms = record, int(time.time() * 1000)

    def topic(self) -> str:
        return self._record.topic

    def partition(self) -> int:
        return self._record.partition

    def offset(self) -> int:
        return -1

    def key(self) -> bytes | None:
        return self._record.key

    def value(self) -> bytes | None:
        return self._record.value

    def timestamp(self) -> tuple[int, int]:
        return _CREATE_TIME, self._ts_ms

    def headers(self) -> None:
        return None

    def error(self) -> None:
        return None


def is_local(message: Any) -> bool:
    """Whether ``message`` was handed over inside its task, not read from the broker."""
    return isinstance(message, LocalMessage)
