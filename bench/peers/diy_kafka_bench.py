"""Roll your own on Kafka, and the broker's floor.

The baseline: a chain of topics ``s0 → s1 → … → done`` with one confluent-kafka
consumer (its own consumer group) per step. A step consumes a message, runs the step
body, produces to the next topic, waits for the broker's acknowledgement and only then
stores its offset (commits every 500 ms), so a killed worker's message is consumed
again by a survivor: at-least-once, like stepstream. Worker processes run one thread
per step; start more processes to scale out (the groups split the partitions).

The floor: a produce→consume hop on the same broker with a bare producer and consumer
(``fetch.wait.max.ms`` 5 and 1), and a produce→acknowledgement round trip.

Run by ``bench/.venvs/diy/bin/python -m bench.peers.diy_kafka_bench --brokers …``
(``python -m bench.compare`` does); prints one ``RESULT {json}`` line.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from bench.measure import (
    Beacons,
    CpuMeter,
    beacon,
    closed_loop,
    emit,
    loadavg,
    log,
    recovery,
    summarize,
)
from bench.peers.common import arguments, processes, runs_for, spawn, versions

PARTITIONS = 4
FETCH_WAIT_MS = 5  # stepstream's STEPSTREAM_FETCH_MAX_WAIT_MS, for the same broker


def consumer(brokers: str, group: str, fetch_wait_ms: int = FETCH_WAIT_MS) -> Consumer:
    return Consumer({"bootstrap.servers": brokers, "group.id": group,
                     "auto.offset.reset": "earliest", "fetch.wait.max.ms": fetch_wait_ms,
                     "enable.auto.commit": True, "auto.commit.interval.ms": 500,
                     "enable.auto.offset.store": False, "session.timeout.ms": 6000,
                     "heartbeat.interval.ms": 1000})


def producer(brokers: str) -> Producer:
    return Producer({"bootstrap.servers": brokers, "acks": "all", "linger.ms": 0})


def assigned_consumer(brokers: str, topic: str, from_end: bool,
                      fetch_wait_ms: int = 1) -> Consumer:
    """A consumer of every partition of ``topic``, assigned by hand (no group to join),
    from the start or from the current end."""
    reader = Consumer({"bootstrap.servers": brokers, "group.id": uuid.uuid4().hex,
                       "fetch.wait.max.ms": fetch_wait_ms, "enable.auto.commit": False})
    partitions = reader.list_topics(topic, timeout=30).topics[topic].partitions
    reader.assign([TopicPartition(topic, p, reader.get_watermark_offsets(
        TopicPartition(topic, p), timeout=30)[1] if from_end else OFFSET_BEGINNING)
        for p in partitions])
    return reader


def create_topics(brokers: str, names: list[str], partitions: int = PARTITIONS) -> None:
    """Create the topics before any client asks for them (Tansu would auto-create them)."""
    admin = AdminClient({"bootstrap.servers": brokers})
    for future in admin.create_topics([NewTopic(n, partitions, 1) for n in names]).values():
        try:
            future.result(30)
        except KafkaException as exc:
            if "already exists" not in str(exc).lower():
                raise


def chain_topics(prefix: str, stages: int) -> list[str]:
    return [f"{prefix}.s{i}" for i in range(stages)] + [f"{prefix}.done"]


# --- worker process -------------------------------------------------------------------


def run_worker(brokers: str, prefix: str, stages: int, pause_ms: int, beacon_port: int,
               ready_path: str) -> None:
    """One thread (one consumer, one group) per step; SIGTERM stops it cleanly."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    out = producer(brokers)
    topics = chain_topics(prefix, stages)
    assigned = [threading.Event() for _ in range(stages)]

    def body(i: int) -> None:
        if beacon_port:
            beacon(beacon_port, i=i, pid=os.getpid(), phase="start")
        if pause_ms:
            time.sleep(pause_ms / 1000)
        if beacon_port:
            beacon(beacon_port, i=i, pid=os.getpid(), phase="done")

    def stage(i: int) -> None:
        source = consumer(brokers, f"{prefix}.g{i}")
        source.subscribe([topics[i]])
        try:
            while not stopping.is_set():
                message = source.poll(0.1)
                if source.assignment():
                    assigned[i].set()
                if message is None or message.error():
                    continue
                body(i)
                acked = threading.Event()
                out.produce(topics[i + 1], key=message.key(), value=message.value(),
                            on_delivery=lambda err, msg, acked=acked: acked.set())
                acked.wait()
                source.store_offsets(message)
        finally:
            source.close()

    def serve_deliveries() -> None:
        while not stopping.is_set():
            out.poll(0.05)

    threads = [threading.Thread(target=stage, args=(i,), daemon=True) for i in range(stages)]
    threads.append(threading.Thread(target=serve_deliveries, daemon=True))
    for thread in threads:
        thread.start()
    for event in assigned:
        while not event.wait(0.2) and not stopping.is_set():
            pass
    with open(ready_path, "w") as ready:
        ready.write(str(os.getpid()))
    for thread in threads:
        thread.join()
    out.flush(5)


# --- the benchmark side ---------------------------------------------------------------


class Chain:
    """Runs into ``s0``, completions out of ``done``, for ``bench.measure.closed_loop``."""

    def __init__(self, brokers: str, prefix: str) -> None:
        self.prefix = prefix
        self.out = producer(brokers)
        self.done = assigned_consumer(brokers, f"{prefix}.done", from_end=False)

    def submit(self) -> str:
        run_id = uuid.uuid4().hex
        self.out.produce(f"{self.prefix}.s0", key=run_id.encode(),
                         value=json.dumps({"run": run_id}).encode())
        self.out.flush(10)
        return run_id

    def finished(self, timeout: float) -> list[str]:
        first = self.done.poll(timeout)  # consume(n, t) would wait for n messages or t
        batch = [first, *self.done.consume(500, 0)] if first is not None else []
        return [json.loads(m.value())["run"] for m in batch if not m.error()]

    def close(self) -> None:
        self.done.close()
        self.out.flush(5)


def start_workers(count: int, brokers: str, prefix: str, stages: int, log_dir: str,
                  started: list[Any], pause_ms: int = 0, beacon_port: int = 0) -> list[Any]:
    """Start ``count`` worker processes for the chain and wait until every step is assigned."""
    ready_dir = tempfile.mkdtemp(prefix="diy-ready-")
    workers = []
    for k in range(count):
        workers.append(spawn(["-m", "bench.peers.diy_kafka_bench", "worker", brokers, prefix,
                              str(stages), str(pause_ms), str(beacon_port),
                              os.path.join(ready_dir, str(k))], log_dir, f"{prefix}-w{k}"))
        started.append(workers[-1])
    deadline = time.monotonic() + 120
    while not all(os.path.exists(os.path.join(ready_dir, str(k))) for k in range(count)):
        if any(w.poll() is not None for w in workers):
            raise RuntimeError("a DIY worker exited before it was ready")
        if time.monotonic() > deadline:
            raise TimeoutError("DIY workers not ready after 120 s")
        time.sleep(0.1)
    time.sleep(2.0 if count > 1 else 0.5)  # let the groups settle after the last join
    return workers


def measure(brokers: str, stages: int, workers: int, log_dir: str, broker_pids: list[int],
            plan: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[dict[str, Any]]:
    """A chain of ``stages``, ``workers`` processes, a closed loop per ``(options, labels)``."""
    prefix = f"diy{uuid.uuid4().hex[:6]}"
    create_topics(brokers, chain_topics(prefix, stages))
    rows = []
    with processes() as started:
        procs = start_workers(workers, brokers, prefix, stages, log_dir, started)
        chain = Chain(brokers, prefix)
        try:
            for loop, labels in plan:
                meter = CpuMeter({"workers": [p.pid for p in procs],
                                  "broker": broker_pids})
                result = closed_loop(chain.submit, chain.finished, **loop)
                rows.append({**labels, "cpu_cores": meter.cores(), **result})
        finally:
            chain.close()
    return rows


def measure_recovery(brokers: str, log_dir: str, timeout: float, stages: int = 30,
                     pause_ms: int = 100) -> dict[str, Any]:
    prefix = f"diyrec{uuid.uuid4().hex[:6]}"
    create_topics(brokers, chain_topics(prefix, stages))
    beacons = Beacons()
    with processes() as started:
        procs = start_workers(2, brokers, prefix, stages, log_dir, started, pause_ms,
                              beacons.port)
        by_pid = {p.pid: p for p in procs}
        chain = Chain(brokers, prefix)
        try:
            chain.submit()

            def kill(pid: int) -> None:
                by_pid[pid].kill()
                by_pid[pid].wait()

            result = recovery(beacons.next, kill, mid_step=True, timeout=timeout)
        finally:
            chain.close()
            beacons.close()
    return {**result, "step_ms": pause_ms, "session_timeout_s": 8.0}


def measure_floor(brokers: str, samples: int) -> dict[str, Any]:
    """One hop (produce → a consumer has it) and the produce → ack round trip."""
    topic = f"floor{uuid.uuid4().hex[:6]}"
    create_topics(brokers, [topic], partitions=1)
    out = producer(brokers)
    result: dict[str, Any] = {"load": [loadavg()]}
    ack = []
    for _ in range(samples):
        t0 = time.perf_counter()
        out.produce(topic, value=b"ack")
        out.flush(10)
        ack.append((time.perf_counter() - t0) * 1000)
    result["produce_ack_ms"] = summarize(ack)
    for wait_ms in (5, 1):
        source = assigned_consumer(brokers, topic, from_end=True, fetch_wait_ms=wait_ms)
        hops = []
        for i in range(samples):
            marker = f"{wait_ms}:{i}".encode()
            t0 = time.perf_counter()
            out.produce(topic, value=marker)
            out.poll(0)
            while True:
                message = source.poll(1.0)
                if message is not None and not message.error() and message.value() == marker:
                    break
            hops.append((time.perf_counter() - t0) * 1000)
        source.close()
        result[f"hop_ms_fetch_wait_{wait_ms}"] = summarize(hops)
    out.flush(5)
    result["load"].append(loadavg())
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "worker":
        brokers, prefix, stages, pause, port, ready = argv[1:7]
        run_worker(brokers, prefix, int(stages), int(pause), int(port), ready)
        return 0
    args = arguments(__doc__, argv)
    out: dict[str, Any] = {"system": "diy-kafka",
                           "versions": versions("confluent-kafka")}
    sections: dict[str, Callable[[], Any]] = {
        "floor": lambda: measure_floor(args.brokers, 200 if args.runs >= 20 else 100),
        "per_step": lambda: [
            row for n in args.steps for row in measure(
                args.brokers, n, 1, args.log_dir, args.broker_pid,
                [({"in_flight": 1, "runs": runs_for(n, args.runs), "warmup": 2}, {"n": n})])],
        # Fresh topics for every window: Tansu's memory storage slows down as a topic
        # grows (measured: 440 → 10 runs/s over five windows on the same topics).
        "throughput": lambda: [
            row for w in args.workers for k in args.in_flight for row in measure(
                args.brokers, 3, w, args.log_dir, args.broker_pid,
                [({"in_flight": k, "seconds": args.seconds, "warmup": k},
                  {"workers": w, "steps": 3})])],
        "recovery": lambda: measure_recovery(args.brokers, args.log_dir, args.recovery_timeout),
    }
    for name in args.sections:
        if name in sections:
            out[name] = sections[name]()
            log(f"diy-kafka {name}: {json.dumps(out[name])[:300]}")
    emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
