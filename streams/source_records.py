"""A record of a source topic (``TopicTrigger``) as an engine ``Event``, and as CEL's
``record``.

The event is named after the topic; its data is the record's value (a JSON object, or a
Schema Registry record decoded to one); its id is ``topic:partition:offset`` (so a
record read again maps to the same runs) unless the trigger's ``id`` expression gives
one; its time is the record's timestamp. Anything that does not make an event raises
``DecodeError``: the record is quarantined, never retried.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import decimal
import json
import uuid
from typing import Any

from schemas.codec import DecodeError
from schemas.messages import Event
from stepstream.errors import ExpressionError, SerializationError
from stepstream.events import make_event
from stepstream.expressions import evaluate
from stepstream.step import now_ms
from stepstream.topic_trigger import TopicTrigger
from streams.registry import RegistryDecoder, is_framed


def _text(raw: bytes | str | None) -> str | None:
    if raw is None or isinstance(raw, str):
        return raw
    return raw.decode("utf-8", errors="replace")


def _plain(value: Any) -> Any:
    """A registry record's non-JSON values (Avro bytes and logical types) as JSON."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


class SourceRecords:
    """Turns records of source topics into events."""

    def __init__(self, registry: RegistryDecoder, *, limit: int) -> None:
        """``limit``: the largest event data, in bytes of JSON."""
        self.registry, self.limit = registry, limit

    async def value_of(self, message: Any) -> dict[str, Any]:
        """The record's value as a JSON object (a registry lookup runs off the loop)."""
        raw: bytes | None = message.value()
        if raw is None:
            raise DecodeError("no value (a tombstone)")
        if len(raw) > self.limit + 64 * 1024:
            raise DecodeError(f"value of {len(raw)} bytes is over the limit of {self.limit}")
        if is_framed(raw):
            decoded = await asyncio.to_thread(self.registry.decode, raw, message.topic())
            try:
                value = json.loads(json.dumps(decoded, default=_plain))
            except (TypeError, ValueError) as exc:
                raise DecodeError(f"registry record is not JSON: {exc}") from exc
        else:
            try:
                value = json.loads(raw)
            except (UnicodeDecodeError, ValueError) as exc:
                raise DecodeError(f"neither JSON nor a Schema Registry record: {exc}") from exc
            except RecursionError as exc:
                raise DecodeError("value JSON nests too deeply") from exc
        if not isinstance(value, dict):
            raise DecodeError(f"the value must be a JSON object, not {type(value).__name__}")
        return value

    async def event_of(self, message: Any, trigger: TopicTrigger | None = None
                       ) -> tuple[Event, dict[str, Any]]:
        """The event ``message`` is, and the record as CEL sees it.

        Raises:
            DecodeError: the value is not a JSON object nor a decodable registry
                record, the id expression gives no id, or the event passes a limit.
        """
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        _, ts = message.timestamp()
        record = {"value": await self.value_of(message), "key": _text(message.key()),
                  "headers": {name: _text(value) for name, value in message.headers() or ()},
                  "timestamp": ts if ts >= 0 else None, "topic": topic,
                  "partition": partition, "offset": offset}
        event_id = f"{topic}:{partition}:{offset}"
        if trigger is not None and trigger.id is not None:
            event_id = self._id(trigger.id, record)
        try:
            event = make_event(topic, record["value"], id=event_id,
                               ts=ts if ts >= 0 else now_ms(), limit=self.limit)
        except SerializationError as exc:
            raise DecodeError(str(exc)) from exc
        return event, record

    @staticmethod
    def _id(expression: str, record: dict[str, Any]) -> str:
        try:
            value = evaluate(expression, {"record": record})
        except ExpressionError as exc:
            raise DecodeError(f"id expression {expression!r} failed: {exc}") from exc
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            raise DecodeError(f"id expression {expression!r} gave {value!r}, not an id "
                              "(a non-empty string or an integer)")
        return str(value)
