"""The dev broker behind its gate reads as Kafka does at ``read_committed``, and lets a
group go on after its members leave, where Tansu 0.6 alone does not
(``stepstream.tansu_gate``)."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from stepstream.devservices import DevBroker
from tests.integration.helpers import held_partitions, wait_for


def _read_committed(broker: DevBroker, topics: list[str], expected: int) -> list[bytes]:
    """The values of ``topics`` (one partition each) a read_committed reader gets, read
    until ``expected`` values or the end of every partition (or for 60 s: the broker
    alone never reports the end of a partition it holds back)."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": uuid.uuid4().hex,
                         "isolation.level": "read_committed", "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, 0, 0) for topic in topics])
    values: list[bytes] = []
    at_end: set[str] = set()
    deadline = time.monotonic() + 60
    try:
        while len(values) < expected and at_end != set(topics) and time.monotonic() < deadline:
            for message in consumer.consume(100, 1):
                if message.error() is None:
                    values.append(message.value())
                    at_end.discard(message.topic())
                elif message.error().name().endswith("PARTITION_EOF"):
                    at_end.add(message.topic())
    finally:
        consumer.close()
    return values


def test_a_committed_transaction_the_broker_holds_open_is_read(broker: DevBroker) -> None:
    """Tansu ends a transaction for good only once every transaction overlapping it has
    ended, and looks again only when a later one in its partitions ends: A overlaps B,
    B overlaps C, C ends last, and A and B stay open in the broker for good."""
    tag = uuid.uuid4().hex[:8]
    first, second = f"gate-first-{tag}", f"gate-second-{tag}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for created in admin.create_topics([NewTopic(first, 1), NewTopic(second, 1)]).values():
        created.result(30)

    def begun(name: str) -> Producer:
        producer = Producer({"bootstrap.servers": broker.bootstrap,
                             "transactional.id": f"{name}-{tag}"})
        producer.init_transactions(30)
        producer.begin_transaction()
        return producer

    def send(producer: Producer, topic: str, value: bytes) -> None:
        producer.produce(topic, value)
        producer.flush(30)

    b, a, c = begun("b"), begun("a"), begun("c")
    send(b, first, b"b0")
    send(a, first, b"a1")
    a.commit_transaction(30)  # B, open, overlaps A
    send(c, second, b"c0")
    send(b, second, b"b1")
    b.commit_transaction(30)  # C, open, overlaps B
    c.commit_transaction(30)  # ends C alone: A and B stay open in the broker

    assert sorted(_read_committed(broker, [first, second], 4)) == [b"a1", b"b0", b"b1", b"c0"]
    reader = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": uuid.uuid4().hex,
                       "isolation.level": "read_committed"})
    try:  # two records and a marker after each transaction's
        assert reader.get_watermark_offsets(TopicPartition(first, 0), 10, cached=False) == (0, 4)
    finally:
        reader.close()


def test_an_open_transaction_holds_a_read_committed_reader_until_it_ends(
        broker: DevBroker) -> None:
    tag = uuid.uuid4().hex[:8]
    topic = f"gate-open-{tag}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for created in admin.create_topics([NewTopic(topic, 1)]).values():
        created.result(30)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": tag})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"before the end")
    producer.flush(30)

    assert _read_committed(broker, [topic], 1) == []  # at its stable end: nothing yet
    assert held_partitions(broker.bootstrap, topic) == {0: (0, 1)}
    producer.commit_transaction(30)
    assert _read_committed(broker, [topic], 1) == [b"before the end"]
    assert held_partitions(broker.bootstrap, topic) == {}


def _assignment(consumer: Consumer) -> list[TopicPartition]:
    """The consumer's partitions, once it has served its group's events."""
    consumer.poll(0.1)
    return list(consumer.assignment())


def test_a_group_whose_members_left_while_it_rebalanced_takes_a_new_member(
        broker: DevBroker) -> None:
    """Tansu keeps a member that leaves a rebalancing group as its leader: the second of
    two members closed one after the other stayed leader, and a third never got
    partitions (the gate answers that leave itself)."""
    tag = uuid.uuid4().hex[:8]
    topic = f"gate-leave-{tag}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for created in admin.create_topics([NewTopic(topic, 4)]).values():
        created.result(30)
    config = {"bootstrap.servers": broker.bootstrap, "group.id": tag,
              "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
              "fetch.wait.max.ms": 5}
    first, second = Consumer(config), Consumer(config)
    for consumer in (first, second):
        consumer.subscribe([topic])
    wait_for(lambda: len(_assignment(first)) + len(_assignment(second)) == 4,
             what="two members sharing the partitions")
    first.close()
    wait_for(lambda: not _assignment(second), what="the second member rebalancing")
    second.close()

    third = Consumer(config)
    third.subscribe([topic])
    try:
        wait_for(lambda: len(_assignment(third)) == 4, 90, "the third member's partitions")
    finally:
        third.close()
