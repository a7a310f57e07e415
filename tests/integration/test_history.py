"""Run history against a real worker, broker and Redis: the timeline with logs, listing with
filters and pages, cancel, replay (one run, a dead letter, a function's failed runs), and a
rebuild of the read model from the history topic.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from stepstream import Stepstream
from stepstream.devservices import DevBroker, WorkerProcess
from stepstream.events import run_id_for
from stepstream.settings import Settings
from streams.readmodel import READ_MODEL_PATTERNS
from streams.rebuild import rebuild
from tests.conftest import namespace, worker_factory
from tests.integration.functions import executions_key
from tests.integration.helpers import get_json, post, wait_for, wait_for_run
from tests.integration.history_functions import fixed_key

pytestmark = pytest.mark.integration
MODULE = "tests.integration.history_functions"
Kit = tuple[Settings, WorkerProcess]


@pytest.fixture(scope="module")
def kit(broker: DevBroker, redis_url: str,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kit]:
    with (namespace(broker, redis_url) as settings,
          worker_factory(settings, tmp_path_factory.mktemp("history")) as start):
        yield settings, start(MODULE)


def send(kit: Kit, name: str, data: dict[str, Any] | None = None) -> str:
    return Stepstream("t", settings=kit[0]).send(name, data or {})


def executions(settings: Settings, run_id: str, step_id: str) -> int:
    value = redis.Redis.from_url(settings.redis_url).get(
        executions_key(settings.namespace, run_id, step_id))
    return int(value or 0)


def fix(settings: Settings, run_id: str) -> None:
    redis.Redis.from_url(settings.redis_url).set(fixed_key(settings.namespace, run_id), 1)


def run_in(kit: Kit, run_id: str, status: str) -> dict[str, Any]:
    def check() -> Any:
        run = get_json(f"{kit[1].url}/v1/runs/{run_id}")
        return run if run and run["status"] == status else None

    return wait_for(check, 60, f"run {run_id} {status}")  # type: ignore[no-any-return]


def failed_fixable(kit: Kit, order: int = 1) -> str:
    run_id = run_id_for("fixable", send(kit, "test/fixable", {"order": order}))
    assert wait_for_run(kit[1].url, run_id)["status"] == "failed"
    return run_id


def test_the_timeline_has_attempts_outputs_errors_and_each_log_line_once(kit: Kit) -> None:
    run = wait_for_run(kit[1].url, run_id_for("narrated", send(kit, "test/narrated")))

    assert (run["status"], run["output"]) == ("completed", "total=2")
    assert [(s["id"], s["output"], s["attempts"]) for s in run["steps"]] == [
        ("first", 1, 1), ("second", 2, 1)]
    assert all(s["duration_ms"] is not None and s["duration_ms"] >= 0 for s in run["steps"])
    assert [(line["step_id"], line["level"], line["message"]) for line in run["logs"]] == [
        (None, "INFO", "hello from the handler"),
        ("first", "INFO", "inside first"),
        (None, "INFO", "between the steps"),
        ("second", "WARNING", "python logging inside second: 1"),
        (None, "INFO", "done with 2"),
    ]

    failed = get_json(f"{kit[1].url}/v1/runs/{failed_fixable(kit)}")
    fragile = failed["steps"][1]
    assert [(h["attempt"], h["outcome"]) for h in fragile["history"]] == [
        (0, "failed"), (1, "failed")]
    assert "ConnectionError: the warehouse API is down" in fragile["error"]["traceback"]
    assert failed["dead_letters"] == ["fragile"]
    assert [(line["step_id"], line["attempt"], line["message"]) for line in failed["logs"]] == [
        (None, None, "processing order 1"), ("fragile", 0, "fragile attempt 1"),
        ("fragile", 1, "fragile attempt 2")]


def test_replay_runs_the_failed_step_again_and_keeps_completed_steps(kit: Kit) -> None:
    settings, worker = kit
    run_id = failed_fixable(kit, order=2)
    fix(settings, run_id)

    status, answer = post(f"{worker.url}/v1/runs/{run_id}/replay")
    assert (status, answer["requested"]) == (202, "replay")
    run = run_in(kit, run_id, "completed")

    assert (run["output"], run["replays"], run["error"]) == ({"shipped": 6}, 1, None)
    assert executions(settings, run_id, "prepare") == 1  # memoized: not run again
    assert executions(settings, run_id, "fragile") == 3
    fragile = run["steps"][1]
    assert (fragile["status"], fragile["attempts"]) == ("completed", 3)
    assert [(h["replay"], h["outcome"]) for h in fragile["history"]] == [
        (0, "failed"), (0, "failed"), (1, "completed")]
    assert [line["message"] for line in run["logs"]].count("processing order 2") == 1

    def listed(status: str) -> list[str]:
        page = get_json(f"{worker.url}/v1/runs?function=fixable&status={status}&limit=500")
        return [r["run_id"] for r in page["runs"]]

    assert run_id in listed("completed") and run_id not in listed("failed")
    assert post(f"{worker.url}/v1/runs/{run_id}/replay")[0] == 409  # completed now


def test_cancel_a_running_run(kit: Kit) -> None:
    run_id = run_id_for("napper", send(kit, "test/napper"))
    def sleeping() -> bool:
        run = get_json(f"{kit[1].url}/v1/runs/{run_id}")
        return bool(run and run["steps"] and run["steps"][-1]["status"] == "sleeping")

    wait_for(sleeping, 30, "the run sleeping")

    status, _ = post(f"{kit[1].url}/v1/runs/{run_id}/cancel", {"reason": "not needed"})
    run = run_in(kit, run_id, "cancelled")

    assert status == 202
    assert run["error"]["message"] == "not needed"
    assert post(f"{kit[1].url}/v1/runs/{run_id}/cancel")[0] == 409


def test_dead_letters_are_listed_and_replayed(kit: Kit) -> None:
    settings, worker = kit
    run_id = failed_fixable(kit, order=3)

    letters = get_json(f"{worker.url}/v1/dlq?function=fixable&limit=500")["dead_letters"]
    (letter,) = [d for d in letters if d["run_id"] == run_id]
    assert (letter["step_id"], letter["attempt"], letter["error"]["type"]) == (
        "fragile", 1, "ConnectionError")

    fix(settings, run_id)
    assert post(f"{worker.url}/v1/dlq/{run_id}/replay")[0] == 202
    run_in(kit, run_id, "completed")
    letters = get_json(f"{worker.url}/v1/dlq?limit=500")["dead_letters"]
    assert run_id not in {d["run_id"] for d in letters}
    assert post(f"{worker.url}/v1/dlq/{run_id}/replay")[0] == 404


def test_bulk_replay_of_a_functions_failed_runs_in_a_time_range(kit: Kit) -> None:
    settings, worker = kit
    since = get_json(f"{worker.url}/v1/runs?limit=1")["runs"][0]["started_at"] + 1
    runs = [failed_fixable(kit, order=10 + i) for i in range(2)]
    for run_id in runs:
        fix(settings, run_id)

    status, answer = post(f"{worker.url}/v1/functions/fixable/replay", {"since": since})

    assert status == 202
    assert sorted(answer["run_ids"]) == sorted(runs)  # failed runs before `since` stay failed
    for run_id in runs:
        run_in(kit, run_id, "completed")


def test_runs_are_listed_by_function_status_and_time_in_pages(kit: Kit) -> None:
    url = kit[1].url
    started = [run_id_for("narrated", send(kit, "test/narrated")) for _ in range(5)]
    for run_id in started:
        wait_for_run(url, run_id)

    pages, cursor = [], ""
    while True:
        page = get_json(f"{url}/v1/runs?function=narrated&status=completed&limit=2"
                        + (f"&cursor={cursor}" if cursor else ""))
        pages.append(page["runs"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    listed = [r["run_id"] for p in pages for r in p]
    assert set(started) <= set(listed)
    assert len(listed) == len(set(listed))  # no run twice across pages
    assert all(len(p) <= 2 for p in pages)
    times = [r["started_at"] for p in pages for r in p]
    assert times == sorted(times, reverse=True)
    assert {r["function_id"] for p in pages for r in p} == {"narrated"}

    middle = [r for p in pages for r in p][2]["started_at"]
    window = get_json(f"{url}/v1/runs?function=narrated&since={middle}&until={middle}")["runs"]
    assert window and all(r["started_at"] == middle for r in window)
    assert get_json(f"{url}/v1/runs?status=running&function=narrated")["runs"] == []


def test_functions_have_counts_and_failure_rates(kit: Kit) -> None:
    failed_fixable(kit, order=20)
    functions = {f["function_id"]: f for f in get_json(f"{kit[1].url}/v1/functions")[
        "functions"]}

    assert set(functions) == {"fixable", "narrated", "napper"}
    fixable = functions["fixable"]
    assert fixable["failed"] >= 1
    assert fixable["runs"] == sum(fixable[s] for s in ("running", "completed", "failed",
                                                       "cancelled"))
    assert fixable["failure_rate"] == pytest.approx(
        fixable["failed"] / (fixable["failed"] + fixable["completed"]))
    assert functions["narrated"]["failure_rate"] in (None, 0.0)


def snapshot(settings: Settings) -> dict[str, Any]:
    """Every read-model key of the namespace with its value, in comparable form."""
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    found: dict[str, Any] = {}
    for pattern in READ_MODEL_PATTERNS:
        for key in client.scan_iter(match=f"{settings.namespace}:{pattern}"):
            kind = client.type(key)
            if kind == "string":
                found[key] = json.loads(client.get(key))
            elif kind == "zset":
                found[key] = client.zrange(key, 0, -1, withscores=True)
            elif kind == "set":
                found[key] = sorted(client.smembers(key))
            elif kind == "hash":
                found[key] = {k: json.loads(v) for k, v in client.hgetall(key).items()}
    return found


def test_a_rebuild_from_the_history_topic_gives_the_same_read_model(kit: Kit) -> None:
    settings, worker = kit
    # Something of every kind: a run replayed to completion, a dead letter, a cancelled run.
    replayed = failed_fixable(kit, order=30)
    fix(settings, replayed)
    post(f"{worker.url}/v1/runs/{replayed}/replay")
    run_in(kit, replayed, "completed")
    failed_fixable(kit, order=31)
    wait_for_run(worker.url, run_id_for("narrated", send(kit, "test/narrated")))
    napping = run_id_for("napper", send(kit, "test/napper"))
    wait_for(lambda: (get_json(f"{worker.url}/v1/runs/{napping}") or {}).get("steps"), 30,
             "the napper started")
    post(f"{worker.url}/v1/runs/{napping}/cancel")
    run_in(kit, napping, "cancelled")
    before = snapshot(settings)
    assert any(":dlq" in key for key in before)

    client = redis.Redis.from_url(settings.redis_url)
    for key in before:
        client.delete(key)
    assert snapshot(settings) == {}
    result = asyncio.run(rebuild(settings))

    assert snapshot(settings) == before
    assert result.runs == len([k for k in before if ":run:" in k])
    assert result.skipped == 0
