"""Secret fields are masked in what people read (``stepstream.masking``, ``streams.masked``)
and nowhere else: the engine's own state and messages keep the real values."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas.codec import default_codec
from schemas.messages import Event, HistoryRecord, RunStarted, StepCompleted
from stepstream.masking import DEFAULT, DEFAULT_SECRET_FIELDS, SecretFields, mask
from stepstream.settings import Settings
from streams.delays import DelayTiers
from streams.machine import Dispatch, Record, RunPolicy, advance
from streams.masked import masked_history
from streams.metrics import Metrics
from streams.processors.outputs import Outputs


def test_nested_dicts_and_lists_are_masked_and_keys_kept() -> None:
    value = {"user": "a", "password": "hunter2", "nested": {"api_token": "x", "n": 1},
             "items": [{"secret": {"deep": 1}}, "password", 3, None]}
    assert mask(value) == {"user": "a", "password": "***", "nested": {"api_token": "***",
                                                                        "n": 1},
                           "items": [{"secret": "***"}, "password", 3, None]}
    assert value["password"] == "hunter2"  # a copy: the original is untouched


@pytest.mark.parametrize("key", ["PASSWORD", "Authorization", "X-Api-Key", "apiKey",
                                 "stripe_api_key", "accessToken", "refresh_token",
                                 "client-secret", "private_key", "db_passwd",
                                 "aws_credentials", "Cookie", "passphrase"])
def test_secret_names_match_in_any_case_and_spelling(key: str) -> None:
    assert mask({key: "v"}) == {key: "***"}


@pytest.mark.parametrize("key", ["user", "email", "order_id", "pass", "keyboard", "author"])
def test_ordinary_names_are_left_alone(key: str) -> None:
    assert mask({key: "v"}) == {key: "v"}


def test_a_custom_list_replaces_the_default() -> None:
    fields = SecretFields.parse(" ssn , card_number,")
    assert fields.names == ("cardnumber", "ssn")
    assert mask({"ssn": 1, "cardNumber": 2, "password": 3}, fields) == {
        "ssn": "***", "cardNumber": "***", "password": 3}


def test_an_empty_list_masks_nothing() -> None:
    fields = SecretFields.parse("")
    value = {"password": "hunter2"}
    assert not fields
    assert mask(value, fields) is value
    assert fields.mask_json('{"password":"hunter2"}') == '{"password":"hunter2"}'


@pytest.mark.parametrize("value", ["password", 7, 1.5, None, True, [], {}, ["token", 1]])
def test_json_that_is_not_an_object_is_returned_as_it_is(value: Any) -> None:
    assert mask(value) == value


def test_nesting_deeper_than_the_python_stack() -> None:
    depth = 100_000
    value: Any = {"password": "hunter2"}
    for _ in range(depth):
        value = {"a": [value]}
    masked = mask(value)
    for _ in range(depth):
        masked = masked["a"][0]
    assert masked == {"password": "***"}


def test_mask_json() -> None:
    assert DEFAULT.mask_json(None) is None
    plain = '{"user": "a", "n": [1, 2]}'
    assert DEFAULT.mask_json(plain) is plain  # no secret name in it: not even parsed
    mentioned = '{"note": "the password is elsewhere"}'
    assert DEFAULT.mask_json(mentioned) is mentioned  # parsed, nothing masked
    assert json.loads(DEFAULT.mask_json('{"a": {"Token": "abc"}, "ü": "é"}') or "") == {
        "a": {"Token": "***"}, "ü": "é"}
    escaped = '{"p\\u0061ssword": "hunter2"}'  # the name spelled with a JSON escape
    assert json.loads(DEFAULT.mask_json(escaped) or "") == {"password": "***"}


def test_json_too_deep_to_parse_is_masked_whole() -> None:
    deep = '{"password":' + "[" * 200_000 + "]" * 200_000 + "}"
    assert DEFAULT.mask_json(deep) == '"***"'


def test_the_setting() -> None:
    assert Settings().secrets().names == SecretFields(DEFAULT_SECRET_FIELDS).names
    assert Settings.from_env({"STEPSTREAM_SECRET_FIELDS": "pin"}).secrets().names == ("pin",)
    assert not Settings.from_env({"STEPSTREAM_SECRET_FIELDS": ""}).secrets()


def test_history_records_are_masked_and_left_as_they_are_without_secrets() -> None:
    event = Event(id="e", name="n", data_json='{"user":"a","password":"hunter2"}', ts=1)
    record = HistoryRecord(run_id="r", seq=1, ts=1, kind="run.started", function_id="f",
                           event=event, output_json='{"token":"abc","ok":1}')
    masked = masked_history(record, DEFAULT)
    assert json.loads(masked.event.data_json) == {"user": "a", "password": "***"}  # type: ignore[union-attr]
    assert json.loads(masked.output_json or "") == {"token": "***", "ok": 1}
    plain = HistoryRecord(run_id="r", seq=2, ts=1, kind="step.completed", function_id="f",
                          output_json='{"ok":1}')
    assert masked_history(plain, DEFAULT) is plain
    assert masked_history(record, SecretFields(())) is record


def test_the_engine_keeps_real_values_and_only_the_history_topic_is_masked() -> None:
    """The machine's state, its step requests and the memo hold the real secret; what
    ``Outputs.history`` writes to the history topic holds ``***``."""
    codec = default_codec()
    settings = Settings(namespace="ns")
    outputs = Outputs(settings, codec, Metrics(), {}, DelayTiers(settings))
    event = Event(id="e", name="n", data_json='{"password":"hunter2"}', ts=1)
    state, commands = advance(None, RunStarted(run_id="r", function_id="f", event=event, ts=1),
                              RunPolicy())
    assert state is not None and state.event.data_json == event.data_json
    (request,) = [c.request for c in commands if isinstance(c, Dispatch)]
    assert "hunter2" in request.event.data_json
    state, commands = advance(state, StepCompleted(
        run_id="r", seq=request.seq, step_id="s", attempt=0, output_json='{"token":"abc"}',
        started_at=2, ended_at=3), RunPolicy())
    assert state is not None and state.memo["s"].output_json == '{"token":"abc"}'
    records = [r.record for r in commands if isinstance(r, Record)]
    assert records and records[0].output_json == '{"token":"abc"}'  # masked on the way out
    value = outputs.history(records[0]).value
    assert value is not None
    written = codec.decode_as(value, HistoryRecord)
    assert written.output_json == '{"token":"***"}'
    assert written.run_id == "r"
