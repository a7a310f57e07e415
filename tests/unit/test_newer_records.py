"""A record of a newer stepstream stops its partition there (not quarantined), for a
bounded time; garbage is still quarantined."""

from __future__ import annotations

import time
from typing import Any

import pytest

from schemas.codec import NewerSchemaError, default_codec
from schemas.messages import HistoryRecord
from stepstream.settings import Settings
from streams.kafka.runtime import Runtime
from streams.kafka.task import Task
from streams.projector import HistoryProjector
from tests.fakes import FakeMessage, SeekingConsumer, fake_task

NEWER = b"\xc3\x01" + b"\x42" * 8
"""The header of a record of a version this one does not know."""


class Recording:
    """A processor that raises ``NewerSchemaError`` for records under ``NEWER``."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    async def process(self, _task: Task, message: Any) -> None:
        if message.value().startswith(NEWER):
            raise NewerSchemaError(NEWER[2:])
        self.seen.append((message.topic(), message.offset()))


def runtime(wait_s: float = 600.0) -> tuple[Runtime, Recording, SeekingConsumer, Task,
                                            list[str]]:
    processor, quarantined = Recording(), []
    runtime = Runtime(Settings(newer_schema_wait_s=wait_s), group_id="g",
                      transactional_prefix="t",
                      processors={"runs": processor, "steps": processor}, fetch_wait_ms=10,
                      quarantine=lambda _task, _message, reason: quarantined.append(reason))
    consumer = SeekingConsumer(assigned=[("runs", 0), ("steps", 0)])
    runtime._consumer = consumer
    task, _ = fake_task(0)
    runtime.tasks = {0: task}
    return runtime, processor, consumer, task, quarantined


def message(topic: str, offset: int, value: bytes = b"ok", age_s: float = 0.0) -> FakeMessage:
    return FakeMessage(topic, 0, offset, value, produced_ms=int((time.time() - age_s) * 1000))


async def test_the_partition_stops_at_a_newer_record_and_commits_up_to_it() -> None:
    rt, processor, consumer, task, quarantined = runtime()

    await rt._process([message("runs", 5), message("runs", 6, NEWER), message("runs", 7),
                       message("steps", 3)])
    rt._caught_up({("runs", 0): 8, ("steps", 0): 4})
    rt._apply_pauses()

    assert processor.seen == [("runs", 5), ("steps", 3)]  # nothing after it; others go on
    assert quarantined == []
    assert consumer.seeks == [("runs", 0, 6)]  # read again from there
    assert consumer.paused == {("runs", 0)}
    assert task._inputs[("runs", 0)].committable() == 6
    assert task._inputs[("steps", 0)].committable() == 4
    assert {tp[0] for tp in rt.newer.waiting} == {"runs"}


async def test_records_fetched_before_the_pause_are_read_again_later() -> None:
    rt, processor, consumer, _, _ = runtime()
    await rt._process([message("runs", 6, NEWER)])

    await rt._process([message("runs", 7)])

    assert processor.seen == []
    assert consumer.seeks == [("runs", 0, 6), ("runs", 0, 6)]


async def test_a_newer_record_read_by_a_newer_worker_lets_the_partition_go_on() -> None:
    rt, processor, _, task, _ = runtime()
    await rt._process([message("runs", 6, NEWER)])
    rt.hold_back("runs", 0, time.monotonic() - 1)  # the partition moved: a newer worker

    await rt._process([message("runs", 6), message("runs", 7)])  # as a newer codec reads it

    assert processor.seen == [("runs", 6), ("runs", 7)]
    assert rt.newer.waiting == {}
    assert task._inputs[("runs", 0)].committable() == 8


async def test_a_newer_record_older_than_the_wait_is_quarantined() -> None:
    rt, processor, consumer, task, quarantined = runtime(wait_s=60)

    await rt._process([message("runs", 6, NEWER, age_s=61), message("runs", 7)])

    assert len(quarantined) == 1
    assert "unknown schema fingerprint 4242424242424242" in quarantined[0]
    assert "within 60s (STEPSTREAM_NEWER_SCHEMA_WAIT_S)" in quarantined[0]
    assert processor.seen == [("runs", 7)]
    assert consumer.seeks == []
    assert task._inputs[("runs", 0)].committable() == 8


async def test_the_wait_ends_when_the_record_is_as_old_as_the_wait() -> None:
    rt, _, _, _, quarantined = runtime(wait_s=60)
    await rt._process([message("runs", 6, NEWER, age_s=30)])
    (waiting,) = rt.newer.waiting.values()

    assert waiting.until_s - time.monotonic() == pytest.approx(30, abs=5)
    assert quarantined == []


async def test_an_aborted_transaction_reads_the_waiting_partition_again() -> None:
    rt, _, consumer, _, _ = runtime()
    await rt._process([message("runs", 6, NEWER)])

    rt._stop_waiting(0)
    rt._apply_pauses()

    assert rt.newer.waiting == {}
    assert consumer.paused == set()


# --- the history projector ----------------------------------------------------------


class Projected:
    """The read model, as the projector writes it."""

    def __init__(self) -> None:
        self.records: list[Any] = []

    async def apply_many(self, records: list[Any]) -> None:
        self.records += records


def history(offset: int) -> FakeMessage:
    record = HistoryRecord(run_id="r", function_id="f", seq=offset, ts=1, kind="run.started")
    return message("history", offset, default_codec().encode(record))


async def test_the_projector_stops_a_partition_at_a_newer_record() -> None:
    quarantined: list[str] = []

    async def quarantine(_message: Any, reason: str) -> None:
        quarantined.append(reason)

    store = Projected()
    projector = HistoryProjector(Settings(), store, default_codec(),  # type: ignore[arg-type]
                                 quarantine)
    other = FakeMessage("history", 1, 9, history(9).value())

    done, stopped = await projector._apply([history(5), message("history", 6, NEWER),
                                            history(7), other])

    assert [m.offset() for m in done] == [5, 9]  # committed: up to the newer record
    assert stopped == {("history", 0): 6}
    assert [r.seq for r in store.records] == [5, 9]
    assert quarantined == []
