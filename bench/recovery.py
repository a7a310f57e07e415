"""Recovery of stepstream: SIGKILL of the worker executing a run, to its next step.

Two workers; one run of a long chain of 100 ms steps. Each step returns the pid of the
worker that ran it, so once a few steps are done, the history topic says which worker
is executing the run: that one is killed, and the time is taken until the history
topic shows a step of the run completed by the survivor.

    python -m bench.recovery [--json] [--brokers HOST:PORT]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bench.harness import Cluster, History, running_engine, step_reports
from bench.measure import emit, exit_on_sigterm, log, recovery
from stepstream import Stepstream


def measure(brokers: str | None, timeout: float = 120.0) -> dict[str, Any]:
    with running_engine("bench.functions", workers=2, brokers=brokers) as cluster:
        return measure_on(cluster, timeout)


def measure_on(cluster: Cluster, timeout: float, steps: int = 200,
               step_ms: int = 100) -> dict[str, Any]:
    """Needs two workers; kills one of them."""
    by_pid = {w.process.pid: w for w in cluster.workers if w.process is not None}
    history = History(cluster.settings)
    client = Stepstream("bench", settings=cluster.settings)
    try:
        client.send("bench/slow", {"n": steps, "ms": step_ms})
        # A run's steps all go to the worker that owns its partition: the one that
        # finished the last step is executing the next.
        result = recovery(step_reports(history, "slow-chain"), lambda pid: by_pid[pid].kill(),
                          mid_step=False, timeout=timeout)
    finally:
        client.close()
        history.close()
    result.update(step_ms=step_ms, session_timeout_s=cluster.settings.session_timeout_s,
                  chain_lease_s=getattr(cluster.settings, "chain_lease_ms", 0) / 1000 or None)
    log(f"stepstream recovery: {result}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--brokers", help="use this broker instead of starting one")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after")
    parser.add_argument("--json", action="store_true", help="print a RESULT line (bench.compare)")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    result = measure(args.brokers, args.timeout)
    if args.json:
        emit({"system": "stepstream", "recovery": result})
    else:
        print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
