"""Records the processors send: encoded, keyed, and routed to their partition here, so
every processor routes a key the same way (a run's records and its state must meet in
one task)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from schemas.codec import AvroCodec, DecodeError, NewerSchemaError
from schemas.messages import HistoryRecord, Quarantined
from stepstream.settings import Settings
from stepstream.step import now_ms
from streams.delays import DelayTiers
from streams.kafka.task import Record, Task
from streams.masked import masked_history
from streams.metrics import Metrics
from streams.partitioner import partition_of

log = logging.getLogger("stepstream.quarantine")

QUARANTINED_VALUE_BYTES = 64 * 1024
"""Most bytes of a quarantined record's key and value kept (the rest is cut)."""


def by_run_id(record: Any) -> str:
    """What a record of a run is about: the key ``Outputs.decoded`` checks."""
    return str(record.run_id)


class Outputs:
    """Builds the namespace's records; knows each topic's partition count."""

    def __init__(self, settings: Settings, codec: AvroCodec, metrics: Metrics,
                 partitions: Mapping[str, int], tiers: DelayTiers) -> None:
        self.settings, self.codec, self.metrics = settings, codec, metrics
        self.partitions, self.tiers = partitions, tiers
        self.secrets = settings.secrets()

    def to(self, suffix: str, key: str, message: Any) -> Record:
        """``message`` for ``{namespace}.{suffix}``, keyed by ``key``."""
        return self.raw(self.settings.topic(suffix), key.encode(), self.codec.encode(message))

    def history(self, record: HistoryRecord) -> Record:
        """``record`` for the history topic, secret fields masked (``streams.masked``)."""
        return self.to("history", record.run_id, masked_history(record, self.secrets))

    def raw(self, topic: str, key: bytes, value: bytes) -> Record:
        return Record(topic, partition_of(key, self.partitions.get(topic, 1)), key, value)

    def delayed(self, suffix: str, key: str, message: Any, delay_ms: int) -> Record:
        """``message`` for ``suffix``, through the delay tier that fits ``delay_ms``."""
        topic = self.settings.topic(suffix)
        tier, wrapped = self.tiers.wrap(topic, key.encode(), self.codec.encode(message),
                                        due_ms=now_ms() + delay_ms)
        self.metrics.retries_scheduled.labels(tier).inc()
        return self.to(f"delay.{tier}", key, wrapped)

    def decoded(self, task: Task, message: Any, kinds: Any,
                owner: Callable[[Any], str | None] | None = None) -> Any:
        """``message``'s record if it decodes to one of ``kinds`` and lies where its key
        routes it; else it is set aside in ``task``'s transaction and None is returned.

        ``owner`` names what the record is about (a run id): the key it must carry, since
        the task that reads it holds that state and no other task does. A record of a
        newer stepstream raises ``NewerSchemaError``: it is not set aside but waited
        for (``streams.kafka.newer``)."""
        try:
            record = self.codec.decode(message.value())
            if not isinstance(record, kinds):
                raise DecodeError(
                    f"{type(record).__name__} does not belong on {message.topic()}")
            reason = self._misrouted(message, owner(record) if owner else None)
        except DecodeError as exc:
            reason = str(exc)
        except NewerSchemaError:
            raise
        except Exception as exc:  # the codec on hostile bytes: nothing undecodable goes on
            reason = f"undecodable: {type(exc).__name__}: {exc}"
        if reason is None:
            return record
        log.warning("quarantined %s[%d]@%d: %s", message.topic(), message.partition(),
                    message.offset(), reason)
        task.send(self.quarantined(message, reason))
        return None

    def _misrouted(self, message: Any, owner: str | None) -> str | None:
        """Why ``message`` is not where the engine would have put it (None: it is)."""
        key: bytes | None = message.key()
        if owner is not None and key != owner.encode():
            return f"keyed {key!r}, not by {owner!r}, what it is about"
        partitions = self.partitions.get(message.topic())
        if key is None or partitions is None:
            return None
        home = partition_of(key, partitions)
        if home != message.partition():
            return f"key {key[:100]!r} belongs to partition {home}"
        return None

    def quarantined(self, message: Any, reason: str) -> Record:
        """A confluent-kafka ``message`` set aside, with the reason (its bytes cut)."""
        topic = message.topic()
        self.metrics.quarantined.labels(topic).inc()
        record = Quarantined(topic=topic, partition=message.partition(),
                             offset=message.offset(), reason=reason, ts=now_ms(),
                             key=_cut(message.key()), value=_cut(message.value()))
        return self.to("quarantine", f"{topic}:{message.partition()}", record)


def _cut(raw: bytes | None) -> bytes | None:
    return raw if raw is None else raw[:QUARANTINED_VALUE_BYTES]
