"""Records of a newer stepstream: a partition waits at one for a newer worker, instead of
setting it aside.

During a rolling upgrade, workers of two versions share the consumer groups. Once a
schema changed, a newer worker's records carry a fingerprint an older worker does not
know (``schemas.codec.NewerSchemaError``), and they reach partitions older workers own:
runs started by a newer trigger, history records, a run state a newer worker left in a
changelog. An older worker stops the partition at such a record: it neither processes
it nor anything after it, commits up to it and no further, and reads no more of that
partition (its other partitions, and the task's other topics, go on). The rollout moves
the partition to a newer worker (each worker that stops or joins rebalances the group;
when the last older worker stops, at the latest), which reads on from that record.
Nothing is set aside and the partition's order is kept; its runs pause meanwhile.

The other way, an older worker refusing the partition, is not open: librdkafka takes no
assignor written in Python, and leaving the group would move every partition of the
worker, to other older workers as likely as to newer ones.

Garbage that looks like a newer record (the marker, then 8 bytes no version has) would
stop its partition for good. So the wait is bounded: a record written more than
``wait_s`` ago (its timestamp, so the bound holds across rebalances and restarts) is
set aside like any undecodable one. While partitions wait, each wait logs a warning
with the partition, offset and fingerprint, and ``stepstream_newer_schema_waiting``
counts them (docs/production.md, "Upgrading stepstream").
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from schemas.codec import NewerSchemaError

log = logging.getLogger("stepstream.upgrade")

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Waiting:
    """A partition stopped at a record of a newer stepstream."""

    offset: int
    fingerprint: bytes
    until_s: float
    """When the record is set aside after all (monotonic seconds)."""


class NewerRecords:
    """The partitions of one consumer that wait at a record of a newer stepstream."""

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        self.waiting: dict[TopicPartition, Waiting] = {}

    def wait(self, message: Any, error: NewerSchemaError) -> float | None:
        """Until when (monotonic seconds) ``message``'s partition waits at it; None: it
        was written too long ago, set it aside (``reason``)."""
        tp, offset = (message.topic(), message.partition()), message.offset()
        known = self.waiting.get(tp)
        if known is not None and known.offset == offset:
            until_s = known.until_s
        else:
            written_ms = message.timestamp()[1]
            age_s = max(0.0, time.time() - written_ms / 1000) if written_ms > 0 else 0.0
            until_s = time.monotonic() + self.wait_s - age_s
        if until_s <= time.monotonic():
            self.waiting.pop(tp, None)
            return None
        if known is None or known.offset != offset:
            log.warning(
                "%s[%d]@%d was written by a newer stepstream (unknown schema fingerprint "
                "%s): the partition waits there for a worker of that version (finish the "
                "rollout), %.0fs at most, then sets the record aside "
                "(STEPSTREAM_NEWER_SCHEMA_WAIT_S)", tp[0], tp[1], offset,
                error.fingerprint.hex(), until_s - time.monotonic())
        self.waiting[tp] = Waiting(offset, error.fingerprint, until_s)
        return until_s

    def reason(self, error: NewerSchemaError) -> str:
        """Why a record that waited long enough is set aside."""
        return (f"{error}: no worker that knows its schema read it within "
                f"{self.wait_s:.0f}s (STEPSTREAM_NEWER_SCHEMA_WAIT_S)")

    def at(self, tp: TopicPartition) -> int | None:
        """The offset ``tp`` waits at (None: it does not wait)."""
        known = self.waiting.get(tp)
        return None if known is None else known.offset

    def passed(self, tp: TopicPartition, offset: int) -> None:
        """The record at ``offset`` of ``tp`` is processed: whatever ``tp`` waited at, it
        goes on."""
        known = self.waiting.get(tp)
        if known is not None and offset >= known.offset:
            del self.waiting[tp]

    def keep(self, assigned: set[TopicPartition]) -> None:
        """Partitions not ``assigned`` any more wait no more (here)."""
        for tp in [tp for tp in self.waiting if tp not in assigned]:
            del self.waiting[tp]

    def forget(self, partition: int) -> list[TopicPartition]:
        """The partitions numbered ``partition`` wait no more (revoked, or to be read
        again); returns them."""
        gone = [tp for tp in self.waiting if tp[1] == partition]
        for tp in gone:
            del self.waiting[tp]
        return gone
