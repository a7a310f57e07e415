"""What an idle worker and the dev broker cost: CPU with no runs at all.

The dev broker answers a fetch only when its max-wait expires, so every consumer polls
it every ``STEPSTREAM_FETCH_MAX_WAIT_MS`` whatever the load, and each poll names every
partition the consumer holds. This measures that floor for a few partition counts and
fetch waits: the cores a throughput window cannot use on a machine the broker shares.

    python -m bench.idle [--partitions 1 4 12] [--fetch-wait-ms 5 20] [--seconds 10]
                         [--write]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from bench.harness import running_engine, write_results
from bench.measure import CpuMeter, exit_on_sigterm, format_table, log

SETTLE_S = 5.0
"""Time for the worker to finish joining and recovering before the window starts."""


def measure(partitions: list[int], waits: list[int], seconds: float) -> list[dict[str, Any]]:
    rows = []
    for count in partitions:
        for wait_ms in waits:
            with running_engine("bench.functions", partitions=count,
                                STEPSTREAM_FETCH_MAX_WAIT_MS=str(wait_ms)) as cluster:
                time.sleep(SETTLE_S)
                meter = CpuMeter({"worker": cluster.pids(), "broker": cluster.broker_pids()})
                time.sleep(seconds)
                cores = meter.cores()
            rows.append({"partitions": count, "wait_ms": wait_ms, **cores})
            log(f"idle partitions={count} fetch wait={wait_ms} ms: {cores}")
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    return format_table(
        ["partitions per topic", "fetch max-wait ms", "worker cores", "broker cores"],
        [[r["partitions"], r["wait_ms"], r["worker"], r["broker"]] for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--partitions", type=int, nargs="+", default=[1, 4, 12])
    parser.add_argument("--fetch-wait-ms", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    rows = measure(args.partitions, args.fetch_wait_ms, args.seconds)
    print(table(rows))
    if args.write:
        command = (f"python -m bench.idle --partitions {' '.join(map(str, args.partitions))} "
                   f"--fetch-wait-ms {' '.join(map(str, args.fetch_wait_ms))} "
                   f"--seconds {args.seconds:g} --write")
        write_results("Idle: one worker and the dev broker with no runs", command, table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
