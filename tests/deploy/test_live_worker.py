"""A real worker: the dashboard and the alerts read only metrics it exports, its API wants
the token, and a secret in event data reaches neither its log nor its metrics.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Any

import pytest

from stepstream import Stepstream
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.conftest import WorkerFactory
from tests.deploy.manifests import alert_queries, dashboard_queries, exposed_names, metric_names
from tests.integration.helpers import produce_raw, wait_for

pytestmark = pytest.mark.integration

TOKEN = "live-test-token"
SECRET = "hunter2-do-not-log-me"
FINAL = {"completed", "failed", "cancelled"}


def get(url: str, token: str | None = TOKEN) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            body = reply.read().decode()
            return reply.status, json.loads(body) if "json" in reply.headers.get(
                "Content-Type", "") else body
    except urllib.error.HTTPError as exc:
        return exc.code, None


def finished_run(base_url: str, run_id: str) -> dict[str, Any]:
    def check() -> Any:
        status, run = get(f"{base_url}/v1/runs/{run_id}")
        return run if status == 200 and run["status"] in FINAL else None

    return wait_for(check, 60, f"run {run_id} finished")  # type: ignore[no-any-return]


def gauge(exposition: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", exposition, re.MULTILINE)
    assert match, f"{name} not exported"
    return float(match.group(1))


def test_live_worker(settings: Settings, start_worker: WorkerFactory) -> None:
    worker = start_worker(STEPSTREAM_HTTP_TOKEN=TOKEN, STEPSTREAM_MONITOR_INTERVAL_S="0.2")
    client = Stepstream("t", settings=settings)

    # The API wants the token; probes and metrics do not.
    assert get(f"{worker.url}/v1/runs/nope", token=None)[0] == 401
    assert get(f"{worker.url}/v1/runs/nope", token="wrong")[0] == 403
    assert get(f"{worker.url}/v1/runs/nope")[0] == 404
    for path in ("/healthz", "/readyz", "/metrics"):
        assert get(worker.url + path, token=None)[0] == 200

    # A run that retries (with a secret in its event), one that dead-letters, a quarantined
    # message, and a slow one seen in flight: every labelled series then exists.
    flaky = client.send("test/flaky", {"password": SECRET, "user": "ada"})
    doomed = client.send("test/doomed", {})
    produce_raw(settings.brokers, settings.topic("events"), b"\x00 not an event")
    chain = client.send("test/chain", {"steps": 3, "pause": 1.0})

    def in_flight() -> bool:
        return gauge(get(f"{worker.url}/metrics", None)[1], "stepstream_runs_in_flight") >= 1

    wait_for(in_flight, 30, "the slow run counted in flight")
    assert finished_run(worker.url, run_id_for("flaky", flaky))["status"] == "completed"
    assert finished_run(worker.url, run_id_for("doomed", doomed))["status"] == "failed"
    assert finished_run(worker.url, run_id_for("chain", chain))["status"] == "completed"

    def settled() -> str | None:
        text = get(f"{worker.url}/metrics", None)[1]
        done = (gauge(text, "stepstream_runs_in_flight") == 0
                and "stepstream_quarantined_total{" in text)
        return text if done else None

    exposition: str = wait_for(settled, 30, "runs no longer in flight")
    assert gauge(exposition, "stepstream_oldest_run_age_seconds") == 0
    assert gauge(exposition, "stepstream_worker_heartbeat_timestamp_seconds") > 0

    exported = exposed_names(exposition)
    for source, exprs in (("dashboard", dashboard_queries()), ("alerts", alert_queries())):
        missing = metric_names(exprs) - exported
        assert not missing, f"{source} reads metrics the worker does not export: {missing}"

    # The secret went through a run, and appears in neither the log nor the metrics.
    client.close()
    assert SECRET not in exposition
    assert worker.log_path is not None
    log = worker.log_path.read_text(errors="replace")
    assert "HTTP on http://" in log  # the log is being written
    assert SECRET not in log
