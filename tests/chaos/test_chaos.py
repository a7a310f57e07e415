"""Three workers, SIGKILL of a random one every few seconds: nothing lost, nothing applied twice.

CI variant: ~60 runs and a handful of kills. ``STEPSTREAM_CHAOS_FULL=1``: a few hundred
runs and a kill every 3-8 s for as long as they take.
"""

from __future__ import annotations

import contextlib
import random
import signal
import statistics
import threading
import time
from pathlib import Path

import pytest

from stepstream import Stepstream
from stepstream.devservices import WorkerProcess
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.chaos.checker import check_ledger_runs, executions, explain
from tests.chaos.conftest import FULL
from tests.conftest import worker_factory
from tests.integration.helpers import get_json

MODULE = "tests.chaos.functions"
pytestmark = pytest.mark.timeout(1800 if FULL else 300)
RUNS = 300 if FULL else 60
STEPS = 5
KILL_EVERY = (3.0, 8.0) if FULL else (3.0, 5.0)
MIN_KILLS = 12 if FULL else 4
FEED_SECONDS = 60.0 if FULL else 12.0


def test_random_sigkills_lose_no_run_and_apply_every_step_once(
        settings: Settings, database: str, tmp_path: Path) -> None:
    settings = settings.with_(partitions=8)
    rng = random.Random()
    env = {"CHAOS_DATABASE_URL": database}
    kills: list[tuple[float, int]] = []  # (epoch seconds, pid)
    with worker_factory(settings, tmp_path) as start:
        workers = [start(MODULE, ready=False, **env) for _ in range(3)]
        for worker in workers:
            worker.wait_ready(120)
        client = Stepstream("chaos", settings=settings)
        run_ids: dict[str, int] = {}

        def feed() -> None:
            for n in range(RUNS):
                event_id = client.send("chaos/ledger", {"steps": STEPS, "pause": 0.05})
                run_ids[run_id_for("ledger", event_id)] = STEPS
                time.sleep(FEED_SECONDS / RUNS * rng.uniform(0.5, 1.5) if n else 0)

        feeder = threading.Thread(target=feed, name="feeder")
        feeder.start()
        crashed: list[str] = []

        def replace_crashed() -> None:
            # A worker that exits on its own is a finding, reported; like a supervisor
            # (Kubernetes) would, the test starts a new one so the run can go on.
            for i, worker in enumerate(workers):
                if worker.process is not None and worker.process.poll() is not None:
                    crashed.append(f"{worker.log_path} (exit {worker.process.returncode})")
                    workers[i] = start(MODULE, ready=False, **env)

        try:
            started = time.monotonic()
            while feeder.is_alive() or len(kills) < MIN_KILLS:
                time.sleep(rng.uniform(*KILL_EVERY))
                replace_crashed()
                victim = rng.choice([w for w in workers if _alive(w)])
                assert victim.process is not None
                kills.append((time.time(), victim.process.pid))
                victim.kill()
                workers[workers.index(victim)] = start(MODULE, ready=False, **env)
                if time.monotonic() - started > (600 if FULL else 90):
                    break
        finally:
            feeder.join()
            client.close()
        chaos_seconds = time.monotonic() - started
        # Every run completes: poll the read model of a live worker.
        deadline = time.monotonic() + (300 if FULL else 150)
        waiting = set(run_ids)
        while waiting and time.monotonic() < deadline:
            replace_crashed()
            live = _any_ready(workers)
            waiting = {r for r in waiting if not _completed(live, r)}
            time.sleep(1.0)
        settled = time.monotonic() - started - chaos_seconds
        live = _any_ready(workers)
        if waiting:
            _dump_tasks(workers)
        assert not waiting, (f"{len(waiting)} runs stuck, e.g. {_describe(live, waiting)}\n"
                             + explain(settings, waiting, database))

        verdict = check_ledger_runs(settings, run_ids, database, live.url)

    takeovers = _takeover_times(executions(database), kills)
    print(f"\nchaos: {len(run_ids)} runs x {STEPS} steps on 3 workers, {len(kills)} SIGKILLs "
          f"in {chaos_seconds:.0f}s; all runs completed {settled:.0f}s after the last kill")
    print(f"checker: {verdict.summary()}")
    if crashed:
        print(f"workers that exited on their own (restarted): {crashed}")
    if takeovers:
        print(f"takeover after a kill (victim's runs moving again): median "
              f"{statistics.median(takeovers):.1f}s, max {max(takeovers):.1f}s "
              f"over {len(takeovers)} kills")
    assert not verdict.problems, "\n".join(verdict.problems[:30])


def _any_ready(workers: list[WorkerProcess]) -> WorkerProcess:
    deadline = time.monotonic() + 120
    while True:
        for worker in workers:
            with contextlib.suppress(RuntimeError, TimeoutError):
                return worker.wait_ready(0.5)
        if time.monotonic() > deadline:
            raise TimeoutError("no worker is ready")


def _dump_tasks(workers: list[WorkerProcess]) -> None:
    """Have each live worker log its threads' and tasks' stacks (SIGUSR1), for the
    post-mortem of stuck runs."""
    for worker in workers:
        if _alive(worker) and worker.process is not None:
            worker.process.send_signal(signal.SIGUSR1)
    time.sleep(2.0)


def _alive(worker: WorkerProcess) -> bool:
    return worker.process is not None and worker.process.poll() is None


def _completed(worker: WorkerProcess, run_id: str) -> bool:
    doc = get_json(f"{worker.url}/v1/runs/{run_id}")
    return bool(doc) and doc["status"] == "completed"


def _describe(worker: WorkerProcess, run_ids: set[str]) -> list[object]:
    docs = [get_json(f"{worker.url}/v1/runs/{r}") for r in sorted(run_ids)[:3]]
    return [(d["run_id"], d["status"], [(s["id"], s["status"]) for s in d["steps"]])
            if d else None for d in docs]


def _takeover_times(rows: list[tuple[str, str, int, float]],
                    kills: list[tuple[float, int]]) -> list[float]:
    """Per kill: how long until the victim's unfinished runs executed a step again.

    A run belongs to the victim if its last execution before the kill ran there; it was
    unfinished if it executes again later. The wait until its next execution, maxed
    over the victim's runs, is the takeover (detection + rebalance + table recovery).
    """
    found = []
    for at, pid in kills:
        last_before: dict[str, int] = {}
        first_after: dict[str, float] = {}
        for run_id, _, row_pid, row_at in rows:  # ordered by time
            if row_at < at:
                last_before[run_id] = row_pid
            elif run_id not in first_after:
                first_after[run_id] = row_at
        waits = [first_after[r] - at for r, p in last_before.items()
                 if p == pid and r in first_after]
        if waits:
            found.append(max(waits))
    return found
