"""Per-step overhead of stepstream on the dev broker.

For N no-op steps (N = 1, 10, 50), sends runs one at a time and measures from the
event being produced to ``run.completed`` arriving on the history topic.

    python -m bench.step_overhead [--runs 30] [--write]
"""

from __future__ import annotations

import argparse
import statistics
import sys

from bench.harness import percentile, running_engine, time_runs, write_results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    rows = ["| steps N | runs | e2e p50 ms | p95 ms | p99 ms | p50/N ms | mean/N ms |",
            "|---|---|---|---|---|---|---|"]
    with running_engine("bench.functions") as settings:
        for n in (1, 10, 50):
            took = time_runs(settings, "noop-steps", "bench/noop", {"n": n}, args.runs)
            p50, p95, p99 = (percentile(took, q) for q in (0.5, 0.95, 0.99))
            rows.append(f"| {n} | {args.runs} | {p50:.1f} | {p95:.1f} | {p99:.1f} | "
                        f"{p50 / n:.2f} | {statistics.mean(took) / n:.2f} |")
            print(rows[-1], flush=True)
    if args.write:
        write_results("Per-step overhead (no-op steps, sequential runs)",
                      f"python -m bench.step_overhead --runs {args.runs} --write",
                      "\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
