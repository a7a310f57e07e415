"""Shared by the stepstream benchmarks: a dev broker and workers, and runs timed end to end.

Completion is observed the way a user would: the ``run.completed`` record on the
history topic, read by a plain confluent-kafka consumer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from bench.kafka_broker import KafkaBroker
from bench.measure import Reports, closed_loop, emit, exit_on_sigterm, machine
from schemas.codec import default_codec
from schemas.messages import HistoryRecord
from stepstream import Stepstream
from stepstream.devservices import DevBroker, DevRedis, WorkerProcess, forget_namespace
from stepstream.events import make_event, run_id_for
from stepstream.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 4
BROKERS = {"tansu": "dev broker Tansu (memory storage)",
           "kafka": KafkaBroker().description}
"""What ``--broker`` starts, as the results name it."""
_FINAL_KINDS = {"run.completed", "run.failed", "run.cancelled"}


@dataclass
class Cluster:
    """A namespace on a broker, and the worker processes serving it."""

    settings: Settings
    module: str
    env: dict[str, str]
    stack: contextlib.ExitStack
    workers: list[WorkerProcess] = field(default_factory=list)
    broker: DevBroker | KafkaBroker | None = None
    static: bool = False
    """Workers are static group members (``STEPSTREAM_INSTANCE_ID``), as a StatefulSet's
    pods would be."""

    def pids(self) -> list[int]:
        return [w.process.pid for w in self.workers if w.process is not None]

    def broker_pids(self) -> list[int]:
        return self.broker.pids if self.broker else []

    def add_workers(self, count: int = 1, *, ready_timeout: float = 60.0) -> Cluster:
        """Start ``count`` more workers and wait until they own partitions."""
        new = [self._start(len(self.workers) + i) for i in range(count)]
        self.workers += new
        for worker in new:
            worker.wait_ready(ready_timeout)
        if len(self.workers) > 1:
            time.sleep(2.0)  # let the group settle: readiness comes before the last rebalance
        return self

    def restart(self, pid: int) -> WorkerProcess:
        """Start the worker that ran as ``pid`` again, under its name, as a supervisor
        (Kubernetes, systemd) does once it has died; it is not waited for."""
        index = next(i for i, w in enumerate(self.workers)
                     if w.process is not None and w.process.pid == pid)
        self.workers[index] = self._start(index)
        return self.workers[index]

    def _start(self, index: int) -> WorkerProcess:
        s, log_dir = self.settings, os.environ.get("BENCH_LOG_DIR")
        name = f"{s.namespace}-worker{index}-{time.monotonic_ns()}.log"
        worker = WorkerProcess(self.module, cwd=str(ROOT), env={
            "STEPSTREAM_BROKERS": s.brokers, "STEPSTREAM_REDIS_URL": s.redis_url,
            "STEPSTREAM_NAMESPACE": s.namespace, "STEPSTREAM_PARTITIONS": str(s.partitions),
            "STEPSTREAM_INSTANCE_ID": f"worker-{index}" if self.static else "",
            **self.env}, log_path=Path(log_dir, name) if log_dir else None)
        self.stack.callback(worker.stop)  # registered before start: stopped by pid
        return worker.start()


def start_broker(kind: str) -> DevBroker | KafkaBroker:
    """A broker of ``kind`` (``BROKERS``), started; its log in ``BENCH_LOG_DIR`` if set."""
    log_dir = os.environ.get("BENCH_LOG_DIR")
    log = Path(log_dir, f"{kind}-{time.monotonic_ns()}.log") if log_dir else None
    return (KafkaBroker(log_path=log) if kind == "kafka" else DevBroker(log_path=log)).start()


@contextlib.contextmanager
def shared_broker(kind: str, brokers: str | None) -> Iterator[str | None]:
    """The bootstrap address for a benchmark's clusters: ``brokers`` when given; for
    Kafka one node for all of them (a JVM takes seconds to start); for the dev broker
    None, so each cluster starts its own as before."""
    if brokers is not None or kind == "tansu":
        yield brokers
        return
    broker = start_broker(kind)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@contextlib.contextmanager
def running_engine(module: str, *, workers: int = 1, brokers: str | None = None,
                   partitions: int = PARTITIONS, static: bool = False,
                   **env: str) -> Iterator[Cluster]:
    """``workers`` worker processes running ``module`` in a fresh namespace.

    On ``brokers`` when given, else on a dev broker of its own (stopped afterwards).
    Set ``BENCH_LOG_DIR`` to keep the workers' logs.
    """
    with contextlib.ExitStack() as stack:
        broker = None
        if brokers is None:
            broker = start_broker("tansu")
            stack.callback(broker.stop)
            brokers = broker.bootstrap
        redis = DevRedis().start(ROOT / ".stepstream" / "bench")
        stack.callback(redis.stop)
        settings = Settings(brokers=brokers, redis_url=redis.url,
                            namespace=f"bench{uuid.uuid4().hex[:6]}", partitions=partitions)
        # Last out: the namespace's read model and local stores (a run of 200,000 left
        # over a GB in the machine's Redis).
        stack.callback(shutil.rmtree, ROOT / ".stepstream" / settings.namespace, True)
        stack.callback(forget_namespace, redis.url, settings.namespace)
        yield Cluster(settings, module, env, stack, broker=broker,
                      static=static).add_workers(workers)


class History:
    """A consumer of the history topic from its end: what completes from now on."""

    def __init__(self, settings: Settings) -> None:
        self.codec = default_codec()
        topic = settings.topic("history")
        self.consumer = Consumer({"bootstrap.servers": settings.brokers,
                                  "group.id": uuid.uuid4().hex, "fetch.wait.max.ms": 1,
                                  "enable.auto.commit": False,
                                  # what a user sees: committed records only
                                  "isolation.level": "read_committed"})
        # Assigned by hand at the current end offsets: no consumer group to join.
        partitions = self.consumer.list_topics(topic, timeout=30).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, self.consumer.get_watermark_offsets(
            TopicPartition(topic, p), timeout=30)[1]) for p in partitions])

    def records(self, timeout: float) -> list[HistoryRecord]:
        """The records that have arrived, waiting at most ``timeout`` seconds for the first."""
        first = self.consumer.poll(timeout)  # consume(n, t) would wait for n messages or t
        batch = [first, *self.consumer.consume(500, 0)] if first is not None else []
        return [self.codec.decode_as(m.value(), HistoryRecord) for m in batch if not m.error()]

    def finished(self, timeout: float) -> list[str]:
        """Run ids that finished within ``timeout``; a run that did not complete raises."""
        done = []
        for record in self.records(timeout):
            if record.kind in _FINAL_KINDS:
                if record.kind != "run.completed":
                    raise RuntimeError(f"benchmark run ended {record.kind}: {record.error}")
                done.append(record.run_id)
        return done

    def wait_for(self, kind: str, count: int, timeout: float) -> None:
        """Until ``count`` records of ``kind`` have arrived (``TimeoutError`` after
        ``timeout`` seconds)."""
        seen, deadline = 0, time.monotonic() + timeout
        while seen < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{seen} of {count} {kind} after {timeout}s")
            seen += sum(r.kind == kind for r in self.records(0.5))

    def close(self) -> None:
        self.consumer.close()


def produce_events(settings: Settings, name: str, tag: str, count: int,
            data: dict[str, Any] | None = None) -> None:
    """``count`` events ``name`` with ``data.order`` 0..count-1 (and ``data``), as fast as
    the broker takes them (any Kafka client could write them)."""
    codec = default_codec()
    producer = Producer({"bootstrap.servers": settings.brokers, "linger.ms": 5,
                         "enable.idempotence": True})
    topic = settings.topic("events")
    for i in range(count):
        event = make_event(name, {**(data or {}), "order": i}, id=f"{tag}-{name}-{i}",
                           ts=int(time.time() * 1000), limit=settings.max_payload_bytes)
        while True:
            try:
                producer.produce(topic, key=event.id.encode(), value=codec.encode(event))
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60) > 0:
        raise TimeoutError("events not acknowledged")


def message_counts(settings: Settings) -> dict[str, int]:
    """Messages written so far to each of the namespace's topics (sum of end offsets)."""
    from topics.catalog import catalog

    reader = Consumer({"bootstrap.servers": settings.brokers, "group.id": uuid.uuid4().hex})
    try:
        counts = {}
        prefix = f"{settings.namespace}."
        for spec in catalog(settings):
            if not spec.name.startswith(prefix):
                continue  # changelogs: not a hop
            counts[spec.name[len(prefix):]] = sum(
                reader.get_watermark_offsets(TopicPartition(spec.name, p), timeout=10)[1]
                for p in range(spec.partitions))
        return counts
    finally:
        reader.close()


def breakdown(settings: Settings, function_id: str) -> dict[int, dict[str, float]]:
    """Where the time of completed runs went, by number of steps, from the history topic.

    Median milliseconds, per run, from ``run.started`` being written (by the orchestrator)
    to the first step's end (on the executor), from the first step's end to the last's
    (the executor's work), and from the last step's end to ``run.completed`` being written
    (the orchestrator catching up). Timestamps: the history messages' create times and the
    steps' ``ended_at``, all from the worker's clock.
    """
    import statistics

    reader = Consumer({"bootstrap.servers": settings.brokers, "group.id": uuid.uuid4().hex,
                       "enable.auto.commit": False, "fetch.wait.max.ms": 1,
                       "isolation.level": "read_committed"})
    topic = settings.topic("history")
    codec = default_codec()
    runs: dict[str, list[tuple[int, HistoryRecord]]] = {}
    try:
        parts = reader.list_topics(topic, timeout=30).topics[topic].partitions
        ends = {p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in parts}
        reader.assign([TopicPartition(topic, p, 0) for p in parts])
        left = {p: end for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + 60
        while left and time.monotonic() < deadline:
            message = reader.poll(0.5)
            if message is None or message.error():
                continue
            if message.offset() + 1 >= left.get(message.partition(), 0):
                left.pop(message.partition(), None)
            record = codec.decode_as(message.value(), HistoryRecord)
            if record.function_id == function_id:
                runs.setdefault(record.run_id, []).append((message.timestamp()[1], record))
    finally:
        reader.close()
    parts_by_n: dict[int, list[tuple[float, float, float]]] = {}
    for items in runs.values():
        started = [ts for ts, r in items if r.kind == "run.started"]
        done = [ts for ts, r in items if r.kind == "run.completed"]
        step_ends = sorted({r.step_id: r.ended_at for _, r in items
                            if r.kind == "step.completed" and r.ended_at}.values())
        if started and done and step_ends:
            parts_by_n.setdefault(len(step_ends), []).append(
                (step_ends[0] - started[0], step_ends[-1] - step_ends[0],
                 done[0] - step_ends[-1]))
    return {n: {"to_first_step": statistics.median(x[0] for x in rows),
                "executor_steps": statistics.median(x[1] for x in rows),
                "orchestrator_tail": statistics.median(x[2] for x in rows), "runs": len(rows)}
            for n, rows in parts_by_n.items()}


def run_loop(settings: Settings, function_id: str, event: str, data: dict[str, Any], *,
             in_flight: int = 1, runs: int | None = None, seconds: float | None = None,
             warmup: int = 2) -> dict[str, Any]:
    """``bench.measure.closed_loop`` over stepstream: an event in, ``run.completed`` out."""
    client = Stepstream("bench", settings=settings)
    history = History(settings)
    try:
        return closed_loop(lambda: run_id_for(function_id, client.send(event, data)),
                           history.finished, in_flight=in_flight, runs=runs,
                           seconds=seconds, warmup=warmup)
    finally:
        history.close()
        client.close()


def step_reports(history: History, function_id: str) -> Reports:
    """``recovery`` reports from the history topic: each ``step.completed`` of a chain."""
    pending: list[tuple[float, dict[str, Any]]] = []

    def reports(timeout: float) -> tuple[float, dict[str, Any]] | None:
        deadline = time.perf_counter() + timeout
        while not pending and time.perf_counter() < deadline:
            now_records = history.records(max(0.0, deadline - time.perf_counter()))
            at = time.perf_counter()
            pending.extend((at, json.loads(r.output_json or "{}")) for r in now_records
                           if r.kind == "step.completed" and r.function_id == function_id)
        return pending.pop(0) if pending else None

    return reports


def write_results(title: str, command: str, table: str, broker: str = "tansu") -> None:
    """Append a section to bench/RESULTS.md with the command, the machine and the broker."""
    m = machine()
    header = (f"\n## {title}, {datetime.now(UTC):%Y-%m-%d}\n\n"
              f"Command: `{command}`  \n"
              f"Machine: {m['arch']}, {m['cpu']}, {m['cores']} cores, Python {m['python']}; "
              f"{BROKERS[broker]}.\n\n")
    with open(ROOT / "bench" / "RESULTS.md", "a") as out:
        out.write(header + table + "\n")


def runs_main(argv: list[str] | None, *, doc: str | None, key: str, title: str, module: str,
              measure: Callable[[str | None, int], list[dict[str, Any]]],
              table: Callable[[list[dict[str, Any]]], str]) -> int:
    """The command line of a benchmark of sequential runs (``--runs``): prints its table,
    a RESULT line for bench.compare (``--json``, under ``key``), or appends the table to
    bench/RESULTS.md (``--write``)."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--brokers", help="use this broker instead of starting one")
    add_broker_option(parser)
    parser.add_argument("--json", action="store_true", help="print a RESULT line (bench.compare)")
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    with shared_broker(args.broker, args.brokers) as brokers:
        rows = measure(brokers, args.runs)
    if args.json:
        emit({"system": "stepstream", key: rows})
        return 0
    print(table(rows))
    if args.write:
        write_results(title, f"python -m {module} --runs {args.runs} --broker {args.broker} "
                      "--write", table(rows), broker=args.broker)
    return 0


def add_broker_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", choices=sorted(BROKERS), default="tansu",
                        help="the broker to start: the dev broker (default) or Apache Kafka "
                        "(bench/kafka_broker.py: Java and Maven, or STEPSTREAM_KAFKA_LIBS)")
