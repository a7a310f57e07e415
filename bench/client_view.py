"""What a user sees: a run's latency from the event produced to its result in hand.

For N no-op steps (N = 1, 10, 50), sends runs one at a time with the SDK (confluent-kafka
underneath) and takes each run's result from a worker's HTTP API with
``GET /v1/runs/{id}?wait=30s``. Also reports how long after the run's end (its
``ended_at``, the orchestrator's clock) the answer reached the client: the read model's
and the wait's share.

    python -m bench.client_view [--runs 30] [--write] [--json] [--brokers HOST:PORT]
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from typing import Any

from bench.harness import Cluster, running_engine, runs_main
from bench.measure import closed_loop, format_table, log, summarize
from bench.step_overhead import STEPS, runs_of
from stepstream import Stepstream
from stepstream.events import run_id_for

FINAL = ("completed", "failed", "cancelled")


def measure(brokers: str | None, runs: int) -> list[dict[str, Any]]:
    with running_engine("bench.functions", brokers=brokers) as cluster:
        return measure_on(cluster, runs)


def measure_on(cluster: Cluster, runs: int) -> list[dict[str, Any]]:
    out = []
    for n in STEPS:
        row = api_loop(cluster, "noop-steps", "bench/noop", {"n": n}, runs=runs_of(n, runs))
        out.append({"n": n, **row})
        log(f"stepstream via the API N={n}: p50 {row['latency_ms']['p50']:.1f} ms, answer "
            f"{row['answer_after_end_ms'].get('p50', 0):.1f} ms after the run's end")
    return out


def api_loop(cluster: Cluster, function_id: str, event: str, data: dict[str, Any], *,
             runs: int, warmup: int = 2) -> dict[str, Any]:
    """``closed_loop`` with one run in flight, its end taken from ``?wait=``."""
    client = Stepstream("bench", settings=cluster.settings)
    url = cluster.workers[0].url
    waiting: list[str] = []
    after_end: list[float] = []

    def submit() -> str:
        waiting.append(run_id_for(function_id, client.send(event, data)))
        return waiting[-1]

    def finished(timeout: float) -> list[str]:
        done = []
        for run_id in list(waiting):
            with urllib.request.urlopen(f"{url}/v1/runs/{run_id}?wait={max(timeout, 1):.0f}s",
                                        timeout=timeout + 30) as reply:
                doc = json.load(reply)
            answered_ms = time.time() * 1000
            if doc["status"] in FINAL:
                waiting.remove(run_id)
                done.append(run_id)
                after_end.append(answered_ms - doc["ended_at"])
        return done

    try:
        result = closed_loop(submit, finished, in_flight=1, runs=runs, warmup=warmup)
    finally:
        client.close()
    return {**result, "answer_after_end_ms": summarize(after_end[warmup:])}


def table(rows: list[dict[str, Any]]) -> str:
    return format_table(
        ["steps N", "runs", "e2e p50 ms", "p95 ms", "p99 ms", "p50/N ms",
         "answer after the run's end p50 ms", "p95 ms", "load"],
        [[r["n"], r["runs"], r["latency_ms"]["p50"], r["latency_ms"]["p95"],
          r["latency_ms"]["p99"], r["latency_ms"]["p50"] / r["n"],
          r["answer_after_end_ms"].get("p50"), r["answer_after_end_ms"].get("p95"),
          f"{r['load'][0]:.1f}→{r['load'][1]:.1f}"] for r in rows])


def main(argv: list[str] | None = None) -> int:
    return runs_main(argv, doc=__doc__, key="per_step_api", module="bench.client_view",
                     title="Latency from the client's view (event sent, result through the API)",
                     measure=measure, table=table)


if __name__ == "__main__":
    sys.exit(main())
