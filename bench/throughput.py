"""Throughput of stepstream: runs/s of a 3-step no-op workflow, closed loop.

For 1 and 2 worker processes, keeps a fixed number of runs in flight (each finished run
is replaced at once) and counts completions over a time window, with the CPU the
workers and the broker used meanwhile (in cores).

    python -m bench.throughput [--workers 1 2] [--in-flight 1 10 50] [--seconds 10]
                               [--write] [--json] [--brokers HOST:PORT]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bench.harness import Cluster, run_loop, running_engine, write_results
from bench.measure import CpuMeter, emit, exit_on_sigterm, format_table, log

STEPS = 3


def measure(brokers: str | None, workers: list[int], in_flight: list[int],
            seconds: float) -> list[dict[str, Any]]:
    """One closed-loop window per (workers, in flight), each in a fresh namespace: Tansu's
    memory storage slows down as a topic grows, which would penalize later windows."""
    out: list[dict[str, Any]] = []
    for count in workers:
        for level in in_flight:
            with running_engine("bench.functions", workers=count, brokers=brokers) as cluster:
                out += measure_on(cluster, [level], seconds)
    return out


def measure_on(cluster: Cluster, in_flight: list[int], seconds: float) -> list[dict[str, Any]]:
    out = []
    for level in in_flight:
        meter = CpuMeter({"workers": cluster.pids(), "broker": cluster.broker_pids()})
        result = run_loop(cluster.settings, "noop-steps", "bench/noop", {"n": STEPS},
                          in_flight=level, seconds=seconds, warmup=level)
        row = {"workers": len(cluster.workers), "steps": STEPS, "cpu_cores": meter.cores(),
               **result}
        out.append(row)
        log(f"stepstream workers={row['workers']} in_flight={level}: "
            f"{result['runs_per_s']:.1f} runs/s, cpu {row['cpu_cores']}")
    return out


def table(rows: list[dict[str, Any]]) -> str:
    return format_table(
        ["workers", "in flight", "runs/s", "steps/s", "run p50 ms", "p99 ms", "worker cores",
         "load"],
        [[r["workers"], r["in_flight"], r["runs_per_s"], r["runs_per_s"] * r["steps"],
          r["latency_ms"].get("p50"), r["latency_ms"].get("p99"),
          r["cpu_cores"].get("workers"), f"{r['load'][0]:.1f}→{r['load'][1]:.1f}"]
         for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--brokers", help="use this broker instead of starting one")
    parser.add_argument("--json", action="store_true", help="print a RESULT line (bench.compare)")
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    rows = measure(args.brokers, args.workers, args.in_flight, args.seconds)
    if args.json:
        emit({"system": "stepstream", "throughput": rows})
        return 0
    print(table(rows))
    if args.write:
        command = ("python -m bench.throughput --workers "
                   f"{' '.join(map(str, args.workers))} --in-flight "
                   f"{' '.join(map(str, args.in_flight))} --seconds {args.seconds:g} --write")
        write_results(f"Throughput ({STEPS}-step no-op runs, closed loop)", command, table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
