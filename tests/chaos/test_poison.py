"""Poison input: each bad thing gets a clear error where operators look, and nothing else stops.

- undecodable events, events over a limit of the envelope (size, name, ts, nesting) and
  what the JSON and Avro encoders refuse (lone surrogates): quarantined with the reason;
- a record on a partition its key does not route to: quarantined with the reason;
- events no function listens to: no run, counted;
- garbage on an internal topic: quarantined, the orchestrator goes on;
- a handler that calls its steps in another order on replay: its run fails with
  NondeterminismError in the history;
- a function module that raises at import: ``stepstream worker`` exits non-zero and says why.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

from schemas.codec import default_codec
from schemas.messages import HistoryRecord, Quarantined, TimerFired
from stepstream.events import run_id_for
from stepstream.settings import Settings
from streams.partitioner import partition_of
from tests.chaos.test_outages import send_runs, wait_completed
from tests.conftest import ROOT, settings_env, worker_factory
from tests.integration.helpers import produce_raw, read_all, read_topic, wait_for, wait_for_run

MODULE = "tests.chaos.functions"
LIMIT = 2048
HOSTILE = {  # key -> value: what once got past the decoder and failed further in
    b"ts-huge": b'{"name": "chaos/ledger", "ts": 1000000000000000000000000000000}',
    b"surrogate-data": b'{"name": "chaos/ledger", "data": {"x": "\\ud800"}}',
    b"surrogate-name": b'{"name": "chaos/ledger\\ud800"}',
    b"deep": b'{"name": "chaos/ledger", "data": {"x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}}",
    b"long-name": json.dumps({"name": "n" * 1000}).encode(),
}
HOSTILE_REASONS = {b"ts-huge": "ts must be", b"surrogate-data": "not JSON-serializable",
                   b"surrogate-name": "not valid Unicode", b"deep": "nests deeper",
                   b"long-name": "over the limit of 256"}


def test_poison_is_quarantined_or_failed_clearly_and_other_runs_go_on(
        settings: Settings, database: str, tmp_path: Path) -> None:
    events, runs = settings.topic("events"), settings.topic("runs")
    with worker_factory(settings, tmp_path) as start:
        worker = start(MODULE, CHAOS_DATABASE_URL=database,
                       STEPSTREAM_MAX_PAYLOAD_BYTES=str(LIMIT))
        produce_raw(settings.brokers, events, b"\x00\xff\x13 not an event", b"garbage")
        big = {"name": "chaos/ledger", "id": "too-big", "data": {"blob": "x" * (LIMIT + 1)}}
        produce_raw(settings.brokers, events, json.dumps(big).encode(), b"too-big")
        produce_raw(settings.brokers, events,
                    b'{"name": "nobody/listens", "id": "stray-1", "data": {}}', b"stray-1")
        produce_raw(settings.brokers, runs, b"\x00\x01 not a run message", b"some-run")
        for key, value in HOSTILE.items():
            produce_raw(settings.brokers, events, value, key)
        misrouted = default_codec().encode(TimerFired(run_id="elsewhere", timer_id="t", ts=1))
        home = partition_of(b"elsewhere", settings.partitions)
        produce_raw(settings.brokers, runs, misrouted, b"elsewhere",
                    partition=(home + 1) % settings.partitions)
        produce_raw(settings.brokers, events,
                    b'{"name": "chaos/fickle", "id": "fickle-1", "data": {}}', b"fickle-1")
        healthy = send_runs(settings, 3, steps=3, pause=0.0)

        fickle = wait_for_run(worker.url, run_id_for("fickle", "fickle-1"), timeout=120)
        wait_completed(worker, set(healthy), 120)
        wait_for(lambda: 'stepstream_events_received_total{outcome="unmatched"}' in
                 _metrics(worker.url), 60, "the stray event counted")
        metrics = _metrics(worker.url)

    assert fickle["status"] == "failed"
    assert fickle["error"]["type"] == "NondeterminismError"
    assert "another order" in fickle["error"]["message"]
    failed = [r for r in _history(settings) if r.run_id == fickle["run_id"]
              and r.kind == "run.failed"]
    assert failed and failed[0].error is not None
    assert failed[0].error.type == "NondeterminismError"  # in the history topic itself

    quarantined = [default_codec().decode_as(m.value(), Quarantined)
                   for m in read_topic(settings.brokers, settings.topic("quarantine"),
                                       4 + len(HOSTILE))]
    reasons = {q.key: q.reason for q in quarantined}
    assert "neither Avro nor JSON" in reasons[b"garbage"]
    assert "over the limit" in reasons[b"too-big"]
    assert reasons[b"some-run"]  # the orchestrator's own input, quarantined too
    assert f"belongs to partition {home}" in reasons[b"elsewhere"]
    for key, reason in HOSTILE_REASONS.items():
        assert reason in reasons[key], (key, reasons[key])
    # each one set aside at its edge, none by the runtime's catch-all for processor bugs
    assert worker.log_path is not None
    assert not re.findall(r"processing \S+ failed", worker.log_path.read_text())
    assert run_id_for("ledger", "too-big") not in {r.run_id for r in _history(settings)}

    assert _metric(metrics, 'stepstream_events_received_total{outcome="unmatched"}') >= 1
    assert not [r for r in _history(settings)
                if r.event is not None and r.event.id == "stray-1"]  # no run for it
    print(f"\npoison: quarantined {sorted(k.decode() for k in reasons)}; fickle run failed "
          f"with {fickle['error']['message'][:90]}...")


def test_a_module_that_raises_at_import_stops_the_worker_with_the_reason(
        settings: Settings) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "stepstream.cli", "worker", "tests.chaos.broken_functions"],
        env={**settings_env(settings), "PATH": "/usr/bin:/bin"}, cwd=str(ROOT),
        capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "cannot import 'tests.chaos.broken_functions'" in done.stderr
    assert "RuntimeError: the feature-flag service is down" in done.stderr


def _history(settings: Settings) -> list[HistoryRecord]:
    codec = default_codec()
    return [codec.decode_as(m.value(), HistoryRecord)
            for m in read_all(settings.brokers, settings.topic("history"))]


def _metrics(base_url: str) -> str:
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))
