"""A worker's memory and restart after many runs: finished ones, and sleeping ones.

    python -m bench.state_size [--runs 200000] [--write]

Two scenarios, each on one worker and a fresh namespace and dev broker:

- ``finished``: N one-step runs (``noop-steps``), the finished-run window set to 30 s
  (``STEPSTREAM_FINISHED_RUN_RETENTION_S``); RSS before the runs, and once they ended
  and their window passed (the markers deleted).
- ``sleeping``: N runs that each sleep a week (``nap-week``); RSS before, and once every
  run is asleep (its ``step.sleeping`` on the history topic).

Then the worker is killed (SIGKILL) and a new one started: restart-to-ready is the time
from the kill until the new worker owns its partitions with its stores restored
(``/readyz``); it includes the group noticing the dead member (the session timeout).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bench.harness import History, produce_events, running_engine, write_results
from bench.measure import format_table, loadavg, log

WINDOW_S = 30


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for {pid}")


def measure(scenario: str, runs: int, timeout: float) -> dict[str, Any]:
    event, data, kind = {"finished": ("bench/noop", {"n": 1}, "run.completed"),
                         "sleeping": ("bench/nap", {}, "step.sleeping")}[scenario]
    with running_engine("bench.functions",
                        STEPSTREAM_FINISHED_RUN_RETENTION_S=str(WINDOW_S)) as cluster:
        worker = cluster.workers[0]
        assert worker.process is not None
        time.sleep(3.0)  # joined and quiet
        before = rss_mb(worker.process.pid)
        history = History(cluster.settings)
        started = time.perf_counter()
        produce_events(cluster.settings, event, scenario, runs, data=data)
        history.wait_for(kind, runs, timeout)
        took = time.perf_counter() - started
        history.close()
        if scenario == "finished":
            time.sleep(WINDOW_S + 5)  # the window passes, the sweep deletes the markers
        after = rss_mb(worker.process.pid)
        killed = time.perf_counter()
        worker.kill()
        cluster.workers.remove(worker)  # alone again: add_workers waits for no rebalance
        cluster.add_workers(1)
        restart = time.perf_counter() - killed
    row = {"scenario": scenario, "runs": runs, "runs_per_s": round(runs / took),
           "rss_before_mb": before, "rss_after_mb": after,
           "rss_growth_mb": round(after - before, 1), "restart_s": round(restart, 1),
           "load": round(loadavg(), 1)}
    log(json.dumps(row))
    return row


def table(rows: list[dict[str, Any]]) -> str:
    return format_table(
        ["scenario", "runs", "runs/s", "RSS before MB", "RSS after MB", "growth MB",
         "kill -9 → new worker ready s", "load 1m"],
        [[r["scenario"], r["runs"], r["runs_per_s"], r["rss_before_mb"], r["rss_after_mb"],
          r["rss_growth_mb"], r["restart_s"], r["load"]] for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200_000)
    parser.add_argument("--scenarios", nargs="+", default=["finished", "sleeping"])
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    rows = [measure(s, args.runs, args.timeout) for s in args.scenarios]
    print(table(rows))
    if args.write:
        write_results("Memory and restart after many runs (one worker)",
                      f"python -m bench.state_size --runs {args.runs} --scenarios "
                      + " ".join(args.scenarios), table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
