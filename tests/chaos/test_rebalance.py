"""How long the work pauses when a worker joins, leaves, or dies (full variant only).

Kafka's classic group protocol stops every member while the group rebalances, so the
pause shows as the longest gap between two step executions anywhere (PostgreSQL rows,
written by the steps themselves) while runs keep arriving. A killed worker is noticed
only when its session times out: the wait until its runs move again is the takeover.
Numbers are printed, not asserted (the machine is shared); what is asserted is that
every run completes.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from pathlib import Path

import pytest

from stepstream import Stepstream
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.chaos.checker import check_ledger_runs, executions
from tests.chaos.conftest import FULL
from tests.chaos.test_outages import wait_completed
from tests.conftest import worker_factory

MODULE = "tests.chaos.functions"
pytestmark = [pytest.mark.timeout(1800),
              pytest.mark.skipif(not FULL, reason="full chaos variant (STEPSTREAM_CHAOS_FULL=1)")]
SETTLE_S = 15.0


# Measured at 6 s (the tests' value) and 3 s: at 3 s the lone survivor of the kill, busy
# recovering a backlog on a shared 2-core machine, did not finish a rebalance within its
# session and the runs stalled, so the tests and the default (8 s) stay where they are.
SESSION_TIMEOUT_S = os.environ.get("STEPSTREAM_TEST_SESSION_TIMEOUT_S", "6")


def test_rebalance_pauses_on_join_leave_and_kill(settings: Settings, database: str,
                                                 tmp_path: Path) -> None:
    session_timeout_s = SESSION_TIMEOUT_S
    settings = settings.with_(partitions=8)
    env = {"CHAOS_DATABASE_URL": database, "STEPSTREAM_SESSION_TIMEOUT_S": session_timeout_s}
    runs: dict[str, int] = {}
    stop = threading.Event()
    with worker_factory(settings, tmp_path) as start:
        first = [start(MODULE, ready=False, **env) for _ in range(2)]
        for worker in first:
            worker.wait_ready(120)
        client = Stepstream("chaos", settings=settings)

        def feed() -> None:
            while not stop.is_set():
                event_id = client.send("chaos/ledger", {"steps": 4, "pause": 0.05})
                runs[run_id_for("ledger", event_id)] = 4
                time.sleep(0.1)

        feeder = threading.Thread(target=feed, name="feeder")
        feeder.start()
        try:
            time.sleep(SETTLE_S)
            marks = {"steady": time.time()}
            joined_at = time.monotonic()
            third = start(MODULE, **env)  # returns once it is ready
            marks["join"] = time.time()
            join_ready = time.monotonic() - joined_at
            time.sleep(SETTLE_S)
            marks["leave"] = time.time()
            third.stop()  # SIGTERM: leaves the group at once
            time.sleep(SETTLE_S)
            marks["kill"] = time.time()
            assert first[1].process is not None
            victim_pid = first[1].process.pid
            first[1].kill()
            time.sleep(SETTLE_S + float(session_timeout_s))
            marks["end"] = time.time()
        finally:
            stop.set()
            feeder.join()
            client.close()
        wait_completed(first[0], set(runs), 300)
        verdict = check_ledger_runs(settings, runs, database, first[0].url)

    rows = executions(database)
    gaps = {phase: _longest_gap(rows, marks[phase], marks[nxt]) for phase, nxt in
            (("steady", "join"), ("join", "leave"), ("leave", "kill"), ("kill", "end"))}
    takeover = _takeover(rows, marks["kill"], victim_pid)
    print(f"\nsession timeout {session_timeout_s}s, {len(runs)} runs: joining worker ready in "
          f"{join_ready:.1f}s; longest pause in step executions: steady {gaps['steady']:.1f}s, "
          f"join {gaps['join']:.1f}s, graceful leave {gaps['leave']:.1f}s, SIGKILL "
          f"{gaps['kill']:.1f}s; victim's runs moving again {takeover:.1f}s after the kill; "
          f"checker: {verdict.summary()}")
    assert not verdict.problems, "\n".join(verdict.problems[:30])


def _longest_gap(rows: list[tuple[str, str, int, float]], start: float, end: float) -> float:
    times = sorted(at for _, _, _, at in rows if start <= at <= end)
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def _takeover(rows: list[tuple[str, str, int, float]], killed_at: float, pid: int) -> float:
    """Until the last of the victim's unfinished runs executed a step on a survivor."""
    last_before = {r: p for r, _, p, at in rows if at < killed_at}
    first_after: dict[str, float] = {}
    for run_id, _, _, at in rows:
        if at >= killed_at and run_id not in first_after:
            first_after[run_id] = at
    waits = [first_after[r] - killed_at for r, p in last_before.items()
             if p == pid and r in first_after]
    return max(waits) if waits else float("nan")

