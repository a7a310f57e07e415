"""A changelog holding a transaction that a killed owner left open: the next owner's
producer, initialised before its stores are restored (``Runtime._start_tasks``), ends it,
and a ``read_committed`` restore then reaches the partition's end.

Behind the dev broker's gate the end a restore waits for (``Runtime._end``) is the high
watermark, while its end-of-partition comes at the last stable offset: with the open
transaction not ended first, the restore waits until it is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from stepstream.settings import Settings
from streams.kafka.clients import reader, transactional_producer
from streams.kafka.runtime import Runtime

_LEAVE_OPEN = """
import sys, time
from confluent_kafka import Producer
producer = Producer({"bootstrap.servers": sys.argv[1], "transactional.id": sys.argv[2]})
producer.init_transactions(30)
producer.begin_transaction()
for _ in range(3):
    producer.produce(sys.argv[3], partition=0, key=b"open", value=b"never committed")
producer.flush(30)
print("open", flush=True)
time.sleep(600)
"""


def _end_of_partition(settings: Settings, topic: str) -> tuple[int, dict[bytes, bytes]]:
    """Where a restore's reader meets the end of ``topic[0]``, and what it read."""
    consumer = reader(settings, fetch_wait_ms=5)
    consumer.assign([TopicPartition(topic, 0, 0)])
    read: dict[bytes, bytes] = {}
    try:
        while True:  # the test's timeout bounds it
            for message in consumer.consume(100, 0.2):
                if message.error() is None:
                    read[message.key()] = message.value()
                elif message.error().name().endswith("PARTITION_EOF"):
                    return message.offset(), read
    finally:
        consumer.close()


def test_a_killed_owners_open_transaction_ends_before_the_restore(settings: Settings) -> None:
    topic, txn_id = f"{settings.namespace}-runs-changelog", f"{settings.namespace}.engine.0"
    admin = AdminClient({"bootstrap.servers": settings.brokers})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    first = transactional_producer(settings, txn_id)
    first.init_transactions(30)
    first.begin_transaction()
    first.produce(topic, partition=0, key=b"run", value=b"committed")
    first.commit_transaction(30)

    owner = subprocess.Popen([sys.executable, "-c", _LEAVE_OPEN, settings.brokers, txn_id,
                              topic], stdout=subprocess.PIPE)
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline() == b"open\n"
    finally:
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()

    # The next owner, as the runtime starts a task: its producer first, then the restore.
    transactional_producer(settings, txn_id).init_transactions(30)
    offset, read = _end_of_partition(settings, topic)
    probe = reader(settings, fetch_wait_ms=5)
    try:
        assert offset >= Runtime._end(probe, (topic, 0))  # the restore stops here
    finally:
        probe.close()
    assert read == {b"run": b"committed"}
