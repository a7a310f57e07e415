"""The event envelope: Avro or plain JSON on the events topic, and run ids."""

from __future__ import annotations

import json

import pytest

from schemas.codec import DecodeError, default_codec
from schemas.messages import Event, TimerFired
from stepstream.errors import SerializationError
from stepstream.events import (
    DATA_MAX_DEPTH,
    EVENT_ID_MAX_BYTES,
    EVENT_NAME_MAX_BYTES,
    TS_MAX_MS,
    TriggerEvent,
    decode_event,
    make_event,
    run_id_for,
)

LIMIT = 1_000


def decode(value: bytes, *, limit: int = LIMIT) -> Event:
    return decode_event(value, default_codec(), fallback_id="events:0:42", fallback_ts=777,
                        limit=limit)


def as_json(body: object) -> bytes:
    return json.dumps(body).encode()


def test_plain_json_with_id_and_ts_is_taken_as_sent() -> None:
    event = decode(as_json({"name": "a/b", "data": {"x": [1, 2]}, "id": "e-1", "ts": 5}))

    assert event == Event(id="e-1", name="a/b", data_json='{"x":[1,2]}', ts=5)


def test_plain_json_without_id_or_ts_uses_the_message_position_and_time() -> None:
    event = decode(as_json({"name": "a/b", "data": {"x": 1}}))

    assert (event.id, event.ts) == ("events:0:42", 777)


def test_plain_json_without_data_has_empty_data() -> None:
    event = decode(b'{"name": "ping"}')

    assert event.data_json == "{}"
    assert TriggerEvent.from_envelope(event).data == {}


def test_unicode_data_survives() -> None:
    event = decode(as_json({"name": "n", "data": {"city": "Zürich ☃"}}))

    assert TriggerEvent.from_envelope(event).data == {"city": "Zürich ☃"}


def test_avro_event_is_decoded() -> None:
    sent = Event(id="e-9", name="a/b", data_json='{"k":"v"}', ts=11)

    assert decode(default_codec().encode(sent)) == sent


def test_a_redelivered_json_event_maps_to_the_same_id() -> None:
    value = b'{"name": "n"}'

    assert decode(value).id == decode(value).id


@pytest.mark.parametrize("value", [
    b"[1, 2]", b'"just a string"', b"42", b"null",
    b"{}", b'{"name": ""}', b'{"name": 7}', b'{"data": {}}',
    b'{"name": "n", "data": [1]}', b'{"name": "n", "data": "text"}',
    b'{"name": "n", "id": ""}', b'{"name": "n", "id": 5}', b'{"name": "n", "id": null}',
    b'{"name": "n", "ts": "yesterday"}', b'{"name": "n", "ts": 1.5}',
    b"not json", b"\xff\xfe\x00garbage", b"",
    b'{"name": "n", "data": {"x": NaN}}',
], ids=repr)
def test_what_is_not_an_event_raises_decode_error(value: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(value)


def test_avro_of_another_record_is_not_an_event() -> None:
    value = default_codec().encode(TimerFired(run_id="r", timer_id="t", ts=1))

    with pytest.raises(DecodeError, match="expected Event"):
        decode(value)


def test_corrupt_avro_raises_decode_error() -> None:
    value = default_codec().encode(Event(id="e", name="n"))

    with pytest.raises(DecodeError):
        decode(value[:-3])


@pytest.mark.parametrize("data_json", ["not json", "[1, 2]", '"text"', "null"])
def test_avro_event_whose_data_is_not_a_json_object_raises_decode_error(data_json: str) -> None:
    value = default_codec().encode(Event(id="e", name="n", data_json=data_json))

    with pytest.raises(DecodeError):
        decode(value)


def test_json_data_over_the_limit_raises_decode_error() -> None:
    value = as_json({"name": "n", "data": {"blob": "x" * LIMIT}})

    with pytest.raises(DecodeError, match="over the limit"):
        decode(value)


def test_avro_data_over_the_limit_raises_decode_error() -> None:
    value = default_codec().encode(Event(id="e", name="n",
                                         data_json=json.dumps({"blob": "x" * LIMIT})))

    with pytest.raises(DecodeError, match="over the limit"):
        decode(value)


def test_a_message_far_over_the_limit_is_refused_before_parsing() -> None:
    value = b"{" + b" " * (LIMIT + 64 * 1024) + b"}"

    with pytest.raises(DecodeError, match="over the limit"):
        decode(value)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(("value", "reason"), [
    (as_json({"name": "n", "ts": 10**30}), "ts must be"),
    (as_json({"name": "n", "ts": -1}), "ts must be"),
    (as_json({"name": "n", "ts": TS_MAX_MS + 1}), "ts must be"),
    (as_json({"name": "n", "ts": True}), "ts must be"),
    (b'{"name": "n", "data": {"x": "\\ud800"}}', "not JSON-serializable"),
    (b'{"name": "n\\ud800"}', "name is not valid Unicode"),
    (b'{"name": "n", "id": "\\udfff"}', "id is not valid Unicode"),
    (as_json({"name": "n" * (EVENT_NAME_MAX_BYTES + 1)}), "name is 257 bytes"),
    (as_json({"name": "é" * (EVENT_NAME_MAX_BYTES // 2 + 1)}), "name is 258 bytes"),
    (as_json({"name": "n", "id": "i" * (EVENT_ID_MAX_BYTES + 1)}), "id is 257 bytes"),
    (b'{"name": "n", "data": {"x": ' + _nested(100_000).encode() + b"}}", "nests deeper"),
    (b'{"name": "n", "data": {"x": ' + _nested(DATA_MAX_DEPTH).encode() + b"}}",
     "nests deeper"),
], ids=lambda value: repr(value)[:60])
def test_hostile_envelopes_are_refused_with_their_reason(value: bytes, reason: str) -> None:
    """Each of these once got past the decoder and failed further in (the Avro encoder,
    the by-name copy's size limit, the JSON encoder's recursion)."""
    with pytest.raises(DecodeError, match=reason):
        decode(value, limit=1024 * 1024)


@pytest.mark.parametrize(("name", "event_id", "ts", "data_json"), [
    ("n" * (EVENT_NAME_MAX_BYTES + 1), "e", 1, "{}"),
    ("n", "e", -5, "{}"),
    ("n", "e", 1, '{"x": ' + _nested(DATA_MAX_DEPTH + 5) + "}"),
    ("n", "e", 1, '{"x": ' + _nested(50_000) + "}"),
], ids=repr)
def test_avro_events_meet_the_same_limits(name: str, event_id: str, ts: int,
                                         data_json: str) -> None:
    value = default_codec().encode(Event(id=event_id, name=name, data_json=data_json, ts=ts))

    with pytest.raises(DecodeError):
        decode(value, limit=1024 * 1024)


def test_envelopes_at_the_limits_are_accepted() -> None:
    event = decode(as_json({"name": "n" * EVENT_NAME_MAX_BYTES,
                            "id": "i" * EVENT_ID_MAX_BYTES, "ts": TS_MAX_MS,
                            "data": {"x": json.loads(_nested(DATA_MAX_DEPTH - 1))}}))

    assert (len(event.name), len(event.id), event.ts) == (
        EVENT_NAME_MAX_BYTES, EVENT_ID_MAX_BYTES, TS_MAX_MS)


def test_data_at_the_limit_is_accepted() -> None:
    data = {"blob": "x" * (LIMIT - len('{"blob":""}'))}

    event = decode(as_json({"name": "n", "data": data}))

    assert len(event.data_json.encode()) == LIMIT


# --- make_event and run ids ---------------------------------------------------------


def test_make_event_gives_a_random_id_when_none_is_given() -> None:
    first = make_event("n", None, id=None, ts=1, limit=LIMIT)
    second = make_event("n", None, id=None, ts=1, limit=LIMIT)

    assert first.id and second.id and first.id != second.id
    assert first.data_json == "{}"


@pytest.mark.parametrize(("name", "data"), [
    ("", {}), ("n", {"when": object()}), ("n", {"big": "x" * LIMIT}),
    ("n", {"nan": float("nan")}), ("n", {"lone": "\ud800"}), ("n\udfff", {}),
    ("n" * (EVENT_NAME_MAX_BYTES + 1), {}), ("n", {"deep": json.loads(_nested(100))}),
])
def test_make_event_refuses_what_cannot_be_carried(name: str, data: dict) -> None:
    with pytest.raises(SerializationError):
        make_event(name, data, id="e", ts=1, limit=LIMIT)


def test_run_id_is_deterministic() -> None:
    assert run_id_for("fn", "evt") == run_id_for("fn", "evt")


def test_run_id_differs_per_function_and_per_event() -> None:
    ids = {run_id_for(fn, evt) for fn in ("fn-a", "fn-b") for evt in ("e-1", "e-2")}

    assert len(ids) == 4


def test_run_id_does_not_confuse_where_function_ends_and_event_begins() -> None:
    assert run_id_for("ab", "c") != run_id_for("a", "bc")


def test_run_id_is_a_stable_value() -> None:
    # Run ids are stored in tables and topics: changing the derivation would start
    # every in-flight event's run again.
    assert run_id_for("fn", "evt") == "896088504f3a56f499935831a0da30b7"
