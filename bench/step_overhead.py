"""Per-step overhead of stepstream on the dev broker.

For N no-op steps (N = 1, 10, 50), sends runs one at a time and measures from the
event being produced to ``run.completed`` arriving on the history topic.

    python -m bench.step_overhead [--runs 30] [--write] [--json] [--brokers HOST:PORT]
"""

from __future__ import annotations

import sys
from typing import Any

from bench.harness import (
    Cluster,
    breakdown,
    message_counts,
    run_loop,
    running_engine,
    runs_main,
)
from bench.measure import format_table, log

STEPS = (1, 10, 50)


def measure(brokers: str | None, runs: int) -> list[dict[str, Any]]:
    """One closed-loop measurement (one run in flight) per N, on one worker."""
    with running_engine("bench.functions", brokers=brokers) as cluster:
        return measure_on(cluster, runs)


def runs_of(n: int, runs: int) -> int:
    """Runs measured for N steps: half as many for the longest runs."""
    return max(5, runs if n < 50 else runs // 2)


def measure_on(cluster: Cluster, runs: int) -> list[dict[str, Any]]:
    out = []
    for n in STEPS:
        before = message_counts(cluster.settings)
        result = run_loop(cluster.settings, "noop-steps", "bench/noop", {"n": n},
                          runs=runs_of(n, runs), warmup=2)
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
    return runs_main(argv, doc=__doc__, key="per_step", module="bench.step_overhead",
                     title="Per-step overhead (no-op steps, sequential runs)",
                     measure=measure, table=table)


if __name__ == "__main__":
    sys.exit(main())
