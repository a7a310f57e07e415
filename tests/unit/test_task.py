"""A task's transactions: what each one carries, holds, releases, and what an abort or a
fence undoes (the producer is a fake; tests/integration run the real broker)."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError

from streams.kafka.task import REFRESH_AFTER_S, Fenced, Outcome, Record
from tests.fakes import bytes_store, fake_task


async def test_a_transaction_carries_outputs_changelog_records_and_input_offsets() -> None:
    store = bytes_store()
    task, producer = fake_task(runs=store)
    task.send(Record("ns.steps", 0, b"r1", b"request"))
    store.put(b"r1", b"state 1")
    store.put(b"r1", b"state 2")  # one changelog record per key and transaction
    task.processed("ns.runs", 41)
    assert await task.commit() is Outcome.COMMITTED
    records, offsets = producer.transactions[0]
    assert records == [("ns.steps", 0, b"r1", b"request"),
                       ("ns-runs-changelog", 0, b"r1", b"state 2")]
    assert offsets == {("ns.runs", 0): 42}
    assert store.backend.get(b"r1") == b"state 2"
    assert not task.dirty
    assert await task.commit() is Outcome.COMMITTED and len(producer.transactions) == 1


async def test_a_record_over_the_producers_size_limit_is_set_aside_in_its_place() -> None:
    """Sent again it would fail the same way forever: what ``refused`` makes of it (a
    quarantine record) goes in its place, and the rest of the transaction commits."""
    refused = []

    def set_aside(record: Record, reason: str) -> Record:
        refused.append((record.topic, record.key, reason))
        return Record("ns.quarantine", 0, b"ns.runs:0", b"set aside")

    task, producer = fake_task(refused=set_aside)
    producer.max_bytes = 100
    task.send(Record("ns.runs", 0, b"r1", b"x" * 101))
    task.send(Record("ns.runs", 0, b"r2", b"fits"))
    task.processed("ns.events", 7)
    assert await task.commit() is Outcome.COMMITTED
    records, offsets = producer.transactions[0]
    assert records == [("ns.quarantine", 0, b"ns.runs:0", b"set aside"),
                       ("ns.runs", 0, b"r2", b"fits")]
    assert offsets == {("ns.events", 0): 8}
    assert refused == [("ns.runs", b"r1", "a record of 101 bytes for ns.runs is over the "
                                          "producer's size limit")]


async def test_held_records_keep_the_commit_back_until_released_with_their_outcome() -> None:
    task, producer = fake_task()
    for offset in (10, 11, 12):
        task.hold("ns.steps", offset)
        task.processed("ns.steps", offset)
    await task.commit()
    assert producer.offsets() == {("ns.steps", 0): 10}
    eleven = task.send_later([Record("ns.runs", 0, b"r", b"outcome 11")],
                             release=("ns.steps", 11))
    await task.commit()
    assert eleven.done() and producer.offsets() == {("ns.steps", 0): 10}  # 10 still held
    task.send_later([Record("ns.runs", 0, b"r", b"outcome 10")], release=("ns.steps", 10))
    await task.commit()
    assert producer.offsets() == {("ns.steps", 0): 12}
    assert producer.values("ns.runs") == [b"outcome 11", b"outcome 10"]
    assert task.is_held("ns.steps", 12) and not task.is_held("ns.steps", 10)


async def test_an_abort_drops_the_batch_keeps_later_work_and_rewinds_the_inputs() -> None:
    store = bytes_store()
    task, producer = fake_task(runs=store)
    task.processed("ns.runs", 5)
    await task.commit()
    store.put(b"r1", b"lost")
    task.send(Record("ns.history", 0, b"r1", b"lost too"))
    task.hold("ns.steps", 7)
    task.processed("ns.steps", 7)
    task.processed("ns.runs", 6)
    outcome = task.send_later([Record("ns.runs", 0, b"r1", b"step result")],
                              release=("ns.steps", 7))
    producer.fail_next = KafkaError._STATE
    assert await task.commit() is Outcome.ABORTED
    assert producer.aborted == 1
    assert store.get(b"r1") is None  # back to the last commit
    assert task.rewind_positions() == {("ns.runs", 0): 6, ("ns.steps", 0): 7}
    assert task.is_held("ns.steps", 7) and not outcome.done()
    task.processed("ns.steps", 7)  # read again (the runtime skips it: held)
    assert await task.commit() is Outcome.COMMITTED  # the step's result goes again
    assert producer.values("ns.runs") == [b"step result"]
    assert producer.values("ns.history") == []
    assert producer.offsets()[("ns.steps", 0)] == 8 and outcome.done()


async def test_a_fenced_task_commits_nothing_more_and_fails_what_waits_on_it() -> None:
    store = bytes_store()
    task, producer = fake_task(runs=store)
    store.put(b"r1", b"zombie write")
    waiting = task.send_later([Record("ns.runs", 0, b"r1", b"late")])
    producer.fail_next = KafkaError._FENCED
    assert await task.commit() is Outcome.FENCED
    assert not task.live and producer.transactions == []
    with pytest.raises(Fenced):
        await waiting
    assert store.get(b"r1") is None
    with pytest.raises(Fenced):
        await task.send_later([Record("ns.runs", 0, b"r1", b"later still")])


async def test_offsets_alone_are_committed_by_the_consumer_not_a_transaction() -> None:
    task, producer = fake_task()
    task.processed("ns.runs", 7)  # a record whose processing wrote nothing
    assert await task.commit() is Outcome.COMMITTED
    assert producer.consumer_commits == 1 and producer.offsets() == {("ns.runs", 0): 8}
    task.send(Record("ns.history", 0, b"r", b"h"))
    task.processed("ns.runs", 8)
    await task.commit()
    assert producer.consumer_commits == 1 and producer.offsets() == {("ns.runs", 0): 9}


async def test_a_revoked_task_leaves_offsets_that_come_with_no_record() -> None:
    # Inside the revoke callback the consumer cannot commit: the records are read again.
    task, producer = fake_task()
    task.processed("ns.runs", 7)
    assert await task.commit(revoking=True) is Outcome.COMMITTED
    assert producer.consumer_commits == 0 and producer.offsets() == {}
    task.send(Record("ns.history", 0, b"r", b"h"))  # with a record: its transaction
    assert await task.commit(revoking=True) is Outcome.COMMITTED
    assert producer.offsets() == {("ns.runs", 0): 8}


async def test_a_task_commits_its_offsets_once_more_when_quiet(
        monkeypatch: pytest.MonkeyPatch) -> None:
    task, producer = fake_task()
    task.processed("ns.runs", 3)
    task.processed("ns.steps", 5)
    await task.commit()
    task.processed("ns.runs", 4)
    await task.commit()
    assert not task.refresh_due
    later = time.monotonic() + REFRESH_AFTER_S
    monkeypatch.setattr("streams.kafka.task._now", lambda: later)
    assert task.refresh_due and not task.dirty
    await task.commit()  # every input's offset, though none moved
    assert producer.transactions[-1] == ([], {("ns.runs", 0): 5, ("ns.steps", 0): 6})
    assert not task.refresh_due
    await task.commit()
    assert len(producer.transactions) == 3


async def test_a_producer_call_that_fails_outside_kafka_errors_gives_the_task_up() -> None:
    task, producer = fake_task()
    task.processed("ns.runs", 3)
    task.send(Record("ns.steps", 0, b"r1", b"request"))

    def broken_flush(_timeout: float = 0) -> int:  # as confluent-kafka 2.16 once did
        raise SystemError("_PyErr_SetObject: exception <class 'str'> is not a BaseException")

    producer.flush = broken_flush
    assert await task.commit() is Outcome.FENCED
    assert not task.live and producer.transactions == []


async def test_a_transaction_hung_past_its_deadline_gives_the_task_up(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import streams.kafka.task as task_module

    monkeypatch.setattr(task_module, "_CALL_TIMEOUT_S", 0.05)
    task, producer = fake_task()
    task.processed("ns.runs", 3)
    task.send(Record("ns.steps", 0, b"r1", b"request"))
    release = threading.Event()
    producer.commit_transaction = lambda _timeout: release.wait(30)  # hangs, as seen
    try:
        assert await task.commit() is Outcome.FENCED
        assert not task.live
    finally:
        release.set()
