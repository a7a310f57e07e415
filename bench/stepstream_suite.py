"""All of stepstream's measurements on one cluster, as ``python -m bench.compare`` wants them.

One worker: per-step overhead, then throughput; a second worker: throughput again, then
recovery (which kills one of the two). Starting the cluster once keeps ``--quick``
short; ``bench.step_overhead``, ``bench.throughput`` and ``bench.recovery`` run each part
on a cluster of its own.

    python -m bench.stepstream_suite [--runs 30] [--in-flight 1 10 50] [--seconds 10]
                                     [--sections per_step throughput recovery]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bench import recovery, step_overhead, throughput
from bench.harness import running_engine
from bench.measure import emit, exit_on_sigterm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sections", nargs="+", default=["per_step", "throughput", "recovery"])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--recovery-timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    out: dict[str, Any] = {"system": "stepstream"}
    with running_engine("bench.functions") as cluster:
        if "per_step" in args.sections:
            out["per_step"] = step_overhead.measure_on(cluster, args.runs)
        if "throughput" in args.sections:
            out["throughput"] = throughput.measure_on(cluster, args.in_flight, args.seconds)
        cluster.add_workers(1)
        if "throughput" in args.sections:
            out["throughput"] += throughput.measure_on(cluster, args.in_flight, args.seconds)
        if "recovery" in args.sections:
            out["recovery"] = recovery.measure_on(cluster, args.recovery_timeout)
    emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
