"""Records of source topics as events: plain JSON, Schema Registry records (against
confluent-kafka's built-in ``mock://`` registry, in process: no registry can be
installed here), and what is refused; framed Avro as ``send(avro_schema=...)`` makes it."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from schemas.codec import DecodeError
from stepstream import TopicTrigger
from stepstream.errors import ConfigError, SerializationError
from stepstream.schema_registry import FramedAvro, schema_text
from stepstream.settings import Settings
from streams.registry import RegistryDecoder, RegistryUnavailable
from streams.source_records import SourceRecords
from tests.fakes import FakeMessage
from tests.protobuf_orders import framed_order

TOPIC = "shop.orders"


def records(client: Any = None, **settings: Any) -> SourceRecords:
    return SourceRecords(RegistryDecoder(Settings(**settings), client), limit=10_000)


def event_of(source: SourceRecords, message: FakeMessage,
             trigger: TopicTrigger | None = None) -> Any:
    return asyncio.run(source.event_of(message, trigger))


def test_a_json_record_is_an_event_named_after_its_topic() -> None:
    message = FakeMessage(TOPIC, 2, 41, b'{"order": 7}', produced_ms=1_700_000_000_000,
                          key=b"k-7", headers=[("kind", b"paid"), ("trace", None)])
    event, record = event_of(records(), message)
    assert (event.name, event.id, json.loads(event.data_json), event.ts) == (
        TOPIC, f"{TOPIC}:2:41", {"order": 7}, 1_700_000_000_000)
    assert record == {"value": {"order": 7}, "key": "k-7",
                      "headers": {"kind": "paid", "trace": None},
                      "timestamp": 1_700_000_000_000, "topic": TOPIC, "partition": 2,
                      "offset": 41}


def test_the_id_expression_names_the_event() -> None:
    message = FakeMessage(TOPIC, 0, 3, b'{"order": 7}', key=b"k")
    trigger = TopicTrigger(TOPIC, id="record.key + '-' + string(record.value.order)")
    assert event_of(records(), message, trigger)[0].id == "k-7"
    with pytest.raises(DecodeError, match="not an id"):
        event_of(records(), message, TopicTrigger(TOPIC, id="record.value.missing"))


@pytest.mark.parametrize(("value", "reason"), [
    (None, "tombstone"), (b"\x80\x81", "neither JSON nor a Schema Registry record"),
    (b"[1]", "must be a JSON object, not list"), (b'"text"', "not str"),
    (b"\x00\x00\x00\x00\x01rest", "no STEPSTREAM_SCHEMA_REGISTRY_URL"),
])
def test_what_makes_no_event_is_refused_with_a_reason(value: bytes | None,
                                                      reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        event_of(records(), FakeMessage(TOPIC, 0, 0, value))


def mock_registry() -> Any:
    return SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})


def test_an_avro_record_is_decoded_with_its_writer_schema() -> None:
    registry = mock_registry()
    schema = {"type": "record", "name": "Order", "fields": [
        {"name": "order", "type": "long"}, {"name": "blob", "type": "bytes"}]}
    value = AvroSerializer(registry, json.dumps(schema))(
        {"order": 7, "blob": b"\x01\x02"}, SerializationContext(TOPIC, MessageField.VALUE))
    event, _ = event_of(records(registry), FakeMessage(TOPIC, 0, 0, value))
    assert json.loads(event.data_json) == {"order": 7,
                                           "blob": base64.b64encode(b"\x01\x02").decode()}


def test_a_json_schema_record_is_decoded() -> None:
    registry = mock_registry()
    schema = {"type": "object", "properties": {"order": {"type": "integer"}}}
    value = JSONSerializer(json.dumps(schema), registry)(
        {"order": 8}, SerializationContext(TOPIC, MessageField.VALUE))
    event, _ = event_of(records(registry), FakeMessage(TOPIC, 0, 0, value))
    assert json.loads(event.data_json) == {"order": 8}


def test_an_unknown_schema_id_is_the_record_s_fault() -> None:
    with pytest.raises(DecodeError, match="unknown to the registry"):
        event_of(records(mock_registry()),
                 FakeMessage(TOPIC, 0, 0, b"\x00\x00\x00\x03\x09payload"))


def test_a_registry_that_does_not_answer_is_waited_for() -> None:
    import socket

    with socket.socket() as closed:  # a port with nothing listening
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    source = records(schema_registry_url=url)
    with pytest.raises(RegistryUnavailable):
        event_of(source, FakeMessage(TOPIC, 0, 0, b"\x00\x00\x00\x00\x01payload"))


ORDER = {"type": "record", "name": "Order", "fields": [{"name": "order", "type": "long"}]}


def test_framed_avro_is_what_a_source_reads() -> None:
    registry = mock_registry()
    value = FramedAvro(Settings(), registry).encode(TOPIC, schema_text(ORDER), {"order": 9})
    assert value[0] == 0
    event, _ = event_of(records(registry), FakeMessage(TOPIC, 0, 0, value))
    assert json.loads(event.data_json) == {"order": 9}


def test_framed_avro_refuses_what_cannot_be_sent() -> None:
    framed = FramedAvro(Settings(), mock_registry())
    with pytest.raises(SerializationError, match="does not match"):
        framed.encode(TOPIC, schema_text(ORDER), {"order": "nine"})
    with pytest.raises(ConfigError, match="not an Avro schema"):
        framed.encode(TOPIC, "{not json", {"order": 9})
    with pytest.raises(ConfigError, match="STEPSTREAM_SCHEMA_REGISTRY_URL"):
        FramedAvro(Settings()).encode(TOPIC, schema_text(ORDER), {"order": 9})


def test_send_writes_framed_avro_to_no_topic_of_the_engine() -> None:
    from stepstream import Stepstream

    ss = Stepstream("t", settings=Settings(namespace="ns", schema_registry_url="mock://x"))
    for topic in ("ns.runs", "ns.anything", "ns-runs-changelog"):
        with pytest.raises(ConfigError, match="a topic of the engine"):
            ss.send(topic, {"order": 1}, avro_schema=ORDER)


def test_a_protobuf_record_is_decoded_with_no_generated_class() -> None:
    registry = mock_registry()
    value = framed_order(registry, TOPIC, order_id=5, sku="A-1", at=1_700_000_000,
                         cents=1250, tags=["gift"], state=1)
    event, _ = event_of(records(registry), FakeMessage(TOPIC, 0, 0, value))
    assert json.loads(event.data_json) == {
        "order_id": 5, "sku": "A-1", "at": "2023-11-14T22:13:20Z",
        "total": {"cents": "1250", "currency": "EUR"}, "tags": ["gift"], "state": "PAID"}
    # Fields left at their default are there too, as in an Avro record.
    bare = framed_order(registry, TOPIC, order_id=6)
    event, _ = event_of(records(registry), FakeMessage(TOPIC, 0, 1, bare))
    assert json.loads(event.data_json) == {"order_id": 6, "sku": "", "tags": [],
                                           "state": "NEW"}


def test_a_protobuf_payload_that_does_not_parse_is_the_record_s_fault() -> None:
    registry = mock_registry()
    value = framed_order(registry, TOPIC, order_id=5)
    with pytest.raises(DecodeError, match="schema id"):
        event_of(records(registry), FakeMessage(TOPIC, 0, 0, value[:7] + b"\xff\xff\xff"))
