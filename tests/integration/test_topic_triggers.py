"""Topic triggers: records of topics stepstream does not own start runs, complete waits
and cancel runs, in real worker processes (``tests.integration.source_functions``)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Producer

from schemas.codec import default_codec
from schemas.messages import Quarantined, RunStarted
from stepstream import Stepstream
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.conftest import WorkerFactory
from tests.integration.helpers import (
    get_json,
    read_all,
    sample,
    scrape,
    wait_for,
    wait_for_run,
)
from tests.integration.registry_server import registry_server
from tests.integration.source_functions import STAMPED_START, source_topic
from tests.protobuf_orders import framed_order
from topics.catalog import TopicSpec
from topics.provision import ensure_topics

MODULE = "tests.integration.source_functions"
SOURCES = {"orders": 3, "late": 1, "stamped": 1, "keyed": 1, "payments": 2,
           "cancellations": 2, "avro": 1, "proto": 1}
"""The module's source topics and their partition counts: other than the engine's 4,
so their tasks are not the runs' tasks."""


def create_sources(settings: Settings) -> dict[str, str]:
    """Create the test's source topics (as their owners would); short name -> topic."""
    names = {short: source_topic(settings.namespace, short) for short in SOURCES}
    ensure_topics(settings, [TopicSpec(names[s], count, 1) for s, count in SOURCES.items()])
    return names


class Records:
    """A plain confluent-kafka producer, as another team's service; remembers where each
    record landed."""

    def __init__(self, settings: Settings) -> None:
        self.producer = Producer({"bootstrap.servers": settings.brokers})
        self.landed: list[tuple[str, int, int]] = []

    def send(self, topic: str, value: bytes | dict[str, Any], **options: Any) -> None:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        self.producer.produce(topic, raw, on_delivery=self._landed, **options)
        assert self.producer.flush(10) == 0

    def _landed(self, error: Any, message: Any) -> None:
        assert error is None, error
        self.landed.append((message.topic(), message.partition(), message.offset()))


def decoded(settings: Settings, suffix: str, kind: type[Any],
            keep: Callable[[Any], bool] = lambda _: True) -> list[Any]:
    """The committed records of ``kind`` on one of the namespace's topics."""
    codec = default_codec()
    found = [codec.decode(m.value()) for m in read_all(settings.brokers, settings.topic(suffix))]
    return [r for r in found if isinstance(r, kind) and keep(r)]


def started(settings: Settings, function_id: str) -> list[RunStarted]:
    return decoded(settings, "runs", RunStarted, lambda r: r.function_id == function_id)


def run_of(function_id: str, landed: tuple[str, int, int]) -> str:
    return run_id_for(function_id, "{}:{}:{}".format(*landed))


def test_each_record_starts_one_run_across_a_killed_worker(
        settings: Settings, start_worker: WorkerFactory) -> None:
    topics = create_sources(settings)
    victim, survivor = start_worker(MODULE), start_worker(MODULE)
    records = Records(settings)
    for n in range(30):
        records.send(topics["orders"], {"order": n})
    wait_for(lambda: len(started(settings, "orders")) >= 5, what="runs started")

    victim.kill()  # mid-stream: its source tasks' open transactions are aborted
    for n in range(30, 60):
        records.send(topics["orders"], {"order": n})

    for landed in records.landed:
        run = wait_for_run(survivor.url, run_of("orders", landed), timeout=120)
        assert run["status"] == "completed"
        assert run["output"]["event_id"] == "{}:{}:{}".format(*landed)
        assert run["output"]["name"] == topics["orders"]
    starts = started(settings, "orders")
    assert len(starts) == 60  # one RunStarted per record: none lost, none twice
    assert {s.run_id for s in starts} == {run_of("orders", at) for at in records.landed}
    assert sorted(json.loads(s.event.data_json)["order"] for s in starts) == list(range(60))


def test_start_id_and_filter_are_honoured(settings: Settings,
                                          start_worker: WorkerFactory) -> None:
    topics = create_sources(settings)
    records = Records(settings)
    records.send(topics["late"], {"n": "before"})
    before_start = int(STAMPED_START.timestamp() * 1000) - 86_400_000
    records.send(topics["stamped"], {"n": "old"}, timestamp=before_start)
    after_start = int(datetime(2025, 6, 1, tzinfo=UTC).timestamp() * 1000)
    records.send(topics["stamped"], {"n": "new"}, timestamp=after_start)
    worker = start_worker(MODULE)
    records.send(topics["late"], {"n": "after"})
    keyed = topics["keyed"]
    records.send(keyed, {"order_id": 7}, key=b"k7", headers={"kind": b"paid"})
    records.send(keyed, {"order_id": 8}, headers={"kind": b"paid"})  # no key
    records.send(keyed, {"order_id": 9}, key=b"k9", headers={"kind": b"refund"})
    records.send(keyed, {"order_id": 10}, key=b"k10", headers={"kind": b"paid"})

    after = wait_for_run(worker.url, run_of("late", records.landed[3]))
    assert after["output"] == {"n": "after"}
    new = wait_for_run(worker.url, run_of("stamped", records.landed[2]))
    assert new["output"] == {"n": "new", "ts": after_start}
    for order_id in (7, 10):
        run = wait_for_run(worker.url, run_id_for("keyed", f"order-{order_id}"))
        assert run["output"] == {"id": f"order-{order_id}", "order_id": order_id}
    # Each topic has one partition: the later record's run means the earlier was read.
    assert [json.loads(s.event.data_json) for s in started(settings, "late")] == [
        {"n": "after"}]
    assert [json.loads(s.event.data_json)["n"] for s in started(settings, "stamped")] == [
        "new"]
    assert sorted(s.event.id for s in started(settings, "keyed")) == ["order-10", "order-7"]


def step_status(base_url: str, run_id: str, step_id: str) -> str | None:
    run: dict[str, Any] | None = get_json(f"{base_url}/v1/runs/{run_id}")
    step = next((s for s in (run or {}).get("steps", []) if s["id"] == step_id), None)
    return None if step is None else str(step["status"])


def test_records_complete_waits_and_cancel_runs(settings: Settings,
                                                start_worker: WorkerFactory) -> None:
    topics = create_sources(settings)
    worker = start_worker(MODULE)
    client = Stepstream("t", settings=settings)
    checkout = run_id_for("checkout", client.send("shop/checkout.started", {"order": "o1"}))
    hold = run_id_for("hold", client.send("shop/hold.started", {"order": "h1"}))
    wait_for(lambda: step_status(worker.url, checkout, "payment") == "waiting",
             what="checkout waiting for its payment")
    wait_for(lambda: step_status(worker.url, hold, "hold") == "sleeping", what="hold sleeping")

    records = Records(settings)
    records.send(topics["payments"], {"order": "o2", "amount": 1})
    records.send(topics["payments"], {"order": "o1", "amount": 42})
    records.send(topics["cancellations"], {"order": "h1"})

    assert wait_for_run(worker.url, checkout)["output"] == {"paid": 42}
    assert wait_for_run(worker.url, hold)["status"] == "cancelled"


def test_an_undecodable_record_is_quarantined_and_the_next_starts_its_run(
        settings: Settings, start_worker: WorkerFactory) -> None:
    topics = create_sources(settings)
    worker = start_worker(MODULE)
    records = Records(settings)
    orders = topics["orders"]
    for value in (b"\x80 not json", b"[1, 2]", {"order": "good"}):
        records.send(orders, value, partition=0)

    run = wait_for_run(worker.url, run_of("orders", records.landed[2]))
    assert run["output"]["order"] == "good"
    set_aside = decoded(settings, "quarantine", Quarantined, lambda q: q.topic == orders)
    assert [(q.partition, q.offset) for q in set_aside] == [
        (p, o) for _, p, o in records.landed[:2]]
    assert "neither JSON nor a Schema Registry record" in set_aside[0].reason
    assert "must be a JSON object, not list" in set_aside[1].reason
    assert len(started(settings, "orders")) == 1


def test_an_avro_record_in_the_confluent_wire_format_is_decoded_via_the_registry(
        settings: Settings, start_worker: WorkerFactory) -> None:
    # No Schema Registry can be installed here: the record is serialized with
    # confluent-kafka's AvroSerializer against its built-in mock:// registry, and the
    # worker, another process, reads the schema over the registry's REST API from a
    # small server backed by that mock (tests.integration.registry_server).
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    topics = create_sources(settings)
    mock = SchemaRegistryClient.new_client({"url": f"mock://{settings.namespace}"})
    schema = {"type": "record", "name": "Order", "namespace": "shop", "fields": [
        {"name": "order_id", "type": "long"}, {"name": "sku", "type": "string"},
        {"name": "note", "type": ["null", "string"], "default": None}]}
    serialize = AvroSerializer(mock, json.dumps(schema))
    value = serialize({"order_id": 12, "sku": "A-1", "note": None},
                      SerializationContext(topics["avro"], MessageField.VALUE))
    assert value[0] == 0  # the Confluent wire format: magic byte, then the schema id

    with registry_server(mock) as url:
        worker = start_worker(MODULE, STEPSTREAM_SCHEMA_REGISTRY_URL=url)
        records = Records(settings)
        records.send(topics["avro"], value)
        run = wait_for_run(worker.url, run_of("avro", records.landed[0]))
        assert run["output"] == {"order_id": 12, "sku": "A-1", "note": None}

        # The SDK and the HTTP API produce framed Avro to a topic when asked.
        client = Stepstream("t", settings=settings.with_(schema_registry_url=url))
        sent = client.send(topics["avro"], {"order_id": 13, "sku": "B-2", "note": "gift"},
                           avro_schema=schema, wait=60)
        posted = post_json(f"{worker.url}/v1/events", {
            "name": topics["avro"], "data": {"order_id": 14, "sku": "C-3"},
            "avro_schema": schema})
        assert posted["id"].startswith(f"{topics['avro']}:0:")
        by_post = wait_for_run(worker.url, run_id_for("avro", posted["id"]))
    assert sent == {"order_id": 13, "sku": "B-2", "note": "gift"}
    assert by_post["output"] == {"order_id": 14, "sku": "C-3", "note": None}
    framed = read_all(settings.brokers, topics["avro"])
    assert [m.value()[0] for m in framed] == [0, 0, 0]


def test_a_protobuf_record_is_decoded_from_its_registered_schema(
        settings: Settings, start_worker: WorkerFactory) -> None:
    # The worker has no generated class: it builds one from the schema the registry
    # holds, and the file the schema imports (registered under a subject of its own).
    from confluent_kafka.schema_registry import SchemaRegistryClient

    topics = create_sources(settings)
    mock = SchemaRegistryClient.new_client({"url": f"mock://{settings.namespace}"})
    value = framed_order(mock, topics["proto"], order_id=21, sku="P-1", at=1_700_000_000,
                         cents=999, tags=["a", "b"])
    with registry_server(mock) as url:
        worker = start_worker(MODULE, STEPSTREAM_SCHEMA_REGISTRY_URL=url)
        records = Records(settings)
        records.send(topics["proto"], value)
        run = wait_for_run(worker.url, run_of("proto", records.landed[0]))
        # Its source group reports how far behind the topic's end it is: caught up.
        wait_for(lambda: sample(scrape(worker.url), "stepstream_source_lag_messages",
                                group=f"{settings.namespace}.source.proto",
                                topic=topics["proto"]) == 0, what="the source lag")
    assert run["output"] == {"order_id": 21, "sku": "P-1", "at": "2023-11-14T22:13:20Z",
                             "total": {"cents": "999", "currency": "EUR"},
                             "tags": ["a", "b"], "state": "NEW"}


def post_json(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.load(reply)


def test_a_transactional_source_starts_runs_of_committed_records_only(
        settings: Settings, start_worker: WorkerFactory) -> None:
    from confluent_kafka import Consumer, TopicPartition

    topics = create_sources(settings)
    orders = topics["orders"]
    worker = start_worker(MODULE)
    producer = Producer({"bootstrap.servers": settings.brokers,
                         "transactional.id": f"{settings.namespace}-shop"})
    producer.init_transactions(30)
    landed: list[int] = []
    for order, commit in (("aborted", False), ("committed", True)):
        producer.begin_transaction()
        producer.produce(orders, json.dumps({"order": order}).encode(), partition=0,
                         on_delivery=lambda _error, message: landed.append(message.offset()))
        producer.flush(10)
        (producer.commit_transaction if commit else producer.abort_transaction)(30)

    run = wait_for_run(worker.url, run_id_for("orders", f"{orders}:0:{landed[-1]}"))
    assert run["output"]["order"] == "committed"
    assert [json.loads(s.event.data_json)["order"] for s in started(settings, "orders")] == [
        "committed"]
    group = Consumer({"bootstrap.servers": settings.brokers,
                      "group.id": f"{settings.namespace}.source.orders"})
    try:
        end = group.get_watermark_offsets(TopicPartition(orders, 0), timeout=10)[1]

        def committed_to_the_end() -> bool:
            offset = group.committed([TopicPartition(orders, 0)], timeout=10)[0].offset
            return bool(offset == end)

        wait_for(committed_to_the_end, what="the source offset past the last marker")
    finally:
        group.close()
