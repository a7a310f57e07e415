"""Avro single-object encoding of the records in ``schemas.messages``.

Every message starts with the two marker bytes ``C3 01`` and the 8-byte
CRC-64-AVRO fingerprint of its writer schema (the Avro specification's
single-object encoding). The fingerprint tells the reader which record it holds,
so one topic can carry several record types, and which version of it: a record
written with a released older version (``schemas.versions``) is read with Avro's
writer-to-reader resolution into the current one. A fingerprint this version does not
know, under the marker, is taken for a record of a newer stepstream
(``NewerSchemaError``): the engine waits for a newer worker rather than set it aside.
"""

from __future__ import annotations

import dataclasses
import io
import types
import typing
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

from schemas import messages, versions
from schemas.versions import RECORDS, current, fingerprint_of, parse, released

__all__ = ["MARKER", "RECORDS", "AvroCodec", "DecodeError", "NewerSchemaError",
           "default_codec"]

MARKER = b"\xc3\x01"
_HEADER_LEN = len(MARKER) + 8


class DecodeError(ValueError):
    """Bytes that are not a record this codec knows."""


class NewerSchemaError(Exception):
    """A record under the single-object marker whose writer schema this version does not
    know: written by a newer stepstream during a rolling upgrade, most likely (every
    released version this one could meet is known). Not a ``DecodeError``, so code that
    sets undecodable records aside lets it through: the engine's runtime waits at it
    for a newer worker (``streams.kafka.newer``)."""

    def __init__(self, fingerprint: bytes) -> None:
        super().__init__(f"unknown schema fingerprint {fingerprint.hex()} (a record of a "
                         "newer stepstream?)")
        self.fingerprint = fingerprint


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


class AvroCodec:
    """Encodes and decodes the records of ``schemas.messages``; parse once, share it.

    Encodes with the schemas of ``schema_dir``; decodes those and every released version
    in ``released_dir`` (defaults: ``schemas.versions``' directories, looked up when
    called, so that a test can stand in another version's schemas)."""

    def __init__(self, schema_dir: Path | None = None, released_dir: Path | None = None
                 ) -> None:
        schema_dir = schema_dir or versions.SCHEMA_DIR
        released_dir = released_dir or versions.RELEASED_DIR
        self._by_class: dict[type, tuple[bytes, Any]] = {}
        # fingerprint -> (class, writer schema, reader schema: None for the current one,
        # which is read as it is, without resolution)
        self._by_fingerprint: dict[bytes, tuple[type, Any, Any]] = {}
        classes = {cls.__name__: cls for cls in RECORDS}
        for name, schema in current(schema_dir).items():
            parsed = parse(schema)
            fp = fingerprint_of(parsed)
            self._by_class[classes[name]] = (MARKER + fp, parsed)
            self._by_fingerprint[fp] = (classes[name], parsed, None)
        for name, by_number in released(released_dir).items():
            cls = classes[name]
            reader = self._by_class[cls][1]
            for schema in by_number.values():
                writer = parse(schema)
                self._by_fingerprint.setdefault(fingerprint_of(writer), (cls, writer, reader))

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
        """The record in ``data``; raises DecodeError for anything else, NewerSchemaError
        for a record of a schema version it does not know."""
        if len(data) < _HEADER_LEN or data[:2] != MARKER:
            raise DecodeError("not Avro single-object encoded (no C3 01 marker)")
        fp = bytes(data[2:_HEADER_LEN])
        try:
            cls, writer, reader = self._by_fingerprint[fp]
        except KeyError:
            raise NewerSchemaError(fp) from None
        try:
            record = fastavro.schemaless_reader(io.BytesIO(data[_HEADER_LEN:]), writer, reader)
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
