"""DBOS: a durable workflow of N no-op steps on the machine's PostgreSQL.

Runs are enqueued with ``DBOSClient`` on a queue that worker processes (DBOS launched,
one executor each) poll every 5 ms; a run is done when its workflow's status is
SUCCESS, which the benchmark polls every 5 ms too. The database ``dbos_bench`` is
dropped and created anew at the start.

Recovery: DBOS (open source, without Conductor) does not move a dead executor's
workflows to a live one; a process started with the dead one's executor id recovers
them. So the killed worker is restarted at once, as a supervisor would, and the time is
taken until a step of the run completes.

Run by ``bench/.venvs/dbos/bin/python -m bench.peers.dbos_bench``
(``python -m bench.compare`` does); prints one ``RESULT {json}`` line.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
from typing import Any

import psycopg
from dbos import DBOSClient, EnqueueOptions

from bench.measure import Beacons, CpuMeter, closed_loop, emit, log, pids_named, recovery
from bench.peers.common import arguments, processes, runs_for, spawn, versions
from bench.peers.dbos_app import DATABASE_URL, POLL_S, QUEUE

DONE = ["SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"]


def recreate_database(synchronous_commit: bool) -> None:
    """Drop and create the benchmark's own database (nothing else is touched)."""
    admin_url, name = DATABASE_URL.rsplit("/", 1)
    with psycopg.connect(f"{admin_url}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
        conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = '
                     f'{"on" if synchronous_commit else "off"}')


class Workers:
    """DBOS worker processes, each its own executor (``DBOS__VMID``)."""

    def __init__(self, log_dir: str, started: list[Any]) -> None:
        self.log_dir, self.started = log_dir, started
        self.ready_dir = tempfile.mkdtemp(prefix="dbos-ready-")
        self.by_pid: dict[int, tuple[str, Any]] = {}

    def start(self, executor: str) -> Any:
        ready = os.path.join(self.ready_dir, f"{executor}-{uuid.uuid4().hex[:6]}")
        process = spawn(["-m", "bench.peers.dbos_app", ready], self.log_dir,
                        f"dbos-{executor}", env={"DBOS__VMID": executor})
        self.started.append(process)
        self.by_pid[process.pid] = (executor, process)
        deadline = time.monotonic() + 120
        while not os.path.exists(ready):
            if process.poll() is not None:
                raise RuntimeError(f"DBOS worker {executor} exited at start")
            if time.monotonic() > deadline:
                raise TimeoutError(f"DBOS worker {executor} not ready after 120 s")
            time.sleep(0.05)
        return process

    def restart_killed(self, pid: int) -> None:
        """SIGKILL ``pid`` and start its executor again at once (what a supervisor does)."""
        executor, process = self.by_pid.pop(pid)
        process.kill()
        process.wait()
        self.start(executor)


class Runs:
    def __init__(self, client: DBOSClient) -> None:
        self.client = client
        self.pending: set[str] = set()

    def submit(self, workflow: str, *args: Any) -> str:
        options: EnqueueOptions = {"workflow_name": workflow, "queue_name": QUEUE}
        handle = self.client.enqueue(options, *args)
        self.pending.add(handle.workflow_id)
        return str(handle.workflow_id)

    def finished(self, timeout: float) -> list[str]:
        deadline = time.perf_counter() + timeout
        while self.pending:
            rows = self.client.list_workflows(workflow_ids=list(self.pending), status=DONE,
                                              load_input=False, load_output=False)
            if rows:
                bad = [r for r in rows if r.status != "SUCCESS"]
                if bad:
                    raise RuntimeError(f"DBOS workflow ended {bad[0].status}: {bad[0].error}")
                done = [r.workflow_id for r in rows]
                self.pending.difference_update(done)
                return done
            if time.perf_counter() >= deadline:
                break
            time.sleep(POLL_S)
        return []


def loops(runs: Runs, procs: list[Any], n_steps: list[int], in_flight: list[int],
          loop: dict[str, Any], labels: dict[str, Any]) -> list[dict[str, Any]]:
    """One closed loop per (steps, runs in flight)."""
    rows = []
    for n in n_steps:
        for level in in_flight:
            meter = CpuMeter({"workers": [p.pid for p in procs],
                              "postgres": pids_named("postgres")})
            options = {"warmup": level, **loop, "in_flight": level}
            if "runs" in options:
                options["runs"] = runs_for(n, options["runs"])
            result = closed_loop(lambda n=n: runs.submit("bench.chain", n), runs.finished,
                                 **options)
            rows.append({**labels, "n": n, "steps": n, "cpu_cores": meter.cores(), **result})
    return rows


def session(args: Any, out: dict[str, Any], sections: list[str]) -> None:
    """One worker: per-step, throughput; a second: throughput, recovery (kills one)."""
    with processes() as started:
        pool = Workers(args.log_dir, started)
        procs = [pool.start("w0")]
        client = DBOSClient(system_database_url=DATABASE_URL)
        runs = Runs(client)
        per_step = {"runs": args.runs, "warmup": 2}
        throughput = {"seconds": args.seconds}
        try:
            if "per_step" in sections:
                out["per_step"] = loops(runs, procs, args.steps, [1], per_step, {})
                log(f"dbos per_step: {json.dumps(out['per_step'])[:300]}")
            if "per_step_fsync" in sections:
                out["per_step_fsync"] = loops(runs, procs, args.steps, [1], per_step, {})
            if "throughput" in sections:
                out["throughput"] = loops(runs, procs, [3], args.in_flight, throughput,
                                          {"workers": 1})
            if "throughput" in sections or "recovery" in sections:
                procs.append(pool.start("w1"))
            if "throughput" in sections:
                out["throughput"] += loops(runs, procs, [3], args.in_flight, throughput,
                                           {"workers": 2})
                log(f"dbos throughput: {json.dumps(out['throughput'])[:300]}")
            if "recovery" in sections:
                out["recovery"] = measure_recovery(pool, runs, args.recovery_timeout)
                log(f"dbos recovery: {out['recovery']}")
        finally:
            client.destroy()


def measure_recovery(pool: Workers, runs: Runs, timeout: float, steps: int = 200,
                     pause_ms: int = 100) -> dict[str, Any]:
    beacons = Beacons()
    try:
        runs.submit("bench.slow_chain", steps, pause_ms, beacons.port)
        result = recovery(beacons.next, pool.restart_killed, mid_step=True,
                          timeout=timeout)
    finally:
        beacons.close()
    return {**result, "step_ms": pause_ms}


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, argv)
    out: dict[str, Any] = {"system": "dbos", "versions": versions("dbos", "psycopg",
                                                                "sqlalchemy")}
    recreate_database(synchronous_commit=False)
    with psycopg.connect(DATABASE_URL) as conn:
        out["versions"]["postgresql"] = str(conn.execute("show server_version").fetchone()[0])
        out["synchronous_commit"] = str(conn.execute("show synchronous_commit").fetchone()[0])
    session(args, out, [x for x in args.sections if x != "per_step_fsync"])
    if "per_step_fsync" in args.sections:  # what a default PostgreSQL costs: fsync per commit
        recreate_database(synchronous_commit=True)
        session(args, out, ["per_step_fsync"])
    emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
