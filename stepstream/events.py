"""The event envelope: what users send, and how any Kafka client may send it.

On the events topic an event is either the Avro record ``stepstream.Event``
(single-object encoded, as ``Stepstream.send`` writes it) or plain JSON
``{"name": ..., "data": {...}, "id": "...", "ts": ms}`` so that kcat or any
client can trigger a run without a schema.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from schemas.codec import MARKER, AvroCodec, DecodeError
from schemas.messages import Event
from stepstream.errors import SerializationError

FUNCTION_FAILED = "stepstream/function.failed"
"""The event a run that failed for good emits; ``on_failure`` handlers run on it."""

_RUN_ID_NAMESPACE = uuid.UUID("6b1f4c1e-3f0a-4f55-9a57-2d8e4b1b7a11")


@dataclass(frozen=True, slots=True)
class TriggerEvent:
    """The event a handler sees as ``ctx.event``."""

    id: str
    name: str
    data: dict[str, Any]
    ts: int

    @classmethod
    def from_envelope(cls, event: Event) -> TriggerEvent:
        """Unpack the wire envelope (data is JSON text inside it)."""
        return cls(id=event.id, name=event.name, data=json.loads(event.data_json), ts=event.ts)


def dumps(value: Any, *, limit: int, what: str) -> str:
    """``value`` as compact JSON, refusing what is not JSON or longer than ``limit`` bytes."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"{what} is not JSON-serializable: {exc}") from exc
    size = len(text.encode())
    if size > limit:
        raise SerializationError(f"{what} is {size} bytes of JSON, over the limit of {limit}")
    return text


def make_event(name: str, data: dict[str, Any] | None, *, id: str | None, ts: int,
               limit: int) -> Event:
    """A validated envelope for ``name``; a random id when none is given."""
    if not name:
        raise SerializationError("an event needs a name")
    data_json = dumps(data if data is not None else {}, limit=limit, what=f"event {name!r} data")
    return Event(id=id or uuid.uuid4().hex, name=name, data_json=data_json, ts=ts)


def decode_event(value: bytes, codec: AvroCodec, *, fallback_id: str, fallback_ts: int,
                 limit: int) -> Event:
    """Decode one message of the events topic.

    Args:
        value: the message value as received.
        codec: the Avro codec.
        fallback_id: the id of an event that carries none. Derive it from the message's
            position so a redelivery maps to the same id (and so to the same run).
        fallback_ts: the time of an event that carries none (the message timestamp).
        limit: the largest ``data`` accepted, in bytes of JSON.

    Raises:
        DecodeError: the value is neither an Avro Event nor a JSON envelope, or too large.
    """
    if len(value) > limit + 64 * 1024:
        raise DecodeError(f"event of {len(value)} bytes is over the limit of {limit}")
    if value[:2] == MARKER:
        event: Event = codec.decode_as(value, Event)
        if len(event.data_json.encode()) > limit:
            raise DecodeError(f"event data is over the limit of {limit} bytes")
        # Checked here, at the edge, so that no agent downstream meets data it cannot load.
        try:
            data = json.loads(event.data_json)
        except ValueError as exc:
            raise DecodeError(f"event data is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise DecodeError("event data must be a JSON object")
        return event
    try:
        body = json.loads(value)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DecodeError(f"neither Avro nor JSON: {exc}") from exc
    if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
        raise DecodeError('JSON event must be an object with a non-empty string "name"')
    data = body.get("data", {})
    if not isinstance(data, dict):
        raise DecodeError('"data" must be a JSON object')
    event_id, ts = body.get("id", fallback_id), body.get("ts", fallback_ts)
    if not isinstance(event_id, str) or not event_id or not isinstance(ts, int):
        raise DecodeError('"id" must be a non-empty string and "ts" an integer (ms)')
    try:
        return make_event(body["name"], data, id=event_id, ts=ts, limit=limit)
    except SerializationError as exc:
        raise DecodeError(str(exc)) from exc


def run_id_for(function_id: str, event_id: str) -> str:
    """The run of ``function_id`` triggered by ``event_id``: the same pair, the same run."""
    return uuid.uuid5(_RUN_ID_NAMESPACE, f"{function_id}\x00{event_id}").hex
