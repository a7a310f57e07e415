"""Celery: a chain of N no-op tasks; Redis (the machine's, a dedicated db) as broker and
result backend; worker processes with the solo pool (one process, one task at a time).

A run is ``chain(noop.si(0), …, noop.si(N-1)).apply_async()``; it is done when the
result of its last task is stored, which the Redis backend publishes on the task's key
(the same notification ``AsyncResult.get`` waits for).

Run by ``bench/.venvs/celery/bin/python -m bench.peers.celery_bench``
(``python -m bench.compare`` does); prints one ``RESULT {json}`` line.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from typing import Any

import redis
from celery import chain

from bench.measure import Beacons, CpuMeter, closed_loop, emit, log, pids_named, recovery
from bench.peers.celery_tasks import QUEUE, REDIS_URL, app, noop, pause
from bench.peers.common import arguments, processes, runs_for, spawn, versions


def start_workers(count: int, log_dir: str, started: list[Any]) -> list[Any]:
    """Start ``count`` more workers and wait until they answer a ping."""
    names = [f"w{k}-{uuid.uuid4().hex[:4]}@bench" for k in range(count)]
    workers = []
    for name in names:
        workers.append(spawn(["-m", "celery", "-A", "bench.peers.celery_tasks", "worker",
                              "--pool=solo", "-Q", QUEUE, "-n", name, "--without-gossip",
                              "--without-mingle", "-l", "warning"], log_dir,
                             f"celery-{name.split('@')[0]}"))
        started.append(workers[-1])
    deadline = time.monotonic() + 60
    while True:
        if any(w.poll() is not None for w in workers):
            raise RuntimeError("a Celery worker exited at start")
        replies = app.control.ping(destination=names, timeout=0.5)
        if len(replies) == count:
            break
        if time.monotonic() > deadline:
            raise TimeoutError("Celery workers did not answer ping in 60 s")
    return workers


class Runs:
    """Chains in, final results out (Redis pub/sub on the backend's result keys)."""

    def __init__(self, store: redis.Redis) -> None:
        self.pubsub = store.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe("celery-task-meta-*")
        self.pubsub.get_message(timeout=1.0)

    def submit(self, n: int) -> str:
        return str(chain(*(noop.si(i) for i in range(n))).apply_async().id)

    def finished(self, timeout: float) -> list[str]:
        done, deadline = [], time.perf_counter() + timeout
        while True:
            message = self.pubsub.get_message(
                timeout=max(0.0, deadline - time.perf_counter()) if not done else 0.0)
            if message is None:
                return done
            meta = json.loads(message["data"])
            if meta.get("status") != "SUCCESS":
                raise RuntimeError(f"celery task ended {meta.get('status')}: {meta}")
            done.append(meta["task_id"])

    def close(self) -> None:
        self.pubsub.close()


def loops(runs: Runs, procs: list[Any], n_steps: list[int], loop: dict[str, Any],
          labels: dict[str, Any]) -> list[dict[str, Any]]:
    """One closed loop per entry of ``n_steps`` (``loop``'s ``in_flight`` may be a list)."""
    rows = []
    levels = loop.pop("in_flight")
    for n in n_steps:
        for level in levels if isinstance(levels, list) else [levels]:
            meter = CpuMeter({"workers": [p.pid for p in procs],
                              "redis": pids_named("redis-server")})
            options = {**loop, "in_flight": level}
            if "runs" in options:
                options["runs"] = runs_for(n, options["runs"])
            if "warmup" not in options:
                options["warmup"] = level
            result = closed_loop(lambda n=n: runs.submit(n), runs.finished, **options)
            rows.append({**labels, "n": n, "steps": n, "cpu_cores": meter.cores(), **result})
    return rows


def measure_recovery(procs: list[Any], timeout: float, steps: int = 200,
                     pause_ms: int = 100) -> dict[str, Any]:
    beacons = Beacons()
    by_pid = {p.pid: p for p in procs}
    try:
        chain(*(pause.si(i, pause_ms, beacons.port) for i in range(steps))).apply_async()

        def kill(pid: int) -> None:
            by_pid[pid].kill()
            by_pid[pid].wait()

        result = recovery(beacons.next, kill, mid_step=True, timeout=timeout)
    finally:
        beacons.close()
    return {**result, "step_ms": pause_ms, "visibility_timeout_s": 8}


def main(argv: list[str] | None = None) -> int:
    """One worker: per-step, throughput; a second: throughput, recovery (kills one)."""
    args = arguments(__doc__, argv)
    store = redis.Redis.from_url(REDIS_URL)
    out: dict[str, Any] = {"system": "celery",
                           "versions": versions("celery", "kombu", "redis"),
                           "redis_url": REDIS_URL}
    store.flushdb()  # only the benchmark's db
    try:
        with processes() as started:
            procs = start_workers(1, args.log_dir, started)
            runs = Runs(store)
            try:
                if "per_step" in args.sections:
                    out["per_step"] = loops(runs, procs, args.steps,
                                            {"in_flight": 1, "runs": args.runs, "warmup": 2},
                                            {})
                    log(f"celery per_step: {json.dumps(out['per_step'])[:300]}")
                throughput = {"in_flight": list(args.in_flight), "seconds": args.seconds}
                if "throughput" in args.sections:
                    out["throughput"] = loops(runs, procs, [3], dict(throughput),
                                              {"workers": 1})
                procs += start_workers(1, args.log_dir, started)
                if "throughput" in args.sections:
                    out["throughput"] += loops(runs, procs, [3], dict(throughput),
                                               {"workers": 2})
                    log(f"celery throughput: {json.dumps(out['throughput'])[:300]}")
            finally:
                runs.close()
            if "recovery" in args.sections:
                out["recovery"] = measure_recovery(procs, args.recovery_timeout)
                log(f"celery recovery: {out['recovery']}")
    finally:
        store.flushdb()
        store.close()
    emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
