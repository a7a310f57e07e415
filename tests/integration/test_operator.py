"""Operator controls against the real broker, with real workers: pausing and resuming a
function, cancelling runs by query (through the HTTP API and the CLI), children that
follow their parent."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from schemas.codec import default_codec
from schemas.messages import CancelRequested
from stepstream import Stepstream
from stepstream.devservices import DevBroker, WorkerProcess
from stepstream.events import run_id_for
from stepstream.settings import Settings
from streams.machine import child_run_id
from streams.partitioner import partition_of
from tests.conftest import namespace, worker_factory
from tests.integration.functions import executions_key
from tests.integration.helpers import cli, get_json, post, read_all, wait_for, wait_for_run
from tests.integration.operator_functions import gate_key

MODULE = "tests.integration.operator_functions"


@pytest.fixture
def two(broker: DevBroker, redis_url: str, tmp_path: Any
        ) -> Iterator[tuple[Settings, list[WorkerProcess]]]:
    """Two workers of a namespace of this test's own."""
    with (namespace(broker, redis_url) as settings,
          worker_factory(settings, tmp_path) as start):
        workers = [start(MODULE, ready=False) for _ in range(2)]
        yield settings, [w.wait_ready() for w in workers]


def executed(settings: Settings, run_id: str, step_id: str) -> int:
    value = redis.Redis.from_url(settings.redis_url).get(
        executions_key(settings.namespace, run_id, step_id))
    return int(value or 0)


def run(url: str, run_id: str) -> dict[str, Any]:
    return get_json(f"{url}/v1/runs/{run_id}") or {}


def held(url: str, run_id: str) -> bool:
    """Whether the read model shows the run waiting for its function's resume."""
    found = run(url, run_id)
    return found.get("status") == "running" and any(
        "is paused" in line["message"] for line in found.get("logs", []))


def paused_state(url: str, function_id: str) -> bool:
    functions = get_json(f"{url}/v1/functions")["functions"]
    return bool(next(f for f in functions if f["function_id"] == function_id)["paused"])


def one_event_per_partition(function_id: str, partitions: int, prefix: str) -> list[str]:
    """Event ids whose runs fall in each partition of the runs topic (and a few more)."""
    ids: dict[int, str] = {}
    for n in itertools.count():
        event_id = f"{prefix}-{n}"
        ids.setdefault(partition_of(run_id_for(function_id, event_id).encode(), partitions),
                       event_id)
        if len(ids) == partitions and n >= 2 * partitions:
            return [*ids.values(), *(f"{prefix}-x{i}" for i in range(partitions))]
    raise AssertionError("unreachable")


def test_a_paused_function_keeps_its_events_and_resume_runs_them_all_once(two: Any) -> None:
    settings, workers = two
    url = workers[0].url
    ss = Stepstream("t", settings=settings)
    store = redis.Redis.from_url(settings.redis_url)

    # A run in the middle of its first step when the pause comes.
    busy = run_id_for("gated", ss.send("op/gated", {"gate": "g1"}, id="busy"))
    wait_for(lambda: executed(settings, busy, "first"), what="the busy run's first step")
    assert post(f"{url}/v1/functions/gated/pause")[0] == 202
    for worker in workers:  # every worker's API tells
        wait_for(lambda w=worker: paused_state(w.url, "gated"), what="paused, listed")

    kept = [run_id_for("gated", ss.send("op/gated", {}, id=event_id))
            for event_id in one_event_per_partition("gated", settings.partitions, "kept")]
    for run_id in kept:
        wait_for(lambda r=run_id: held(url, r), what=f"run {run_id} held")
    store.set(gate_key(settings.namespace, "g1"), 1)  # the busy step ends: the run waits
    wait_for(lambda: held(url, busy), what="the busy run held after its step")
    assert executed(settings, busy, "first") == 1 and executed(settings, busy, "second") == 0
    assert sum(executed(settings, r, "first") for r in kept) == 0

    # A worker dies while the runs are held: the other takes its partitions, with the
    # pause (events sent now, one per partition, are held there too, which also says
    # the partitions have moved: no rebalance is left to re-run a step after the resume).
    workers[1].kill()
    later = [run_id_for("gated", ss.send("op/gated", {}, id=event_id))
             for event_id in one_event_per_partition("gated", settings.partitions, "later")]
    for run_id in later:
        wait_for(lambda r=run_id: held(url, r), timeout=90, what=f"run {run_id} held")
    resumed = cli(settings, url, "functions", "resume", "gated")
    assert resumed.returncode == 0, resumed.stderr
    everyone = [busy, *kept, *later]
    runs = [wait_for_run(url, run_id, timeout=90) for run_id in everyone]
    assert [r["status"] for r in runs] == ["completed"] * len(runs)
    assert [(executed(settings, r, "first"), executed(settings, r, "second"))
            for r in everyone] == [(1, 1)] * len(everyone)
    assert not paused_state(url, "gated")


def test_bulk_cancel_cancels_exactly_the_matching_runs(two: Any) -> None:
    settings, workers = two
    url = workers[0].url
    ss = Stepstream("t", settings=settings)

    def started(count: int, prefix: str) -> dict[str, list[str]]:
        events = [ss.send("op/nap", {}, id=f"{prefix}-{i}") for i in range(count)]
        runs = {fn: [run_id_for(fn, e) for e in events] for fn in ("napper", "dozer")}
        for run_id in itertools.chain(*runs.values()):
            wait_for(lambda r=run_id: run(url, r).get("steps"), what=f"{run_id} asleep")
        return runs

    before = started(3, "early")
    after_ms = max(run(url, r)["started_at"] for r in before["napper"]) + 1
    while time.time() * 1000 <= after_ms:  # the later runs start after it
        time.sleep(0.01)
    later = started(4, "late")

    status, answer = post(f"{url}/v1/runs/cancel", {"function": "napper", "status": "running",
                                                    "started_after": after_ms, "dry_run": True})
    assert status == 200 and answer["matched"] == 4 and answer["requested"] == 0
    counted = cli(settings, url, "runs", "cancel", "--function", "napper", "--since",
                  str(after_ms))
    assert counted.stdout.startswith("4 running runs match")
    done = cli(settings, url, "runs", "cancel", "--function", "napper", "--since",
               str(after_ms), "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("cancel requested for 4 running runs")
    assert sorted(done.stdout.split()[6:]) == sorted(later["napper"])
    for run_id in later["napper"]:
        assert wait_for_run(url, run_id)["status"] == "cancelled"
    still = [*before["napper"], *before["dozer"], *later["dozer"]]
    assert [run(url, r)["status"] for r in still] == ["running"] * len(still)


def cancel_requests(settings: Settings, run_id: str) -> list[CancelRequested]:
    """The cancel requests the runs topic holds for ``run_id``."""
    codec = default_codec()
    found = [codec.decode(m.value()) for m in read_all(settings.brokers, settings.topic("runs"))
             if m.key() == run_id.encode()]
    return [m for m in found if isinstance(m, CancelRequested)]


def test_a_cancelled_parent_cancels_the_child_it_waits_on_unless_abandoned(two: Any) -> None:
    settings, workers = two
    url = workers[0].url
    ss = Stepstream("t", settings=settings)
    parents = {policy: run_id_for("parent", ss.send("op/parent", {"policy": policy}))
               for policy in ("cancel", "abandon")}
    children = {policy: child_run_id(run_id, "call") for policy, run_id in parents.items()}
    for run_id in children.values():
        wait_for(lambda r=run_id: run(url, r).get("steps"), what=f"child {run_id} asleep")

    for run_id in parents.values():
        assert post(f"{url}/v1/runs/{run_id}/cancel")[0] == 202
        assert wait_for_run(url, run_id)["status"] == "cancelled"
    child = wait_for_run(url, children["cancel"])
    assert child["status"] == "cancelled"
    assert f"parent run {parents['cancel']} ended cancelled" in child["error"]["message"]
    # The parent's cancel and its children's were committed together: none for this one.
    assert cancel_requests(settings, children["abandon"]) == []
    assert run(url, children["abandon"])["status"] == "running"


def test_an_invoke_timeout_fails_the_step_and_cancels_the_child(two: Any) -> None:
    settings, workers = two
    url = workers[0].url
    parent = run_id_for("parent", Stepstream("t", settings=settings).send(
        "op/parent", {"timeout": 1}))
    done = wait_for_run(url, parent)
    assert done["status"] == "failed" and "InvokeTimeout" in json.dumps(done["error"])
    assert wait_for_run(url, child_run_id(parent, "call"))["status"] == "cancelled"


def test_a_singleton_skips_or_cancels_for_a_key_whose_run_is_running(two: Any) -> None:
    settings, workers = two
    url = workers[0].url
    ss = Stepstream("t", settings=settings)

    def runs(event_id: str) -> dict[str, str]:
        return {mode: run_id_for(f"single-{mode}", event_id) for mode in ("skip", "cancel")}

    first = runs(ss.send("op/single", {"user": "u1", "gate": "s1"}))
    for run_id in first.values():
        wait_for(lambda r=run_id: executed(settings, r, "first"), what=f"{run_id} running")
    second = runs(ss.send("op/single", {"user": "u1"}))
    other = runs(ss.send("op/single", {"user": "u2"}))

    # skip: the second event of u1 starts no run; u2 has a key of its own.
    skipped = wait_for_run(url, second["skip"])
    assert skipped["status"] == "cancelled" and skipped["error"]["type"] == "SingletonSkipped"
    assert executed(settings, second["skip"], "first") == 0
    assert wait_for_run(url, other["skip"])["status"] == "completed"
    # cancel: the running run of u1 is cancelled, then the new one starts and completes.
    cancelled = wait_for_run(url, first["cancel"])
    assert cancelled["status"] == "cancelled"
    assert second["cancel"] in cancelled["error"]["message"]
    took_over = wait_for_run(url, second["cancel"])
    assert took_over["status"] == "completed"
    assert took_over["started_at"] >= cancelled["ended_at"]
    assert wait_for_run(url, other["cancel"])["status"] == "completed"

    # Once u1's run ends, its key is free again.
    redis.Redis.from_url(settings.redis_url).set(gate_key(settings.namespace, "s1"), 1)
    assert wait_for_run(url, first["skip"])["status"] == "completed"
    later = runs(ss.send("op/single", {"user": "u1"}))
    assert wait_for_run(url, later["skip"])["status"] == "completed"
