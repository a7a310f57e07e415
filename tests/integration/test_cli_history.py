"""``stepstream runs|dlq|functions|history`` against a real worker (the CLI in a subprocess)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
import redis

from stepstream import Stepstream
from stepstream.devservices import DevBroker, WorkerProcess
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.conftest import namespace, worker_factory
from tests.integration.helpers import cli, get_json, wait_for, wait_for_run
from tests.integration.history_functions import fixed_key

pytestmark = pytest.mark.integration
Kit = tuple[Settings, WorkerProcess]


@pytest.fixture(scope="module")
def kit(broker: DevBroker, redis_url: str,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kit]:
    with (namespace(broker, redis_url) as settings,
          worker_factory(settings, tmp_path_factory.mktemp("cli")) as start):
        yield settings, start("tests.integration.history_functions")


def stepstream(kit: Kit, *args: str) -> subprocess.CompletedProcess[str]:
    return cli(kit[0], kit[1].url, *args)


def ok(kit: Kit, *args: str) -> str:
    done = stepstream(kit, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def failed_run(kit: Kit) -> str:
    run_id = run_id_for("fixable", Stepstream("t", settings=kit[0]).send("test/fixable", {}))
    assert wait_for_run(kit[1].url, run_id)["status"] == "failed"
    return run_id


def fix(kit: Kit, run_id: str) -> None:
    redis.Redis.from_url(kit[0].redis_url).set(fixed_key(kit[0].namespace, run_id), 1)


def status_of(kit: Kit, run_id: str, status: str) -> None:
    wait_for(lambda: (get_json(f"{kit[1].url}/v1/runs/{run_id}") or {}).get("status") == status,
             60, f"run {run_id} {status}")


def test_list_show_and_replay_a_failed_run(kit: Kit) -> None:
    run_id = failed_run(kit)

    listed = ok(kit, "runs", "list", "--function", "fixable", "--status", "failed")
    assert run_id in listed and "ConnectionError" in listed
    as_json = json.loads(ok(kit, "runs", "list", "--json", "--since", "1h"))
    assert run_id in [r["run_id"] for r in as_json["runs"]]
    shown = ok(kit, "runs", "show", run_id)
    for text in ("fixable", "failed", "prepare", "fragile", "the warehouse API is down",
                 "fragile attempt 2", "Traceback"):
        assert text in shown
    assert json.loads(ok(kit, "runs", "show", run_id, "--json"))["run_id"] == run_id

    fix(kit, run_id)
    assert "replay requested" in ok(kit, "runs", "replay", run_id)
    status_of(kit, run_id, "completed")
    again = stepstream(kit, "runs", "replay", run_id)
    assert again.returncode == 2 and "409" in again.stderr and "completed" in again.stderr


def test_dead_letters_are_listed_and_replayed(kit: Kit) -> None:
    run_id = failed_run(kit)

    letters = json.loads(ok(kit, "dlq", "list", "--function", "fixable", "--json"))
    assert run_id in [d["run_id"] for d in letters["dead_letters"]]
    assert "fragile" in ok(kit, "dlq", "list")

    fix(kit, run_id)
    assert "steps fragile" in ok(kit, "dlq", "replay", run_id)
    status_of(kit, run_id, "completed")


def test_bulk_replay_of_a_functions_failed_runs(kit: Kit) -> None:
    runs = [failed_run(kit) for _ in range(2)]
    for run_id in runs:
        fix(kit, run_id)

    replayed = ok(kit, "runs", "replay", "--function", "fixable", "--since", "10m")

    assert all(run_id in replayed for run_id in runs)
    for run_id in runs:
        status_of(kit, run_id, "completed")


def test_cancel_and_watch(kit: Kit) -> None:
    client = Stepstream("t", settings=kit[0])
    napping = run_id_for("napper", client.send("test/napper", {"seconds": 60}))
    status_of(kit, napping, "running")
    assert "cancel requested" in ok(kit, "runs", "cancel", napping, "--reason", "no need")
    status_of(kit, napping, "cancelled")

    short = run_id_for("napper", client.send("test/napper", {"seconds": 1}))
    watched = ok(kit, "runs", "watch", short, "--interval", "0.2")  # returns once it is done
    assert "completed" in watched and "nap" in watched
    listed = ok(kit, "runs", "watch", "--function", "napper", "--interval", "0.1",
                "--frames", "3")
    assert short in listed and "Ctrl-C stops" in listed


def test_functions_and_a_history_rebuild(kit: Kit) -> None:
    failed_run(kit)
    functions = json.loads(ok(kit, "functions", "--json"))
    assert {f["function_id"] for f in functions} == {"fixable", "narrated", "napper"}
    assert "failure rate" in ok(kit, "functions")

    rebuilt = ok(kit, "history", "rebuild")

    assert "applied" in rebuilt and "records of" in rebuilt
    assert json.loads(ok(kit, "functions", "--json")) == functions


def test_no_worker_is_a_clear_error(kit: Kit) -> None:
    done = stepstream(kit, "runs", "list", "--url", "http://127.0.0.1:9")
    assert done.returncode == 2
    assert "no answer from http://127.0.0.1:9" in done.stderr
    missing = stepstream(kit, "runs", "show", "no-such-run")
    assert missing.returncode == 2 and "404: no run 'no-such-run'" in missing.stderr
