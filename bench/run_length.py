"""Bytes a step costs in Kafka, early and late in a long run.

    python -m bench.run_length [--steps 2000] [--write]

One run of ``long-run`` (``bench/functions.py``: N steps in a row, each returning 1 KB) on
one worker; once it completes, every record the run wrote is read back from the
namespace's topics and changelogs, and the bytes (key and value) of the k-th record of
each kind are reported for k = 10, 1,000 and 2,000: the run state written with the k-th
step (runs changelog: a transaction writes a run's state once, whatever the steps it
carries), the step's saved result (its memo record), its outcome on the runs
topic and its ``step.completed`` on the history topic. Flat rows mean a step's cost does
not grow with the steps before it.
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from bench.harness import History, running_engine, write_results
from bench.measure import format_table, log
from schemas.codec import default_codec
from stepstream import Stepstream
from stepstream.events import run_id_for
from streams.run_records import RunRecords

POSITIONS = (10, 1000, 2000)


def records_of(brokers: str, topic: str, key_of: Any) -> list[tuple[bytes, int]]:
    """(key, bytes) of every record of ``topic`` whose key ``key_of`` accepts, in order
    (by partition: a run's records share one); tombstones left out."""
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": uuid.uuid4().hex,
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "max.partition.fetch.bytes": 50 * 1024 * 1024})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in parts}
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        found: list[tuple[bytes, int]] = []
        left = {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + 120
        while left and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                if message.error() is not None:
                    continue
                if message.offset() + 1 >= ends[message.partition()]:
                    left.discard(message.partition())
                key = message.key() or b""
                if key_of(key) and message.value() is not None:  # tombstones aside
                    found.append((key, len(key) + len(message.value())))
            for tp in consumer.position([TopicPartition(topic, p) for p in left]):
                if tp.offset >= ends[tp.partition]:
                    left.discard(tp.partition)
        return found
    finally:
        consumer.close()


def measure(steps: int) -> dict[str, Any]:
    with running_engine("bench.functions") as cluster:
        settings = cluster.settings
        history = History(settings)
        client = Stepstream("bench", settings=settings)
        started = time.perf_counter()
        run_id = run_id_for("long-run", client.send("bench/long", {"n": steps}))
        key = run_id.encode()
        while run_id not in history.finished(1.0):
            if time.perf_counter() - started > 900:
                raise TimeoutError("the long run did not complete")
        took = time.perf_counter() - started
        client.close()
        history.close()
        layout = RunRecords(default_codec())
        changelog = records_of(settings.brokers, f"{settings.namespace}-runs-changelog",
                               lambda k: layout.owner(k) == key)
        states = [size for k, size in changelog if k == key]
        memo = [size for k, size in changelog if k != key]
        outcomes = [size for _, size in records_of(settings.brokers, settings.topic("runs"),
                                                   lambda k: k == key)]
        completed = [size for _, size in records_of(
            settings.brokers, settings.topic("history"), lambda k: k == key)]
    return {"steps": steps, "seconds": round(took, 1), "state": states, "memo": memo,
            "runs": outcomes, "history": completed}


def at(sizes: list[int], position: int) -> int | None:
    return sizes[position - 1] if len(sizes) >= position else None


def table(result: dict[str, Any]) -> str:
    kinds = [("run state (runs changelog; one per transaction)", "state"),
             ("saved result (memo record)", "memo"), ("outcome (runs topic)", "runs"),
             ("history record", "history")]
    return format_table(
        ["record, bytes", *(f"#{p}" for p in POSITIONS), "largest", "records"],
        [[name, *(at(result[kind], p) for p in POSITIONS), max(result[kind], default=None),
          len(result[kind])] for name, kind in kinds])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--write", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    result = measure(args.steps)
    log(f"{args.steps} steps in {result['seconds']} s")
    print(table(result))
    if args.write:
        write_results(f"Bytes per step in a run of {args.steps} steps of 1 KB (one worker)",
                      f"python -m bench.run_length --steps {args.steps}", table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
