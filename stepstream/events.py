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

from schemas.codec import MARKER, AvroCodec, DecodeError, NewerSchemaError
from schemas.messages import Event
from stepstream.errors import SerializationError

FUNCTION_FAILED = "stepstream/function.failed"
"""The event a run that failed for good emits; ``on_failure`` handlers run on it."""

_RUN_ID_NAMESPACE = uuid.UUID("6b1f4c1e-3f0a-4f55-9a57-2d8e4b1b7a11")

EVENT_NAME_MAX_BYTES = 256
"""The longest event name, in bytes of UTF-8: a name is the key of its copy on
``events.by-name`` and a label of the metrics."""
EVENT_ID_MAX_BYTES = 256
"""The longest event id, in bytes of UTF-8: an id is part of every run record it starts."""
TS_MAX_MS = 253_402_300_799_999
"""The latest event time accepted (9999-12-31T23:59:59.999Z, in ms): what a datetime can
hold; the earliest is 0 (1970)."""
DATA_MAX_DEPTH = 64
"""How deeply an event's data may nest objects and arrays: deeper JSON is refused before
anything recursive (the JSON encoder, CEL) meets it."""


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
        size = len(text.encode())
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError: a lone surrogate
        raise SerializationError(f"{what} is not JSON-serializable: {exc}") from exc
    except RecursionError as exc:
        raise SerializationError(f"{what} is nested too deeply to be JSON") from exc
    if size > limit:
        raise SerializationError(f"{what} is {size} bytes of JSON, over the limit of {limit}")
    return text


def make_event(name: str, data: dict[str, Any] | None, *, id: str | None, ts: int,
               limit: int) -> Event:
    """A validated envelope for ``name``; a random id when none is given.

    Raises:
        SerializationError: a limit of the envelope (``EVENT_NAME_MAX_BYTES``,
            ``EVENT_ID_MAX_BYTES``, ``TS_MAX_MS``, ``DATA_MAX_DEPTH``, ``limit``) is passed,
            or ``data`` is not JSON.
    """
    event_id = id or uuid.uuid4().hex
    _check_envelope(name, event_id, ts)
    data = data if data is not None else {}
    if _deeper_than(data, DATA_MAX_DEPTH):
        raise SerializationError(f"event {name!r} data nests deeper than {DATA_MAX_DEPTH}")
    data_json = dumps(data, limit=limit, what=f"event {name!r} data")
    return Event(id=event_id, name=name, data_json=data_json, ts=ts)


def _check_envelope(name: object, event_id: object, ts: object) -> None:
    for what, text, most in (("name", name, EVENT_NAME_MAX_BYTES),
                             ("id", event_id, EVENT_ID_MAX_BYTES)):
        if not isinstance(text, str) or not text:
            raise SerializationError(f"an event needs a non-empty string {what}")
        try:
            size = len(text.encode())
        except UnicodeEncodeError as exc:
            raise SerializationError(f"event {what} is not valid Unicode: {exc}") from exc
        if size > most:
            raise SerializationError(f"event {what} is {size} bytes, over the limit of {most}")
    if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts <= TS_MAX_MS:
        raise SerializationError(f"event ts must be an integer of ms from 0 to {TS_MAX_MS}, "
                                 f"not {str(ts)[:40]}")


def _deeper_than(value: Any, most: int) -> bool:
    """Whether ``value`` nests lists and dicts more than ``most`` deep (no recursion)."""
    level: list[Any] = [value]
    for _ in range(most):
        level = [child for item in level if isinstance(item, dict | list)
                 for child in (item.values() if isinstance(item, dict) else item)]
        if not level:
            return False
    return any(isinstance(item, dict | list) for item in level)


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
        DecodeError: the value is neither an Avro Event nor a JSON envelope, passes a limit
            of ``make_event``, or cannot be decoded for any other reason: this is the edge,
            nothing undecodable goes further.
        NewerSchemaError: an Avro record of a schema this version does not know (a
            newer stepstream's ``Event``): the engine waits for a newer worker.
    """
    if len(value) > limit + 64 * 1024:
        raise DecodeError(f"event of {len(value)} bytes is over the limit of {limit}")
    try:
        return _decoded(value, codec, fallback_id=fallback_id, fallback_ts=fallback_ts,
                        limit=limit)
    except SerializationError as exc:
        raise DecodeError(str(exc)) from exc
    except RecursionError as exc:
        raise DecodeError(f"event JSON nests deeper than {DATA_MAX_DEPTH}") from exc
    except (DecodeError, NewerSchemaError):
        raise
    except Exception as exc:  # any other failure of the libraries on hostile bytes
        raise DecodeError(f"undecodable event: {type(exc).__name__}: {exc}") from exc


def _decoded(value: bytes, codec: AvroCodec, *, fallback_id: str, fallback_ts: int,
             limit: int) -> Event:
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
        _check_envelope(event.name, event.id, event.ts)
        if _deeper_than(data, DATA_MAX_DEPTH):
            raise DecodeError(f"event data nests deeper than {DATA_MAX_DEPTH}")
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
    return make_event(body["name"], data, id=event_id, ts=ts, limit=limit)


def run_id_for(function_id: str, event_id: str) -> str:
    """The run of ``function_id`` triggered by ``event_id``: the same pair, the same run."""
    return uuid.uuid5(_RUN_ID_NAMESPACE, f"{function_id}\x00{event_id}").hex
