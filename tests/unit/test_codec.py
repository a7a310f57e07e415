"""The Avro single-object codec, and the ``.avsc`` files against ``schemas.messages``."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from fastavro.schema import to_parsing_canonical_form
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import messages
from schemas.codec import (
    MARKER,
    RECORDS,
    AvroCodec,
    DecodeError,
    NewerSchemaError,
    default_codec,
)

SCHEMA_DIR = Path(messages.__file__).parent
LONGS = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(messages))


def optional_inner(hint: Any) -> Any | None:
    """``X`` for ``X | None``, else None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        assert len(args) == 2 and type(None) in args, f"unsupported union {hint}"
        return next(a for a in args if a is not type(None))
    return None


def strategy(hint: Any, *, full: bool = False) -> st.SearchStrategy[Any]:
    """Values of a field typed ``hint``, as the codec must carry them.

    With ``full``, every optional field holds a value and every map and array at
    least one item, so that each field of each nested record is on the wire.
    """
    if (inner := optional_inner(hint)) is not None:
        return strategy(inner, full=full) if full else st.none() | strategy(inner)
    if dataclasses.is_dataclass(hint):
        return st.builds(hint, **{name: strategy(h, full=full)
                                  for name, h in hints(hint).items()})
    size = {"min_size": 1 if full else 0, "max_size": 3}
    if typing.get_origin(hint) is dict:
        key, value = typing.get_args(hint)
        return st.dictionaries(strategy(key), strategy(value, full=full), **size)
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return st.lists(strategy(item, full=full), **size)
    return {str: st.text(max_size=20), int: LONGS, bool: st.booleans(),
            bytes: st.binary(max_size=20)}[hint]


def minimal(hint: Any) -> Any:
    """The simplest value of a field typed ``hint``."""
    if optional_inner(hint) is not None:
        return None
    if dataclasses.is_dataclass(hint):
        return hint(**{name: minimal(h) for name, h in hints(hint).items()})
    if typing.get_origin(hint) is dict:
        return {}
    if typing.get_origin(hint) is list:
        return []
    return hint()


def test_records_lists_every_record_of_the_messages_module() -> None:
    defined = {obj for obj in vars(messages).values()
               if isinstance(obj, type) and dataclasses.is_dataclass(obj)}

    assert set(RECORDS) == defined
    assert len(RECORDS) == len(set(RECORDS))


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_every_record_round_trips(cls: type, data: st.DataObject) -> None:
    codec = default_codec()
    record = data.draw(strategy(cls))

    encoded = codec.encode(record)

    assert encoded[:2] == MARKER
    decoded = codec.decode(encoded)
    assert type(decoded) is cls
    assert decoded == record
    assert codec.decode_as(encoded, cls) == record


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_every_record_round_trips_with_every_field_filled(cls: type,
                                                          data: st.DataObject) -> None:
    codec = default_codec()
    record = data.draw(strategy(cls, full=True))

    assert codec.decode(codec.encode(record)) == record


def test_nested_records_come_back_as_dataclasses() -> None:
    error = messages.ErrorInfo(type="E", message="m", traceback="t")
    event = messages.Event(id="e", name="n")
    state = messages.RunState(
        run_id="r", function_id="f", event=event, status="running", seq=3, started_at=7,
        memo={"a": messages.MemoEntry(output_json="1"), "b": messages.MemoEntry(error=error)},
        dispatched={"3": messages.Dispatched(step_id="c", attempt=1)},
        pending={"d": messages.Pending(kind="retry", attempt=2, timer_id="retry:d:2"),
                 "w": messages.Pending(kind="event", timer_id="wait:w", event="x/y",
                                       condition="async.data.n == 1")},
        error=error, parent_run_id="p", parent_step_id="s", answered=True)
    planned = messages.StepPlanned(run_id="r", seq=2, ts=5, steps=[
        messages.PlannedStep(step_id="a", kind="run"),
        messages.PlannedStep(step_id="b", kind="wait", until_ms=9, event="x/y")])
    waiters = messages.WaiterSet(waiters=[messages.Waiter(
        run_id="r", step_id="w", kind="step", event_name="x/y", trigger=event, expires_at=9)])

    decoded = default_codec().decode(default_codec().encode(state))
    decoded_planned = default_codec().decode(default_codec().encode(planned))
    decoded_waiters = default_codec().decode(default_codec().encode(waiters))

    assert isinstance(decoded.event, messages.Event)
    assert isinstance(decoded.memo["b"], messages.MemoEntry)
    assert isinstance(decoded.memo["b"].error, messages.ErrorInfo)
    assert isinstance(decoded.dispatched["3"], messages.Dispatched)
    assert isinstance(decoded.pending["w"], messages.Pending)
    assert decoded == state
    assert all(isinstance(p, messages.PlannedStep) for p in decoded_planned.steps)
    assert decoded_planned == planned
    assert isinstance(decoded_waiters.waiters[0].trigger, messages.Event)
    assert decoded_waiters == waiters


# --- what is not a record -----------------------------------------------------------


def sample() -> bytes:
    return default_codec().encode(messages.TimerFired(run_id="r", timer_id="retry:1", ts=5))


@pytest.mark.parametrize("garbage", [
    b"", b"\xc3", MARKER, MARKER + b"\x00" * 7, b"{\"name\": \"x\"}", b"\x00" * 32,
    b"\xc3\x02" + sample()[2:],
], ids=["empty", "half-marker", "marker-only", "short-fingerprint", "json", "zeros",
        "wrong-version"])
def test_garbage_raises_decode_error(garbage: bytes) -> None:
    with pytest.raises(DecodeError):
        default_codec().decode(garbage)


def test_an_unknown_fingerprint_under_the_marker_is_taken_for_a_newer_version() -> None:
    data = sample()
    unknown = MARKER + bytes(8) + data[10:]

    with pytest.raises(NewerSchemaError, match="unknown schema fingerprint 0000000000000000"):
        default_codec().decode(unknown)
    assert default_codec().record_type(unknown) is None
    assert not issubclass(NewerSchemaError, DecodeError)  # not set aside as undecodable


@settings(max_examples=50, deadline=None)
@given(record=strategy(messages.StepFailed))
def test_every_truncation_raises_decode_error(record: messages.StepFailed) -> None:
    data = default_codec().encode(record)

    for end in range(len(data)):
        with pytest.raises(DecodeError):
            default_codec().decode(data[:end])


@given(body=st.binary(max_size=64))
def test_random_bytes_after_a_known_header_never_escape_as_other_errors(body: bytes) -> None:
    with contextlib.suppress(DecodeError):
        default_codec().decode(sample()[:10] + body)


def test_decode_as_refuses_another_record() -> None:
    with pytest.raises(DecodeError, match="expected Event, got TimerFired"):
        default_codec().decode_as(sample(), messages.Event)


def test_encode_refuses_what_is_not_a_record() -> None:
    with pytest.raises(TypeError):
        default_codec().encode({"run_id": "r"})


def test_default_codec_is_parsed_once() -> None:
    assert default_codec() is default_codec()


# --- the header ---------------------------------------------------------------------


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO (Rabin) as the Avro specification defines it."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_the_event_header_is_what_any_avro_library_writes() -> None:
    # Written out by hand from the Avro spec's parsing canonical form rules, so that a
    # producer in another language (Java's BinaryMessageEncoder, say) and stepstream
    # agree on the bytes of an event on the events topic.
    canonical = ('{"name":"stepstream.Event","type":"record","fields":['
                 '{"name":"id","type":"string"},{"name":"name","type":"string"},'
                 '{"name":"data_json","type":"string"},{"name":"ts","type":"long"}]}')
    event = messages.Event(id="e", name="n", data_json="{}", ts=1)

    encoded = default_codec().encode(event)

    # Single-object encoding: C3 01, then the fingerprint as 8 little-endian bytes.
    assert encoded[:10] == MARKER + crc64_avro(canonical.encode()).to_bytes(8, "little")


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_the_header_is_the_marker_and_the_schema_fingerprint(cls: type) -> None:
    codec = AvroCodec()
    _, parsed = codec._by_class[cls]
    fingerprint = crc64_avro(to_parsing_canonical_form(parsed).encode())
    record = minimal(cls)

    encoded = codec.encode(record)

    assert encoded[:2] == b"\xc3\x01"
    assert encoded[2:10] == fingerprint.to_bytes(8, "little")


def test_every_record_type_has_its_own_fingerprint() -> None:
    codec = default_codec()
    headers = {codec.encode(minimal(cls))[:10] for cls in RECORDS}

    assert len(headers) == len(RECORDS)


# --- the .avsc files agree with the dataclasses --------------------------------------

AVRO_PRIMITIVES = {str: "string", int: "long", bool: "boolean", bytes: "bytes"}


def avro_type(hint: Any) -> Any:
    """The Avro type a field typed ``hint`` must have in its ``.avsc`` file."""
    if (inner := optional_inner(hint)) is not None:
        return ["null", avro_type(inner)]
    if dataclasses.is_dataclass(hint):
        return f"stepstream.{hint.__name__}"
    if typing.get_origin(hint) is dict:
        key, value = typing.get_args(hint)
        assert key is str
        return {"type": "map", "values": avro_type(value)}
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return {"type": "array", "items": avro_type(item)}
    return AVRO_PRIMITIVES[hint]


def dataclass_default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_the_avsc_file_matches_the_dataclass(cls: type) -> None:
    schema = json.loads((SCHEMA_DIR / f"{cls.__name__}.avsc").read_text())
    fields = dataclasses.fields(cls)
    types_of = hints(cls)

    assert (schema["type"], schema["name"], schema["namespace"]) == (
        "record", cls.__name__, "stepstream")
    assert [f["name"] for f in schema["fields"]] == [f.name for f in fields]
    for avsc, field in zip(schema["fields"], fields, strict=True):
        where = f"{cls.__name__}.{field.name}"
        assert avsc["type"] == avro_type(types_of[field.name]), where
        default = dataclass_default(field)
        if default is dataclasses.MISSING:
            assert "default" not in avsc, f"{where} has a default only in the .avsc"
        else:
            assert "default" in avsc, f"{where} has a default only in the dataclass"
            assert avsc["default"] == default, where
            if optional_inner(types_of[field.name]) is not None:
                assert default is None, f"{where}: an optional field must default to null"


def test_there_is_no_avsc_file_without_a_record() -> None:
    on_disk = {p.stem for p in SCHEMA_DIR.glob("*.avsc")}

    assert on_disk == {cls.__name__ for cls in RECORDS}
