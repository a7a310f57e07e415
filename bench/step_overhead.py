"""Per-step overhead of stepstream on the dev broker.

Starts a dev broker and one worker, then for N no-op steps (N = 1, 10, 50) sends
runs one at a time and measures from the event being produced to the
``run.completed`` record arriving on the history topic (what a watcher sees).

    python -m bench.step_overhead [--runs 30] [--write]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer

from schemas.codec import default_codec
from schemas.messages import HistoryRecord
from stepstream import Stepstream
from stepstream.devservices import DevBroker, DevRedis, WorkerProcess
from stepstream.events import run_id_for
from stepstream.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(settings: Settings, n: int, runs: int) -> list[float]:
    """End-to-end milliseconds of ``runs`` sequential runs of ``n`` no-op steps."""
    client = Stepstream("bench", settings=settings)
    watcher = Consumer({"bootstrap.servers": settings.brokers, "group.id": uuid.uuid4().hex,
                        "auto.offset.reset": "latest", "fetch.wait.max.ms": 1,
                        "enable.auto.commit": False})
    watcher.subscribe([settings.topic("history")])
    while not watcher.assignment():
        watcher.poll(0.1)
    codec, took = default_codec(), []
    for _ in range(runs + 2):  # two warm-up runs
        started = time.perf_counter()
        run_id = run_id_for("noop-steps", client.send("bench/noop", {"n": n}))
        while True:
            message = watcher.poll(1.0)
            if message is None or message.error():
                continue
            record = codec.decode_as(message.value(), HistoryRecord)
            if record.run_id == run_id and record.kind == "run.completed":
                break
        took.append((time.perf_counter() - started) * 1000)
    watcher.close()
    client.close()
    return took[2:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    with DevBroker() as broker:
        redis = DevRedis().start(ROOT / ".stepstream" / "bench")
        settings = Settings(brokers=broker.bootstrap, redis_url=redis.url,
                            namespace=f"bench{uuid.uuid4().hex[:6]}", partitions=4)
        worker = WorkerProcess("bench.functions", cwd=str(ROOT), env={
            "STEPSTREAM_BROKERS": settings.brokers, "STEPSTREAM_REDIS_URL": settings.redis_url,
            "STEPSTREAM_NAMESPACE": settings.namespace, "STEPSTREAM_PARTITIONS": "4"})
        try:
            worker.start().wait_ready()
            rows = []
            for n in (1, 10, 50):
                took = measure(settings, n, args.runs)
                p50, p95, p99 = (percentile(took, q) for q in (0.5, 0.95, 0.99))
                rows.append(f"| {n} | {args.runs} | {p50:.1f} | {p95:.1f} | {p99:.1f} | "
                            f"{p50 / n:.2f} | {statistics.mean(took) / n:.2f} |")
                print(rows[-1], flush=True)
        finally:
            worker.stop()
            redis.stop()
    table = ("| steps N | runs | e2e p50 ms | p95 ms | p99 ms | p50/N ms | mean/N ms |\n"
             "|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    print(table)
    if args.write:
        header = (f"\n## Per-step overhead, {datetime.now(UTC):%Y-%m-%d}\n\n"
                  f"Command: `python -m bench.step_overhead --runs {args.runs} --write`  \n"
                  f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
                  f"Python {platform.python_version()}, dev broker Tansu (memory), "
                  f"one worker process.\n\n")
        with open(ROOT / "bench" / "RESULTS.md", "a") as out:
            out.write(header + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
