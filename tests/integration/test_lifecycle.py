"""The public lifecycle topic: a real run's lifecycle, read by a plain confluent-kafka
consumer with ``AvroDeserializer`` through the registry, as another team would."""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from schemas.codec import default_codec
from schemas.messages import HistoryRecord
from stepstream import Stepstream
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.conftest import WorkerFactory
from tests.integration.helpers import read_all, wait_for_run
from tests.integration.registry_server import registry_server


def lifecycle_of(settings: Settings, registry_url: str, run_id: str,
                 timeout: float = 60.0) -> list[dict[str, Any]]:
    """The run's lifecycle records up to its end, as any Kafka consumer reads them."""
    topic = settings.topic("lifecycle")
    deserialize = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))
    consumer = Consumer({"bootstrap.servers": settings.brokers,
                         "group.id": f"another-team-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "fetch.wait.max.ms": 10,
                         "isolation.level": "read_committed"})
    consumer.subscribe([topic])
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while not any(r["kind"] == "run.completed" for r in found):
            assert time.monotonic() < deadline, f"no run.completed for {run_id}: {found}"
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            record = deserialize(message.value(),
                                 SerializationContext(topic, MessageField.VALUE))
            if record["run_id"] == run_id:
                assert message.key() == run_id.encode()
                found.append(record)
    finally:
        consumer.close()
    return found


def test_a_plain_avro_consumer_reads_the_lifecycle_of_a_run(
        settings: Settings, start_worker: WorkerFactory) -> None:
    # No Schema Registry can be installed here: the worker registers the lifecycle
    # schema over the registry's REST API with a small server backed by confluent-kafka's
    # mock:// registry (tests.integration.registry_server), and the consumer reads the
    # schema by id from it.
    mock = SchemaRegistryClient.new_client({"url": f"mock://{settings.namespace}"})
    with registry_server(mock) as url:
        worker = start_worker(STEPSTREAM_LIFECYCLE_FORMAT="confluent",
                              STEPSTREAM_SCHEMA_REGISTRY_URL=url)
        event_id = Stepstream("t", settings=settings).send(
            "test/flaky", {"user": "ada", "password": "hunter2"})
        run_id = run_id_for("flaky", event_id)
        wait_for_run(worker.url, run_id)

        records = lifecycle_of(settings, url, run_id)

    assert mock.get_latest_version(f"{settings.topic('lifecycle')}-value").schema_id
    kinds = [(r["kind"], r["step_id"]) for r in records]
    # The unreliable step fails twice, then succeeds (tests.integration.functions.flaky).
    assert kinds == [("run.started", None), ("step.completed", "prepare"),
                     ("step.failed", "unreliable"), ("step.failed", "unreliable"),
                     ("step.completed", "unreliable"), ("step.completed", "finish"),
                     ("run.completed", None)]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert {(r["run_id"], r["function_id"], r["event_id"], r["schema_version"])
            for r in records} == {(run_id, "flaky", event_id, 1)}
    started, failed, finished = records[0], records[2], records[-1]
    assert started["event_name"] == "test/flaky"
    assert started["event_data_json"].replace(" ", "") == '{"user":"ada","password":"***"}'
    assert (failed["error_type"], failed["error_message"], failed["attempt"]) == (
        "ConnectionError", "the flaky API said no", 0)
    assert failed["next_attempt_at"] is not None
    assert finished["output_json"].replace(" ", "") == '{"result":"answer=42"}'
    assert all(r["ts"] > 0 for r in records)
    # One lifecycle record per history record: derived once, in history's order.
    codec = default_codec()
    history = [codec.decode(m.value()) for m in read_all(settings.brokers,
                                                          settings.topic("history"))]
    assert [h.seq for h in history if isinstance(h, HistoryRecord) and h.run_id == run_id
            ] == [r["seq"] for r in records]
