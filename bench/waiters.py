"""Many runs waiting on one event name, each for its own key; then their approvals.

    python -m bench.waiters [--counts 2000 20000] [--write]

For each count N, on one worker and a fresh namespace: N ``bench/order`` events start N
runs of ``await-approval`` (``bench/functions.py``), each waiting for the
``bench/approved`` event whose ``data.order`` is its own. Registration is timed from the
first event sent to the last run's ``step.waiting`` on the history topic and the worker's
waiters table holding N entries (its ``stepstream_table_keys`` gauge); the approvals from
the first approval sent to the last ``run.completed``. Throughput that stays flat from
2,000 to 20,000 says that matching does not scan the waiters of the name.
"""

from __future__ import annotations

import argparse
import json
import re
import time
import urllib.request
from typing import Any

from bench.harness import History, produce_events, running_engine, write_results
from bench.measure import CpuMeter, format_table, loadavg, log

_WAITERS = re.compile(r'^stepstream_table_keys\{table="waiters"\} (\S+)$', re.M)


def waiters_in_table(url: str) -> int:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as reply:
        found = _WAITERS.search(reply.read().decode())
    return int(float(found.group(1))) if found else 0


def measure_one(count: int, timeout: float) -> dict[str, Any]:
    with running_engine("bench.functions", STEPSTREAM_MONITOR_INTERVAL_S="0.5") as cluster:
        settings, worker = cluster.settings, cluster.workers[0]
        history = History(settings)
        meter = CpuMeter({"worker": cluster.pids(), "broker": cluster.broker_pids()})
        try:
            started = time.perf_counter()
            produce_events(settings, "bench/order", "o", count)
            history.wait_for("step.waiting", count, timeout)
            while waiters_in_table(worker.url) < count:
                if time.perf_counter() - started > timeout:
                    raise TimeoutError("waiters not all in the table")
                time.sleep(0.1)
            registered = time.perf_counter() - started
            started = time.perf_counter()
            produce_events(settings, "bench/approved", "a", count)
            history.wait_for("run.completed", count, timeout)
            approved = time.perf_counter() - started
        finally:
            history.close()
        cores = meter.cores()
    row = {"waiting": count, "register_s": round(registered, 1),
           "register_per_s": round(count / registered), "approve_s": round(approved, 1),
           "approve_per_s": round(count / approved), "worker_cores": cores.get("worker"),
           "broker_cores": cores.get("broker"), "load": round(loadavg(), 1)}
    log(json.dumps(row))
    return row


def table(rows: list[dict[str, Any]]) -> str:
    return format_table(
        ["runs waiting on one name", "registration s", "registrations/s", "approvals s",
         "approvals/s", "worker cores", "broker cores", "load 1m"],
        [[r["waiting"], r["register_s"], r["register_per_s"], r["approve_s"],
          r["approve_per_s"], r["worker_cores"], r["broker_cores"], r["load"]] for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    rows = [measure_one(n, args.timeout) for n in args.counts]
    print(table(rows))
    if args.write:
        write_results("Waiting runs on one event name (one worker)",
                      "python -m bench.waiters " + " ".join(
                          ["--counts", *map(str, args.counts)]), table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
