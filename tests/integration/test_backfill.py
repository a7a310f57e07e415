"""Backfill (``stepstream backfill``): runs for records already in a topic, over a time
range, once per record however often it is run, with real workers."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from schemas.codec import default_codec
from schemas.messages import HistoryRecord
from stepstream import Stepstream
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.conftest import WorkerFactory
from tests.integration.backfill_functions import hourly_topic
from tests.integration.helpers import read_all, wait_for, wait_for_run
from tests.integration.test_cli import stepstream
from topics.catalog import TopicSpec
from topics.provision import ensure_topics

MODULE = "tests.integration.backfill_functions"
HOURS = [datetime(2026, 11, 1, hour, tzinfo=UTC) for hour in (10, 11, 12)]


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def starts_in_history(settings: Settings, function_id: str) -> list[str]:
    """The run id of each ``run.started`` history record of ``function_id``."""
    codec = default_codec()
    records = [codec.decode(m.value())
               for m in read_all(settings.brokers, settings.topic("history"))]
    return [r.run_id for r in records if isinstance(r, HistoryRecord)
            and r.function_id == function_id and r.kind == "run.started"]


def engine_read_all_of(settings: Settings, suffix: str) -> None:
    """Wait until the engine's group has committed every record of one of its topics."""
    topic = settings.topic(suffix)
    consumer = Consumer({"bootstrap.servers": settings.brokers,
                         "group.id": settings.namespace, "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions}

        def passed() -> bool:
            committed = consumer.committed([TopicPartition(topic, p) for p in ends], timeout=10)
            return all(tp.offset >= ends[tp.partition] for tp in committed)

        wait_for(passed, 60, f"the engine's group past the end of {topic}")
    finally:
        consumer.close()


def backfill(settings: Settings, *args: str, module: str = MODULE
             ) -> subprocess.CompletedProcess[str]:
    done = stepstream(settings, "backfill", module, *args, "--quiet")
    assert done.returncode == 0, done.stderr
    return done


def ends_of(settings: Settings, suffix: str) -> list[int]:
    """The end offset of each partition of one of the namespace's topics."""
    topic = settings.topic(suffix)
    consumer = Consumer({"bootstrap.servers": settings.brokers, "group.id": "ends"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10,
                                               cached=False)[1] for p in sorted(partitions)]
    finally:
        consumer.close()


def test_a_backfill_starts_runs_for_exactly_the_range_and_never_twice(
        settings: Settings, start_worker: WorkerFactory, tmp_path: Path) -> None:
    topic = hourly_topic(settings.namespace)
    ensure_topics(settings, [TopicSpec(topic, 2, 1)])
    producer = Producer({"bootstrap.servers": settings.brokers})
    landed: list[tuple[int, int, dict[str, Any]]] = []
    for hour, at in enumerate(HOURS):
        for n in range(3):
            data = {"hour": hour, "n": n}
            producer.produce(topic, json.dumps(data).encode(), partition=n % 2,
                             timestamp=ms(at) + n * 60_000,
                             on_delivery=lambda _e, m, d=data: landed.append(
                                 (m.partition(), m.offset(), d)))
            # One record a request: the dev broker's offsets go wrong for a batch.
            assert producer.flush(10) == 0
    # Deployed after the records: its live group starts at the end (start="latest").
    worker = start_worker(MODULE)

    started = backfill(settings, "hourly", "--from", "2026-11-01T11:00Z",
                       "--to", "2026-11-01T12:00Z")
    out = started.stdout

    assert re.search(r"3 records in range of \d+ read; 3 run starts sent", out), out
    middle = {run_id_for("hourly", f"{topic}:{p}:{o}"): data
              for p, o, data in landed if data["hour"] == 1}
    group = re.search(r"in group (\S+)", started.stderr)
    assert group is not None, started.stderr
    for run_id, data in middle.items():
        run = wait_for_run(worker.url, run_id)
        assert (run["output"], run["backfill"]) == (data, group[1])

    # Again, in a group of its own: the same run ids, which the engine already has.
    again = backfill(settings, "hourly", "--from", "2026-11-01T11:00Z",
                     "--to", "2026-11-01T12:00Z")
    assert "3 run starts sent" in again.stdout
    engine_read_all_of(settings, "runs")
    assert sorted(starts_in_history(settings, "hourly")) == sorted(middle)

    # The next version, in shadow over the same hour: it runs here, its side effect
    # ("notify") is not run but answered from the live runs, and nothing is written.
    written = {suffix: ends_of(settings, suffix) for suffix in ("runs", "events")}
    report_file = tmp_path / "shadow.json"
    shadow = backfill(settings, "hourly", "--from", "2026-11-01T11:00Z",
                      "--to", "2026-11-01T12:00Z", "--shadow", "--report", str(report_file),
                      module=f"{MODULE}_v2")

    report = json.loads(report_file.read_text())
    assert (report["in_range"], report["counts"]) == (3, {
        "same": 2, "different": 1, "no_live_run": 0, "shadow_failed": 0,
        "not_started": 0, "undecodable": 0}), shadow.stdout
    changed = next((p, o) for p, o, data in landed if data == {"hour": 1, "n": 1})
    [difference] = report["differences"]
    assert difference["event_id"] == "{}:{}:{}".format(topic, *changed)
    assert difference["diff"] == ["output.n: 1 -> 10"]
    assert "3 records in range" in shadow.stdout and "output.n: 1 -> 10" in shadow.stdout
    assert {suffix: ends_of(settings, suffix) for suffix in written} == written


def test_a_function_added_later_gets_runs_for_past_events(
        settings: Settings, start_worker: WorkerFactory) -> None:
    ensure_topics(settings, [TopicSpec(hourly_topic(settings.namespace), 1, 1)])
    # Sent while no function of the namespace's app is triggered by them.
    earlier = start_worker("tests.integration.functions")
    client = Stepstream("t", settings=settings)
    sent = [client.send("test/later", {"n": n}, id=f"later-{uuid.uuid4().hex}")
            for n in range(2)]
    engine_read_all_of(settings, "events")
    earlier.stop()
    worker = start_worker(MODULE)  # the new version, with "later"

    out = backfill(settings, "later", "--from", "earliest").stdout

    assert re.search(r"2 records in range of \d+ read; 2 run starts sent", out), out
    for n, event_id in enumerate(sent):
        assert wait_for_run(worker.url, run_id_for("later", event_id))["output"] == {"n": n}
    assert sorted(starts_in_history(settings, "later")) == sorted(
        run_id_for("later", e) for e in sent)
