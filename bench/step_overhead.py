"""Per-step overhead of stepstream on the dev broker.

For N no-op steps (N = 1, 10, 50), sends runs one at a time and measures from the
event being produced to ``run.completed`` arriving on the history topic.

    python -m bench.step_overhead [--runs 30] [--write] [--json] [--brokers HOST:PORT]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bench.harness import (
    Cluster,
    breakdown,
    message_counts,
    run_loop,
    running_engine,
    write_results,
)
from bench.measure import emit, exit_on_sigterm, format_table, log

STEPS = (1, 10, 50)


def measure(brokers: str | None, runs: int) -> list[dict[str, Any]]:
    """One closed-loop measurement (one run in flight) per N, on one worker."""
    with running_engine("bench.functions", brokers=brokers) as cluster:
        return measure_on(cluster, runs)


def measure_on(cluster: Cluster, runs: int) -> list[dict[str, Any]]:
    out = []
    for n in STEPS:
        before = message_counts(cluster.settings)
        result = run_loop(cluster.settings, "noop-steps", "bench/noop", {"n": n},
                          runs=max(5, runs if n < 50 else runs // 2), warmup=2)
        after = message_counts(cluster.settings)
        # Broker messages per run, by topic: the hops a run took (warm-up runs included).
        total_runs = result["runs"] + 2
        hops = {k: round((after[k] - before.get(k, 0)) / total_runs, 1) for k in after
                if after[k] > before.get(k, 0)}
        out.append({"n": n, "messages_per_run": hops, **result})
        log(f"stepstream N={n}: p50 {result['latency_ms']['p50']:.1f} ms, messages/run {hops}")
    split = breakdown(cluster.settings, "noop-steps")
    for row in out:
        row["breakdown_ms"] = split.get(row["n"])
    return out


def table(rows: list[dict[str, Any]]) -> str:
    return format_table(
        ["steps N", "runs", "e2e p50 ms", "p95 ms", "p99 ms", "p50/N ms", "mean/N ms", "load"],
        [[r["n"], r["runs"], r["latency_ms"]["p50"], r["latency_ms"]["p95"],
          r["latency_ms"]["p99"], r["latency_ms"]["p50"] / r["n"],
          r["latency_ms"]["mean"] / r["n"], f"{r['load'][0]:.1f}→{r['load'][1]:.1f}"]
         for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--brokers", help="use this broker instead of starting one")
    parser.add_argument("--json", action="store_true", help="print a RESULT line (bench.compare)")
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    rows = measure(args.brokers, args.runs)
    if args.json:
        emit({"system": "stepstream", "per_step": rows})
        return 0
    print(table(rows))
    if args.write:
        write_results("Per-step overhead (no-op steps, sequential runs)",
                      f"python -m bench.step_overhead --runs {args.runs} --write", table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
