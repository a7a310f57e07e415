"""Waiting for results as a user does: ``?wait=`` on the API, ``send(wait=...)`` and
``result`` in the SDK, ``stepstream send --wait``. Each answer is checked to be the run's
end, asked for while the run was still going.
"""

from __future__ import annotations

import json
import urllib.error
import uuid

import pytest

from stepstream import RunFailed, Stepstream
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.conftest import WorkerFactory
from tests.integration.helpers import get_json, wait_for
from tests.integration.test_cli import stepstream

pytestmark = pytest.mark.integration


def test_the_api_answers_a_waiting_request_with_the_runs_end(
        settings: Settings, start_worker: WorkerFactory) -> None:
    worker = start_worker()
    client = Stepstream("t", settings=settings)
    event_id = client.send("test/chain", {"steps": 3, "pause": 0.3})
    run_id = run_id_for("chain", event_id)

    run = get_json(f"{worker.url}/v1/runs/{run_id}?wait=30s", timeout=40)
    assert (run["status"], run["output"]) == ("completed", {"total": 3})
    # The event's runs, asked for before the next event's run exists.
    second = client.send("test/chain", {"steps": 2, "pause": 0.3})
    runs = get_json(f"{worker.url}/v1/events/{second}/runs?wait=30s", timeout=40)["runs"]
    assert [(r["run_id"], r["status"]) for r in runs] == [
        (run_id_for("chain", second), "completed")]
    client.close()


def test_a_wait_that_times_out_answers_with_what_stands(
        settings: Settings, start_worker: WorkerFactory) -> None:
    worker = start_worker()
    event_id = Stepstream("t", settings=settings).send("test/chain", {"steps": 1, "pause": 30})
    run_id = run_id_for("chain", event_id)
    wait_for(lambda: get_json(f"{worker.url}/v1/runs/{run_id}"), 60, "the run started")
    assert get_json(f"{worker.url}/v1/runs/{run_id}?wait=300ms")["status"] == "running"
    assert get_json(f"{worker.url}/v1/runs/no-such-run?wait=200ms") is None  # 404
    for bad in ("soon", "2m"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            get_json(f"{worker.url}/v1/runs/{run_id}?wait={bad}")
        assert refused.value.code == 400
        assert "wait=" in json.load(refused.value)["error"]


def test_the_sdk_returns_the_output_or_raises_the_runs_error(
        settings: Settings, start_worker: WorkerFactory) -> None:
    start_worker()
    client = Stepstream("t", settings=settings)
    assert client.send("test/flaky", {}, wait=60) == {"result": "answer=42"}

    event_id = client.send("test/hopeless", {})
    with pytest.raises(RunFailed) as failed:
        client.result(run_id_for("hopeless", event_id), timeout=60)
    assert failed.value.status == "failed"
    assert failed.value.error_type == "StepError"  # as the handler saw the step fail
    assert "this input can never work" in str(failed.value)

    with pytest.raises(TimeoutError):
        client.result(uuid.uuid4().hex, timeout=0.5)
    client.close()


def test_the_cli_prints_the_output_of_the_run_it_started(
        settings: Settings, start_worker: WorkerFactory) -> None:
    start_worker()
    sent = stepstream(settings, "send", "test/chain", "--data", '{"steps": 2}', "--wait")
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout) == {"total": 2}
    failed = stepstream(settings, "send", "test/hopeless", "--wait", "30s")
    assert failed.returncode == 1
    assert "failed: NonRetriableError: this input can never work" in failed.stderr
