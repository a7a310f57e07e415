"""The command line against a real broker: topics, send, and a worker that must refuse."""

from __future__ import annotations

import os
import subprocess
import sys

from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.conftest import ROOT, WorkerFactory, settings_env
from tests.integration.helpers import wait_for_run
from topics import catalog, ensure_topics


def stepstream(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stepstream.cli", *args], cwd=ROOT,
                          env={**os.environ, **settings_env(settings), **env},
                          capture_output=True, text=True, timeout=120)


def test_topics_create_then_check(settings: Settings) -> None:
    assert stepstream(settings, "topics", "check").returncode == 1  # nothing there yet
    created = stepstream(settings, "topics", "create")
    assert created.returncode == 0, created.stderr
    assert f"{settings.namespace}.runs" in created.stdout
    checked = stepstream(settings, "topics", "check")
    assert checked.returncode == 0 and checked.stdout.strip().endswith("ok")


def test_send_starts_a_run(settings: Settings, start_worker: WorkerFactory) -> None:
    worker = start_worker()
    sent = stepstream(settings, "send", "test/chain", "--data", '{"steps": 2}', "--id", "cli-1")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.strip() == "cli-1"
    assert wait_for_run(worker.url, run_id_for("chain", "cli-1"))["output"] == {"total": 2}


def test_bad_send_data_is_a_clear_error(settings: Settings) -> None:
    sent = stepstream(settings, "send", "test/chain", "--data", "{not json")
    assert sent.returncode == 2
    assert "--data is not JSON" in sent.stderr


def test_a_worker_refuses_topics_with_another_partition_count(settings: Settings) -> None:
    ensure_topics(settings.brokers, catalog(settings.with_(partitions=2)))
    worker = stepstream(settings, "worker", "tests.integration.functions")
    assert worker.returncode == 2
    assert "partitions, expected 4" in worker.stderr
    assert "STEPSTREAM_PARTITIONS" in worker.stderr
