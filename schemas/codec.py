"""Avro single-object encoding of the records in ``schemas.messages``.

Every message starts with the two marker bytes ``C3 01`` and the 8-byte
CRC-64-AVRO fingerprint of its writer schema (the Avro specification's
single-object encoding). The fingerprint tells the reader which record it holds,
so one topic can carry several record types, and a schema can evolve: a reader
that knows an older fingerprint still resolves it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import types
import typing
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas import messages

MARKER = b"\xc3\x01"
_HEADER_LEN = len(MARKER) + 8
_SCHEMA_DIR = Path(__file__).parent

# Referenced types first: a record may only name records parsed before it.
RECORDS: tuple[type, ...] = (
    messages.ErrorInfo, messages.Event, messages.MemoEntry, messages.MemoItem,
    messages.LogLine,
    messages.PlannedStep,
    messages.Waiter, messages.Dispatched, messages.Pending,
    messages.RunStarted, messages.StepCompleted, messages.StepFailed, messages.StepPlanned,
    messages.FunctionFinished, messages.TimerFired, messages.CancelRequested,
    messages.EventMatched, messages.ChildFinished, messages.ReplayRequested,
    messages.StepDeferred, messages.ChainAlive, messages.FlowTimer,
    messages.StepRequest,
    messages.WaiterChanged, messages.WaiterSet, messages.Delayed, messages.HistoryRecord,
    messages.DeadLetter, messages.Quarantined, messages.RunState,
)


class DecodeError(ValueError):
    """Bytes that are not a record this codec knows."""


def _converter(hint: Any, record_converter: Callable[[type], Callable[[Any], Any]]
               ) -> Callable[[Any], Any] | None:
    """How to convert a value of a field typed ``hint`` (None: as it is).

    ``record_converter`` converts the records nested in it: Avro dict to dataclass when
    decoding, dataclass to dict when encoding.
    """
    if dataclasses.is_dataclass(hint):
        return record_converter(hint)  # type: ignore[arg-type]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = next(a for a in typing.get_args(hint) if a is not type(None))
        optional = _converter(inner, record_converter)
        if optional is None:
            return None
        return lambda v: None if v is None else optional(v)
    if origin is dict:
        values = _converter(typing.get_args(hint)[1], record_converter)
        if values is None:
            return None
        return lambda v: {k: values(x) for k, x in v.items()}
    if origin is list:
        convert = _converter(typing.get_args(hint)[0], record_converter)
        if convert is None:
            return None
        return lambda v: [convert(x) for x in v]
    return None


def _nested(cls: type, record_converter: Callable[[type], Callable[[Any], Any]]
            ) -> tuple[tuple[str, ...], dict[str, Callable[[Any], Any]]]:
    """The fields of ``cls`` that pass as they are, and converters for the others."""
    hints = typing.get_type_hints(cls, vars(messages))
    nested = {name: c for name in hints
              if (c := _converter(hints[name], record_converter)) is not None}
    return tuple(name for name in hints if name not in nested), nested


# Converters are built once per record class: encoding and decoding sit on every hop.
@cache
def _builder(cls: type) -> Callable[[dict[str, Any]], Any]:
    _, nested = _nested(cls, _builder)

    def build(record: dict[str, Any]) -> Any:
        for name, convert in nested.items():
            record[name] = convert(record[name])
        return cls(**record)

    return build


@cache
def _flattener(cls: type) -> Callable[[Any], dict[str, Any]]:
    plain, nested = _nested(cls, _flattener)

    def flatten(obj: Any) -> dict[str, Any]:
        record = {name: getattr(obj, name) for name in plain}
        for name, convert in nested.items():
            record[name] = convert(getattr(obj, name))
        return record

    return flatten


def _expand(schema: Any, sources: dict[str, Any], defined: set[str]) -> Any:
    """``schema`` with each named record written out in full at its first use."""
    if isinstance(schema, str):
        if schema in sources and schema not in defined:
            defined.add(schema)
            return _expand(sources[schema], sources, defined)
        return schema
    if isinstance(schema, list):
        return [_expand(s, sources, defined) for s in schema]
    if isinstance(schema, dict):
        if schema.get("type") == "record":
            defined.add(f"{schema.get('namespace', 'stepstream')}.{schema['name']}")
            fields = [{**f, "type": _expand(f["type"], sources, defined)}
                      for f in schema["fields"]]
            return {**schema, "fields": fields}
        if schema.get("type") == "map":
            return {**schema, "values": _expand(schema["values"], sources, defined)}
        if schema.get("type") == "array":
            return {**schema, "items": _expand(schema["items"], sources, defined)}
    return schema


class AvroCodec:
    """Encodes and decodes the records of ``schemas.messages``; parse once, share it."""

    def __init__(self, schema_dir: Path = _SCHEMA_DIR) -> None:
        self._by_class: dict[type, tuple[bytes, Any]] = {}
        self._by_fingerprint: dict[bytes, tuple[type, Any]] = {}
        sources: dict[str, Any] = {}
        for cls in RECORDS:
            raw = json.loads((schema_dir / f"{cls.__name__}.avsc").read_text())
            sources[f"{raw['namespace']}.{raw['name']}"] = raw
            # Inline the records it names, so its fingerprint changes when they do.
            parsed = fastavro.parse_schema(_expand(raw, sources, set()), named_schemas={})
            canonical = to_parsing_canonical_form(parsed)
            # fastavro's hex is already the little-endian bytes the spec puts on the wire.
            fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
            self._by_class[cls] = (MARKER + fp, parsed)
            self._by_fingerprint[fp] = (cls, parsed)

    def encode(self, obj: Any) -> bytes:
        """The single-object encoding of a record from ``schemas.messages``."""
        try:
            header, schema = self._by_class[type(obj)]
        except KeyError:
            raise TypeError(f"{type(obj).__name__} is not a stepstream record") from None
        out = io.BytesIO()
        out.write(header)
        flatten = _flattener(type(obj))  # type: ignore[arg-type]  # types are hashable
        fastavro.schemaless_writer(out, schema, flatten(obj))
        return out.getvalue()

    def decode(self, data: bytes) -> Any:
        """The record in ``data``; raises DecodeError for anything else."""
        if len(data) < _HEADER_LEN or data[:2] != MARKER:
            raise DecodeError("not Avro single-object encoded (no C3 01 marker)")
        try:
            cls, schema = self._by_fingerprint[bytes(data[2:_HEADER_LEN])]
        except KeyError:
            raise DecodeError(f"unknown schema fingerprint {data[2:_HEADER_LEN].hex()}") from None
        try:
            record = fastavro.schemaless_reader(io.BytesIO(data[_HEADER_LEN:]), schema, None)
        except Exception as exc:  # fastavro raises several types on truncated input
            raise DecodeError(f"corrupt {cls.__name__} record: {exc}") from exc
        return _builder(cls)(record)  # type: ignore[arg-type]

    def record_type(self, data: bytes) -> type | None:
        """The record class ``data`` holds, from its header alone (None: not ours)."""
        if len(data) < _HEADER_LEN or data[:2] != MARKER:
            return None
        known = self._by_fingerprint.get(bytes(data[2:_HEADER_LEN]))
        return None if known is None else known[0]

    def decode_as(self, data: bytes, cls: type[Any] | tuple[type[Any], ...]) -> Any:
        """Decode and check the record is a ``cls`` (or one of them)."""
        obj = self.decode(data)
        if not isinstance(obj, cls):
            names = " or ".join(c.__name__ for c in (cls if isinstance(cls, tuple) else (cls,)))
            raise DecodeError(f"expected {names}, got {type(obj).__name__}")
        return obj


@cache
def default_codec() -> AvroCodec:
    """The codec of the schemas shipped with this version, parsed once per process."""
    return AvroCodec()
