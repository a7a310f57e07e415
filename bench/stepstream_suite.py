"""All of stepstream's measurements on one cluster, as ``python -m bench.compare`` wants them.

Per-step overhead on a cluster of one worker, seen on the history topic and through the
API (``bench.client_view``); then each throughput window on a fresh
cluster (a new namespace: Tansu's memory storage slows down as a topic grows), and the
recovery on the last of them, which has two workers (it kills one).
``bench.step_overhead``, ``bench.client_view``, ``bench.throughput`` and ``bench.recovery``
run each part alone.

    python -m bench.stepstream_suite [--runs 30] [--workers 1 2] [--in-flight 1 10 50]
                                     [--seconds 10] [--recovery-timeout 120]
                                     [--sections per_step throughput recovery]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bench import client_view, recovery, step_overhead, throughput
from bench.harness import running_engine
from bench.measure import emit, exit_on_sigterm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sections", nargs="+", default=["per_step", "throughput", "recovery"])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--recovery-timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    out: dict[str, Any] = {"system": "stepstream"}
    if "per_step" in args.sections:
        with running_engine("bench.functions") as cluster:
            out["per_step"] = step_overhead.measure_on(cluster, args.runs)
            out["per_step_api"] = client_view.measure_on(cluster, args.runs)
    windows = [(w, k) for w in args.workers for k in args.in_flight]
    if "throughput" not in args.sections:
        windows = []
    out["throughput"] = []
    if "recovery" in args.sections and (not windows or windows[-1][0] != 2):
        windows.append((2, 0))  # a cluster of two for the recovery only
    for i, (count, level) in enumerate(windows):
        # A fresh namespace for every window: Tansu's memory storage slows down as a
        # topic grows. Recovery runs on the last cluster, which has two workers.
        with running_engine("bench.functions", workers=count) as cluster:
            if level:
                out["throughput"] += throughput.measure_on(cluster, [level], args.seconds)
            if "recovery" in args.sections and i == len(windows) - 1:
                out["recovery"] = recovery.measure_on(cluster, args.recovery_timeout)
    emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
