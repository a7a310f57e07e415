"""Scale: executor concurrency, the RocksDB store.

The full variant (``STEPSTREAM_CHAOS_FULL=1``) also compares how long a restarted worker
takes to be ready with the memory store (replays the whole changelog) and with RocksDB
(local state plus the changelog's tail) over a larger table.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from stepstream import Stepstream
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.chaos.checker import check_ledger_runs, executions
from tests.chaos.conftest import FULL
from tests.chaos.test_outages import send_runs, wait_completed
from tests.conftest import worker_factory
from tests.integration.helpers import get_json, wait_for

MODULE = "tests.chaos.functions"
pytestmark = pytest.mark.timeout(1800 if FULL else 300)


def test_a_slow_step_does_not_hold_up_other_runs_on_its_partition(
        settings: Settings, database: str, tmp_path: Path) -> None:
    settings = settings.with_(partitions=1)  # every run on one partition
    with worker_factory(settings, tmp_path) as start:
        worker = start(MODULE, CHAOS_DATABASE_URL=database,
                       STEPSTREAM_EXECUTOR_CONCURRENCY="4")
        client = Stepstream("chaos", settings=settings)
        slow = run_id_for("slow", client.send("chaos/slow", {"seconds": 12}))
        client.close()
        wait_for(lambda: any(r[0] == slow for r in executions(database)), 60,
                 "the slow step started")
        quick = send_runs(settings, 5, steps=3, pause=0.0)
        wait_completed(worker, set(quick), 60)
        # Causal, not timed: the quick runs are done while the slow step still runs.
        assert get_json(f"{worker.url}/v1/runs/{slow}")["status"] == "running"
        wait_completed(worker, {slow}, 60)


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"] if FULL else ["rocksdb://"])
def test_a_restarted_worker_recovers_its_table_and_finishes_the_runs(
        store: str, settings: Settings, database: str, tmp_path: Path) -> None:
    env = {"CHAOS_DATABASE_URL": database, "STEPSTREAM_STORE": store,
           "STEPSTREAM_DATA_DIR": str(tmp_path / "state")}
    history, in_flight = (400, 40) if FULL else (20, 10)
    with worker_factory(settings, tmp_path) as start:
        worker = start(MODULE, **env)
        done = send_runs(settings, history, steps=3, pause=0.0)  # a table to recover
        wait_completed(worker, set(done), 600)
        running = send_runs(settings, in_flight, steps=5, pause=0.2)
        wait_for(lambda: len(executions(database)) > 3 * history + in_flight, 60,
                 "runs in flight")
        worker.kill()
        restarted_at = time.monotonic()
        worker = start(MODULE, **env)  # same data dir: RocksDB keeps its state
        ready_in = time.monotonic() - restarted_at
        wait_completed(worker, set(running), 180)
        verdict = check_ledger_runs(settings, {**done, **running}, database, worker.url)
    print(f"\n{store}: restarted worker ready in {ready_in:.1f}s with {history + in_flight} "
          f"runs in its table; checker: {verdict.summary()}")
    assert not verdict.problems, "\n".join(verdict.problems[:30])
