"""What costly CEL filters do to other runs: a chain's latency alone, and while events
whose filters map over 1,000-element lists keep arriving (one filter within the
expression budget, one nested over it: ``stepstream.expressions``).

    python -m bench.expressions [--runs 40] [--rate 20] [--write]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any

from bench.harness import Cluster, run_loop, running_engine, write_results
from bench.measure import exit_on_sigterm, format_table, log
from schemas.codec import default_codec
from stepstream.events import make_event

CHAIN = 10
ITEMS = 1000


def _background(cluster: Cluster, rate: float, stop: threading.Event) -> None:
    """``rate`` events a second whose filters map over ``ITEMS`` values, until ``stop``."""
    from confluent_kafka import Producer

    codec, settings = default_codec(), cluster.settings
    producer = Producer({"bootstrap.servers": settings.brokers, "linger.ms": 0})
    data, sent = {"xs": list(range(ITEMS))}, 0
    while not stop.wait(1 / rate):
        event = make_event("bench/items", data, id=None, ts=int(time.time() * 1000),
                           limit=settings.max_payload_bytes)
        producer.produce(settings.topic("events"), key=event.id.encode(),
                         value=codec.encode(event))
        producer.poll(0)
        sent += 1
    producer.flush(30)
    log(f"sent {sent} costly events")


def _failures(cluster: Cluster) -> float:
    """``stepstream_expression_failures_total`` summed over the cluster's workers."""
    import urllib.request

    total = 0.0
    for worker in cluster.workers:
        with urllib.request.urlopen(f"{worker.url}/metrics", timeout=10) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith("stepstream_expression_failures_total{"):
                    total += float(line.rsplit(" ", 1)[1])
    return total


def measure(runs: int, rate: float) -> list[dict[str, Any]]:
    rows = []
    with running_engine("bench.functions") as cluster:
        for label, loaded in (("alone", False), (f"{rate:g} costly events/s", True)):
            stop = threading.Event()
            thread = threading.Thread(target=_background, args=(cluster, rate, stop),
                                      daemon=True)
            if loaded:
                thread.start()
            try:
                result = run_loop(cluster.settings, "noop-steps", "bench/noop", {"n": CHAIN},
                                  runs=runs, warmup=2)
            finally:
                stop.set()
                if loaded:
                    thread.join()
            rows.append({"while": label, "failures": _failures(cluster), **result})
            log(f"chain of {CHAIN} {label}: p50 {result['latency_ms']['p50']:.1f} ms, "
                f"p99 {result['latency_ms']['p99']:.1f} ms")
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    return format_table(
        ["chain of 10 steps", "runs", "p50 ms", "p95 ms", "p99 ms", "over-budget filters "
         "counted", "load"],
        [[r["while"], r["runs"], r["latency_ms"]["p50"], r["latency_ms"]["p95"],
          r["latency_ms"]["p99"], r["failures"], f"{r['load'][0]:.1f}→{r['load'][1]:.1f}"]
         for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    rows = measure(args.runs, args.rate)
    print(table(rows))
    if args.write:
        write_results("A chain beside costly CEL filters (one worker)",
                      f"python -m bench.expressions --runs {args.runs} --rate {args.rate:g} "
                      "--write", table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
