"""The lifecycle topic's settings, topic and framing (the records themselves:
``test_lifecycle_schema``; a real run read by a Kafka consumer: the integration test)."""

from __future__ import annotations

import asyncio
import io

import fastavro
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from schemas.lifecycle import latest, lifecycle_event
from schemas.messages import HistoryRecord
from stepstream.errors import ConfigError
from stepstream.settings import Settings
from streams.processors.lifecycle import ConfluentLifecycle
from topics.catalog import catalog


def test_the_lifecycle_topic_exists_only_when_asked_for() -> None:
    plain = Settings(namespace="n")
    confluent = plain.with_(lifecycle_format="confluent", schema_registry_url="http://r")

    assert "n.lifecycle" not in {spec.name for spec in catalog(plain)}
    assert "n.lifecycle" in {spec.name for spec in catalog(confluent)}


@pytest.mark.parametrize(("env", "message"), [
    ({"STEPSTREAM_LIFECYCLE_FORMAT": "json"}, "must be one of none, confluent"),
    ({"STEPSTREAM_LIFECYCLE_FORMAT": "confluent"}, "needs schema_registry_url"),
])
def test_a_lifecycle_format_it_cannot_write_is_refused(env: dict[str, str], message: str
                                                        ) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_records_are_framed_with_the_schema_registered_under_the_topics_subject() -> None:
    client = SchemaRegistryClient.new_client({"url": "mock://lifecycle-unit"})
    framing = ConfluentLifecycle(Settings(), "n.lifecycle", client)
    event = lifecycle_event(HistoryRecord(run_id="r", seq=1, ts=5, kind="run.completed",
                                          function_id="f", output_json="1"))

    value = asyncio.run(framing.encode(event))

    registered = client.get_latest_version("n.lifecycle-value")
    assert value[0] == 0 and int.from_bytes(value[1:5], "big") == registered.schema_id
    payload = io.BytesIO(value[5:])
    assert fastavro.schemaless_reader(payload, fastavro.parse_schema(
        latest()[1], named_schemas={})) == event
    assert AvroDeserializer(client)(value, SerializationContext(
        "n.lifecycle", MessageField.VALUE)) == event
