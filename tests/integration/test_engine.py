"""The engine end to end against the real broker and Redis (issue: engine end to end)."""

from __future__ import annotations

import redis

from schemas.codec import default_codec
from schemas.messages import DeadLetter, Quarantined
from stepstream import Stepstream
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.conftest import WorkerFactory
from tests.integration.functions import executions_key
from tests.integration.helpers import get_json, produce_raw, read_topic, wait_for, wait_for_run


def executions(settings: Settings, run_id: str, step_id: str) -> int:
    value = redis.Redis.from_url(settings.redis_url).get(
        executions_key(settings.namespace, run_id, step_id))
    return int(value or 0)


def test_failing_step_is_retried_with_growing_delays_without_rerunning_earlier_steps(
        settings: Settings, start_worker: WorkerFactory) -> None:
    worker = start_worker()
    event_id = Stepstream("t", settings=settings).send("test/flaky", {})
    run = wait_for_run(worker.url, run_id_for("flaky", event_id))

    assert run["status"] == "completed"
    assert run["output"] == {"result": "answer=42"}  # the retried step's output reached the next
    assert [s["id"] for s in run["steps"]] == ["prepare", "unreliable", "finish"]
    unreliable = run["steps"][1]
    assert unreliable["attempts"] == 3
    assert [h["outcome"] for h in unreliable["history"]] == ["failed", "failed", "completed"]
    first, second, third = unreliable["history"]
    assert first["error"]["type"] == "ConnectionError"
    assert "the flaky API said no" in first["error"]["traceback"]
    gap_1 = second["started_at"] - first["ended_at"]
    gap_2 = third["started_at"] - second["ended_at"]
    assert 300 <= gap_1 < gap_2  # backoff 300 ms, then 900 ms: never early, and growing
    assert gap_2 >= 900
    assert executions(settings, run["run_id"], "prepare") == 1
    assert executions(settings, run["run_id"], "unreliable") == 3
    assert executions(settings, run["run_id"], "finish") == 1


def test_step_that_always_fails_fails_the_run_after_retries_plus_one_with_a_dead_letter(
        settings: Settings, start_worker: WorkerFactory) -> None:
    worker = start_worker()
    event_id = Stepstream("t", settings=settings).send("test/doomed", {"order": 7})
    run_id = run_id_for("doomed", event_id)
    run = wait_for_run(worker.url, run_id)

    assert run["status"] == "failed"
    assert run["error"]["type"] == "StepError"
    assert run["steps"][0]["status"] == "failed"
    assert run["steps"][0]["attempts"] == 3
    assert executions(settings, run_id, "never-works") == 3
    [message] = read_topic(settings.brokers, settings.topic("steps.dlq"), 1)
    letter = default_codec().decode_as(message.value(), DeadLetter)
    assert (letter.run_id, letter.step_id, letter.attempt) == (run_id, "never-works", 2)
    assert letter.error.message == "the database is on fire"
    assert "RuntimeError" in letter.error.traceback
    assert letter.event.id == event_id


def test_non_retriable_error_fails_at_once(settings: Settings,
                                           start_worker: WorkerFactory) -> None:
    worker = start_worker()
    event_id = Stepstream("t", settings=settings).send("test/hopeless", {})
    run = wait_for_run(worker.url, run_id_for("hopeless", event_id))
    assert run["status"] == "failed"
    assert run["steps"][0]["attempts"] == 1
    assert executions(settings, run["run_id"], "reject") == 1


def test_same_event_delivered_twice_starts_one_run(settings: Settings,
                                                   start_worker: WorkerFactory) -> None:
    worker = start_worker()
    client = Stepstream("t", settings=settings)
    for _ in range(2):
        client.send("test/chain", {"steps": 2}, id="order-1001")
    # a third copy, as plain JSON from "any Kafka client"
    produce_raw(settings.brokers, settings.topic("events"),
                b'{"name": "test/chain", "id": "order-1001", "data": {"steps": 2}}')
    run_id = run_id_for("chain", "order-1001")
    wait_for_run(worker.url, run_id)
    # every copy was consumed once the metrics count three events
    wait_for(lambda: 'stepstream_events_received_total{outcome="matched"} 3.0' in
             _metrics(worker.url), what="three events consumed")
    runs = get_json(f"{worker.url}/v1/events/order-1001/runs")["runs"]
    assert [r["run_id"] for r in runs] == [run_id]
    assert executions(settings, run_id, "s0") == 1
    assert 'stepstream_runs_started_total{function="chain"} 1.0' in _metrics(worker.url)


def test_undecodable_event_is_quarantined_and_the_next_event_still_runs(
        settings: Settings, start_worker: WorkerFactory) -> None:
    worker = start_worker()
    produce_raw(settings.brokers, settings.topic("events"), b"\x00\xffnot an event", b"k1")
    produce_raw(settings.brokers, settings.topic("events"), b'{"data": {}}', b"k2")
    event_id = Stepstream("t", settings=settings).send("test/chain", {"steps": 1})
    run = wait_for_run(worker.url, run_id_for("chain", event_id))
    assert run["status"] == "completed"

    messages = read_topic(settings.brokers, settings.topic("quarantine"), 2)
    records = sorted((default_codec().decode_as(m.value(), Quarantined) for m in messages),
                     key=lambda q: q.key or b"")
    assert [q.value for q in records] == [b"\x00\xffnot an event", b'{"data": {}}']
    assert all(q.topic == settings.topic("events") for q in records)
    assert "neither Avro nor JSON" in records[0].reason
    assert '"name"' in records[1].reason


def _metrics(base_url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"{base_url}/metrics", timeout=5) as reply:
        return reply.read().decode()
