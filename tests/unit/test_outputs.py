"""What a processor reads passes one boundary (``Outputs.decoded``): a record that does
not decode, or does not lie where its key routes it, is quarantined with the reason."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from schemas.codec import MARKER, NewerSchemaError, default_codec
from schemas.messages import RUN_MESSAGES, Quarantined, TimerFired
from stepstream.settings import Settings
from streams.delays import DelayTiers
from streams.metrics import Metrics
from streams.partitioner import partition_of
from streams.processors.outputs import Outputs, by_run_id
from tests.fakes import FakeMessage, fake_task

SETTINGS = Settings(namespace="ns", partitions=4)
TOPICS = {"ns.runs": 4, "ns.quarantine": 1}
CODEC = default_codec()


def decoded(message: FakeMessage) -> tuple[Any, list[Quarantined]]:
    outputs = Outputs(SETTINGS, CODEC, Metrics(), TOPICS, DelayTiers(SETTINGS))
    task, producer = fake_task()
    record = outputs.decoded(task, message, RUN_MESSAGES, owner=by_run_id)
    asyncio.run(task.commit())
    quarantined = [CODEC.decode_as(value, Quarantined)
                   for records, _ in producer.transactions for _, _, _, value in records]
    return record, quarantined


def runs_message(run_id: str, *, key: bytes | None = None, partition: int | None = None,
                 value: bytes | None = None) -> FakeMessage:
    key = run_id.encode() if key is None else key
    partition = partition_of(key, 4) if partition is None else partition
    value = CODEC.encode(TimerFired(run_id=run_id, timer_id="t", ts=1)) if value is None else value
    return FakeMessage("ns.runs", partition, 7, value, key=key)


def test_a_record_where_its_key_routes_it_is_read() -> None:
    record, quarantined = decoded(runs_message("run-1"))

    assert isinstance(record, TimerFired) and quarantined == []


def test_a_record_on_another_partition_than_its_keys_is_quarantined() -> None:
    home = partition_of(b"run-1", 4)
    record, quarantined = decoded(runs_message("run-1", partition=(home + 1) % 4))

    assert record is None
    assert [q.reason for q in quarantined] == [f"key b'run-1' belongs to partition {home}"]
    assert (quarantined[0].topic, quarantined[0].offset) == ("ns.runs", 7)


def test_a_record_keyed_by_another_run_than_its_own_is_quarantined() -> None:
    """The key routes it to the task of another run's state."""
    record, quarantined = decoded(runs_message("run-1", key=b"run-2"))

    assert record is None and "not by 'run-1'" in quarantined[0].reason


KNOWN_HEADER = CODEC.encode(TimerFired(run_id="r", timer_id="t", ts=1))[:10]


@pytest.mark.parametrize("value", [b"garbage", MARKER + b"\x00" * 7, b"",
                                   KNOWN_HEADER + b"\xff"], ids=repr)
def test_what_does_not_decode_is_quarantined_with_the_reason(value: bytes) -> None:
    record, quarantined = decoded(runs_message("run-1", value=value))

    assert record is None and quarantined and quarantined[0].reason
    assert quarantined[0].value == value


def test_a_record_of_a_newer_version_is_not_quarantined_but_raised() -> None:
    """The runtime waits at it (``streams.kafka.newer``)."""
    with pytest.raises(NewerSchemaError):
        decoded(runs_message("run-1", value=MARKER + b"\x00" * 8))


def test_a_message_of_a_run_whose_state_cannot_be_decoded_is_set_aside() -> None:
    """The orchestrator cannot advance it: the message is quarantined with the reason,
    and the next message of the partition is processed."""
    orchestrator, task, producer = orchestrator_with_state(b"\x00\x01 not a run state")

    asyncio.run(orchestrator.process(task, runs_message("run-1")))
    asyncio.run(task.commit())

    (records, _), = producer.transactions
    quarantined = [CODEC.decode_as(value, Quarantined) for _, _, _, value in records]
    assert [q.reason.split(":")[0] for q in quarantined] == [
        "the state of run run-1 cannot be decoded"]


def test_a_message_of_a_run_whose_state_a_newer_version_wrote_waits() -> None:
    """Not quarantined: the runtime stops the partition there (``streams.kafka.newer``)."""
    orchestrator, task, _ = orchestrator_with_state(MARKER + b"\x42" * 8 + b"\x00")

    with pytest.raises(NewerSchemaError):
        asyncio.run(orchestrator.process(task, runs_message("run-1")))
    assert not task.dirty


def orchestrator_with_state(stored: bytes) -> tuple[Any, Any, Any]:
    """An orchestrator, and a task whose runs store holds ``stored`` as run-1's state."""
    from streams.kafka.store import MemoryBackend, StateStore
    from streams.leases import LeaseClock
    from streams.processors.orchestrator import RUNS, Orchestrator
    from streams.run_records import RunRecords

    backend = MemoryBackend()
    backend.apply({b"run-1": stored}, 1)
    store = StateStore("ns-runs-changelog", partition_of(b"run-1", 4), backend,
                       RunRecords(CODEC))
    outputs = Outputs(SETTINGS, CODEC, Metrics(), TOPICS, DelayTiers(SETTINGS))
    orchestrator = Orchestrator(outputs, {}, LeaseClock(lambda _: False, _never), "app")
    task, producer = fake_task(store.partition, **{RUNS: store})
    return orchestrator, task, producer


async def _never(_: Any) -> None:
    raise AssertionError("no lease fires here")
