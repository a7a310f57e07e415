"""A worker's memory and restart after many runs: finished ones, and sleeping ones.

    python -m bench.state_size [--runs 200000] [--write]

Two scenarios, each on one worker and a fresh namespace and dev broker:

- ``finished``: N one-step runs (``noop-steps``), the finished-run window set to 30 s
  (``STEPSTREAM_FINISHED_RUN_RETENTION_S``); RSS before the runs, when they have ended,
  and once their window passed (the markers deleted).
- ``sleeping``: N runs that each sleep a week (``nap-week``); RSS before, and once every
  run is asleep (in flight, none waiting for a step).

Then the worker is killed (SIGKILL) and a new one started: restart-to-ready is the time
from the kill until the new worker owns its partitions with its stores restored
(``/readyz``); it includes the group noticing the dead member (the session timeout).
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from bench.harness import produce_events, running_engine, write_results
from bench.measure import format_table, loadavg, log
from streams.memory import TRIM_INTERVAL_S

WINDOW_S = 30


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for {pid}")


def scrape(url: str) -> dict[str, float]:
    """The worker's metrics, summed over their labels (``name`` without labels)."""
    totals: dict[str, float] = {}
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as reply:
        for line in reply.read().decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                base = name.split("{", 1)[0]
                totals[base] = totals.get(base, 0.0) + float(value)
    return totals


def wait_until(done: Callable[[dict[str, float]], bool], url: str, timeout: float) -> None:
    """Poll the worker's metrics until ``done``. The history topic is not read: on the
    dev broker a fetch costs time that grows with a partition's length, and a reader
    of 200,000 runs' history fell minutes behind the worker."""
    deadline = time.monotonic() + timeout
    while not done(scrape(url)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not done after {timeout} s")
        time.sleep(0.5)


def measure(scenario: str, runs: int, timeout: float, store: str) -> dict[str, Any]:
    event, data = {"finished": ("bench/noop", {"n": 1}),
                   "sleeping": ("bench/nap", {})}[scenario]
    done: Callable[[dict[str, float]], bool] = {
        # Every run ended; or every run is in flight and none waits for a step: asleep.
        "finished": lambda m: m.get("stepstream_runs_finished_total", 0) >= runs,
        "sleeping": lambda m: (m.get("stepstream_runs_in_flight", 0) >= runs
                               and m.get("stepstream_runs_active", 1) == 0),
    }[scenario]
    with running_engine("bench.functions", STEPSTREAM_MONITOR_INTERVAL_S="1",
                        STEPSTREAM_STORE=store,
                        STEPSTREAM_FINISHED_RUN_RETENTION_S=str(WINDOW_S)) as cluster:
        worker = cluster.workers[0]
        assert worker.process is not None
        time.sleep(3.0)  # joined and quiet
        before = rss_mb(worker.process.pid)
        started = time.perf_counter()
        produce_events(cluster.settings, event, scenario, runs, data=data)
        wait_until(done, worker.url, timeout)
        took = time.perf_counter() - started
        peak = rss_mb(worker.process.pid)
        # The window passes and the sweep deletes the markers; the worker hands freed
        # memory back (streams.memory) within the same time.
        time.sleep(max(WINDOW_S, TRIM_INTERVAL_S) + 5)
        after = rss_mb(worker.process.pid)
        log(json.dumps({"scenario": scenario, "runs": runs, "took_s": round(took, 1),
                        "rss_before_mb": before, "rss_done_mb": peak, "rss_after_mb": after}))
        killed = time.perf_counter()
        worker.kill()
        cluster.workers.remove(worker)  # alone again: add_workers waits for no rebalance
        cluster.add_workers(1, ready_timeout=timeout)
        restart = time.perf_counter() - killed
    row = {"scenario": scenario, "store": store, "runs": runs, "runs_per_s": round(runs / took),
           "rss_before_mb": before, "rss_done_mb": peak, "rss_after_mb": after,
           "rss_growth_mb": round(after - before, 1), "restart_s": round(restart, 1),
           "load": round(loadavg(), 1)}
    log(json.dumps(row))
    return row


def table(rows: list[dict[str, Any]]) -> str:
    return format_table(
        ["scenario", "store", "runs", "runs/s", "RSS before MB", "RSS when done MB",
         "RSS after MB", "growth MB", "kill -9 → new worker ready s", "load 1m"],
        [[r["scenario"], r["store"], r["runs"], r["runs_per_s"], r["rss_before_mb"],
          r["rss_done_mb"], r["rss_after_mb"], r["rss_growth_mb"], r["restart_s"], r["load"]]
         for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200_000)
    parser.add_argument("--scenarios", nargs="+", default=["finished", "sleeping"])
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--store", default="memory://",
                        help="STEPSTREAM_STORE of the worker (memory:// or rocksdb://)")
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    rows = [measure(s, args.runs, args.timeout, args.store) for s in args.scenarios]
    print(table(rows))
    if args.write:
        write_results("Memory and restart after many runs (one worker)",
                      f"python -m bench.state_size --runs {args.runs} --store {args.store} "
                      "--scenarios " + " ".join(args.scenarios), table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
