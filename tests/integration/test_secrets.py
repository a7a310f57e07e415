"""Secret fields against a real worker, broker and Redis: the function gets the real
values (also after a replay), while the history topic, the API, the CLI, ``result`` and
the worker's log show ``***``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from schemas.codec import default_codec
from schemas.messages import HistoryRecord
from stepstream import Stepstream
from stepstream.devservices import DevBroker, WorkerProcess
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.conftest import ROOT, namespace, settings_env, worker_factory
from tests.integration.helpers import get_json, read_topic, wait_for, wait_for_run
from tests.integration.secret_functions import open_key

pytestmark = pytest.mark.integration
Kit = tuple[Settings, WorkerProcess]
EVENT = {"user": "a", "password": "hunter2", "nested": {"api_token": "x"}}
MASKED_EVENT = {"user": "a", "password": "***", "nested": {"api_token": "***"}}
MASKED_OUTPUT = {"measured": [7, True], "issued": {"token": "***"}}


@pytest.fixture(scope="module")
def kit(broker: DevBroker, redis_url: str,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kit]:
    with (namespace(broker, redis_url) as settings,
          worker_factory(settings, tmp_path_factory.mktemp("secrets")) as start):
        yield settings, start("tests.integration.secret_functions")


def no_secret_in(text: str) -> None:
    assert "hunter2" not in text and '"abc"' not in text, text


def cli(kit: Kit, *args: str) -> str:
    settings, worker = kit
    env = {**os.environ, **settings_env(settings), "STEPSTREAM_API_URL": worker.url,
           "COLUMNS": "220"}
    done = subprocess.run([sys.executable, "-m", "stepstream.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def replay_from(url: str, run_id: str, step_id: str) -> None:
    request = urllib.request.Request(
        f"{url}/v1/runs/{run_id}/replay", data=json.dumps({"from_step": step_id}).encode(),
        method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 202


def completed(url: str, run_id: str) -> dict[str, Any] | None:
    run: dict[str, Any] | None = get_json(f"{url}/v1/runs/{run_id}")
    return run if run and run["status"] == "completed" else None


def test_secrets_reach_the_function_but_not_the_history(kit: Kit) -> None:
    settings, worker = kit
    client = Stepstream("t", settings=settings)
    run_id = run_id_for("guarded", client.send("test/guarded", EVENT))

    # The first time the gate is closed: the run fails after its first two steps.
    run = wait_for_run(worker.url, run_id)
    assert run["status"] == "failed"
    steps = {s["id"]: s for s in run["steps"]}
    assert steps["measure"]["output"] == [7, True]  # the function got the real values
    assert steps["issue"]["output"] == {"token": "***"}
    assert run["event"]["data"] == MASKED_EVENT
    no_secret_in(json.dumps(run))

    # A replay from the first step runs it again with the event the engine kept: the
    # real one, not the history's.
    redis.Redis.from_url(settings.redis_url).set(open_key(settings.namespace, run_id), 1)
    replay_from(worker.url, run_id, "measure")
    run = wait_for(lambda: completed(worker.url, run_id), 60, "replayed run completed")
    assert run["replays"] == 1
    assert {s["id"]: s["output"] for s in run["steps"]} == {
        "measure": [7, True], "issue": {"token": "***"}, "gate": True}
    assert run["output"] == MASKED_OUTPUT and run["event"]["data"] == MASKED_EVENT
    no_secret_in(json.dumps(run))
    assert client.result(run_id, timeout=30) == MASKED_OUTPUT

    # The history topic itself holds no secret: every record of the run, read back.
    codec = default_codec()
    records: list[Any] = [codec.decode_as(m.value(), HistoryRecord) for m in read_topic(
        settings.brokers, settings.topic("history"), run["seq"])]
    assert {r.kind for r in records} >= {"run.started", "step.completed", "run.completed"}
    started = next(r for r in records if r.kind == "run.started")
    assert json.loads(started.event.data_json) == MASKED_EVENT
    for record in records:
        no_secret_in(f"{record.output_json} {record.event and record.event.data_json}")

    # The CLI shows what the API does.
    shown = cli(kit, "runs", "show", run_id)
    assert "***" in shown
    no_secret_in(shown)
    as_json = json.loads(cli(kit, "runs", "show", run_id, "--json"))
    assert as_json["output"] == MASKED_OUTPUT
    no_secret_in(json.dumps(as_json))

    # Nor does the worker log the secret anywhere.
    assert worker.log_path is not None
    no_secret_in(worker.log_path.read_text(errors="replace"))
