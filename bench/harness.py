"""Shared by the benchmarks: a dev broker and worker, and timing runs end to end."""

from __future__ import annotations

import contextlib
import platform
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from schemas.codec import default_codec
from schemas.messages import HistoryRecord
from stepstream import Stepstream
from stepstream.devservices import DevBroker, DevRedis, WorkerProcess
from stepstream.events import run_id_for
from stepstream.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
_FINAL_KINDS = {"run.completed", "run.failed", "run.cancelled"}


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextlib.contextmanager
def running_engine(module: str, **env: str) -> Iterator[Settings]:
    """A fresh dev broker and one worker running ``module``."""
    with DevBroker() as broker:
        redis = DevRedis().start(ROOT / ".stepstream" / "bench")
        settings = Settings(brokers=broker.bootstrap, redis_url=redis.url,
                            namespace=f"bench{uuid.uuid4().hex[:6]}", partitions=4)
        worker = WorkerProcess(module, cwd=str(ROOT), env={
            "STEPSTREAM_BROKERS": settings.brokers, "STEPSTREAM_REDIS_URL": settings.redis_url,
            "STEPSTREAM_NAMESPACE": settings.namespace, "STEPSTREAM_PARTITIONS": "4", **env})
        try:
            worker.start().wait_ready()
            yield settings
        finally:
            worker.stop()
            redis.stop()


def time_runs(settings: Settings, function_id: str, event: str, data: dict[str, Any],
              runs: int, warmup: int = 2) -> list[float]:
    """Milliseconds from producing each event to its ``run.completed`` on the history topic.

    Runs are sent one at a time, so this is latency, not throughput.
    """
    client = Stepstream("bench", settings=settings)
    watcher = Consumer({"bootstrap.servers": settings.brokers, "group.id": uuid.uuid4().hex,
                        "auto.offset.reset": "latest", "fetch.wait.max.ms": 1,
                        "enable.auto.commit": False})
    watcher.subscribe([settings.topic("history")])
    while not watcher.assignment():
        watcher.poll(0.1)
    codec, took = default_codec(), []
    try:
        for _ in range(runs + warmup):
            started = time.perf_counter()
            run_id = run_id_for(function_id, client.send(event, data))
            while True:
                message = watcher.poll(1.0)
                if message is None or message.error():
                    continue
                record = codec.decode_as(message.value(), HistoryRecord)
                if record.run_id == run_id and record.kind in _FINAL_KINDS:
                    if record.kind != "run.completed":
                        raise RuntimeError(f"benchmark run ended {record.kind}: {record.error}")
                    break
            took.append((time.perf_counter() - started) * 1000)
    finally:
        watcher.close()
        client.close()
    return took[warmup:]


def write_results(title: str, command: str, table: str) -> None:
    """Append a section to bench/RESULTS.md with the command and the machine."""
    header = (f"\n## {title}, {datetime.now(UTC):%Y-%m-%d}\n\n"
              f"Command: `{command}`  \n"
              f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
              f"2 cores, Python {platform.python_version()}; dev broker Tansu (memory "
              f"storage), one worker process.\n\n")
    with open(ROOT / "bench" / "RESULTS.md", "a") as out:
        out.write(header + table + "\n")
