"""Waiting for runs and reading topics, for the integration tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, Producer

from schemas.codec import default_codec
from schemas.messages import RunState
from stepstream.settings import Settings
from streams.run_records import RunRecords
from tests.conftest import ROOT, settings_env

FINAL = {"completed", "failed", "cancelled"}


def get_json(url: str, timeout: float = 5.0) -> Any:
    """GET ``url`` and decode its JSON; None on 404."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return json.load(reply)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def cli(settings: Settings, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``stepstream ARGS`` in a subprocess, against the worker API at ``url``."""
    env = {**os.environ, **settings_env(settings), "STEPSTREAM_API_URL": url, "COLUMNS": "220"}
    return subprocess.run([sys.executable, "-m", "stepstream.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def post(url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """POST ``body`` as JSON to ``url``: the status and the decoded answer."""
    request = urllib.request.Request(url, data=json.dumps(body or {}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def wait_for(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met after {timeout}s")
        time.sleep(0.05)


def wait_for_run(base_url: str, run_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """The run document once the run reached a final status."""
    def finished() -> Any:
        run = get_json(f"{base_url}/v1/runs/{run_id}")
        return run if run and run["status"] in FINAL else None

    return wait_for(finished, timeout, f"run {run_id} finished")  # type: ignore[no-any-return]


def produce_raw(brokers: str, topic: str, value: bytes, key: bytes | None = None, *,
                partition: int | None = None) -> None:
    """Produce bytes as any Kafka client would (to ``partition``, if given)."""
    producer = Producer({"bootstrap.servers": brokers})
    producer.produce(topic, value=value, key=key,
                     **({} if partition is None else {"partition": partition}))
    assert producer.flush(10) == 0


def read_topic(brokers: str, topic: str, count: int, timeout: float = 30.0) -> list[Any]:
    """The first ``count`` messages of ``topic`` (all partitions, from the start)."""
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": f"test-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 10, "isolation.level": "read_committed"})
    consumer.subscribe([topic])
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < count and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                messages.append(message)
    finally:
        consumer.close()
    if len(messages) < count:
        raise TimeoutError(f"{topic}: {len(messages)} of {count} messages after {timeout}s")
    return messages


def read_all(brokers: str, topic: str, timeout: float = 30.0) -> list[Any]:
    """Every committed message of ``topic`` present now (up to each partition's end)."""
    from confluent_kafka import TopicPartition

    consumer = Consumer({"bootstrap.servers": brokers, "group.id": f"test-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10,
                         "isolation.level": "read_committed"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        marks = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                 for p in partitions}
        ends = {p: high for p, (low, high) in marks.items() if high > low}  # not empty
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        messages: list[Any] = []
        deadline = time.monotonic() + timeout

        def behind() -> bool:
            # The position passes transaction markers, which are not messages.
            at = {tp.partition: tp.offset for tp in consumer.position(
                [TopicPartition(topic, p) for p in ends])}
            return any(at[p] < ends[p] for p in ends)

        while behind():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not read to {ends} after {timeout}s")
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                messages.append(message)
        # The dev broker sometimes reports a high watermark one short: read on until quiet.
        while (message := consumer.poll(0.5)) is not None:
            if message.error() is None:
                messages.append(message)
        return messages
    finally:
        consumer.close()


def held_partitions(brokers: str, topic: str, timeout: float = 20.0
                    ) -> dict[int, tuple[int, int]]:
    """Partitions whose stable end (what a read_committed reader can reach) is short of
    their end: partition -> (stable end, end; -1: no end reached in ``timeout``). An open
    transaction holds the first back; ``read_all`` does not read past it."""
    from confluent_kafka import TopicPartition

    consumer = Consumer({"bootstrap.servers": brokers, "group.id": f"test-{uuid.uuid4().hex}",
                         "isolation.level": "read_committed", "enable.partition.eof": True})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        stable: dict[int, int] = {}  # where a read_committed reader reports its end
        deadline = time.monotonic() + timeout
        while stable.keys() != set(partitions) and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                error = message.error()
                if error is not None and error.name().endswith("PARTITION_EOF"):
                    stable[message.partition()] = message.offset()
    finally:
        consumer.close()
    return {p: (stable.get(p, -1), ends[p]) for p in partitions if stable.get(p, -1) < ends[p]}


def run_states(messages: Iterable[Any]) -> list[tuple[Any, RunState]]:
    """The run states a runs changelog holds, in its order, each with its memo as it was
    then (``streams.run_records``: a state's memo records come before it), and the
    message that carried it."""
    layout, parts = RunRecords(default_codec()), dict[bytes, bytes]()
    states = []
    for message in messages:
        key, value = message.key() or b"", message.value()
        if layout.owner(key) != key:
            if value is None:
                parts.pop(key, None)
            else:
                parts[key] = value
        elif value is not None:
            states.append((message, layout.value(key, value, parts.get)))
    return states


def scrape(url: str) -> dict[str, float]:
    """Every sample of the exposition, keyed by name and labels as written."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            samples[series] = float(value)
    return samples


def sample(samples: dict[str, float], name: str, **labels: str) -> float | None:
    """The sample of ``name`` whose labels include ``labels``."""
    for series, value in samples.items():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})?", series)
        if match is None or match[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return value
    return None
