"""Cron schedules in the engine (``streams.schedules``): which ticks are due after an
outage, a handover or a pause, the runs they start, and the punctuation that starts them
from one task in its transaction, on a virtual clock across a DST switch."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import KafkaError

from schemas.codec import default_codec
from schemas.messages import Event, FunctionControl, RunStarted, ScheduleState
from stepstream import Context, Cron, Settings, Stepstream
from stepstream.cron import MAX_CATCH_UP_TICKS
from stepstream.events import run_id_for
from streams.delays import DelayTiers
from streams.kafka.store import MemoryBackend, StateStore, WholeValues
from streams.kafka.task import Outcome
from streams.metrics import Metrics
from streams.partitioner import partition_of
from streams.pauses import FUNCTIONS
from streams.processors.outputs import Outputs
from streams.schedules import HANDOVER_GRACE_MS, Schedules, cron_start, due, schedule_key
from tests.fakes import fake_task

MINUTE_MS, HOUR_MS = 60_000, 3600_000
CODEC = default_codec()
T0 = int(datetime(2030, 1, 1, tzinfo=UTC).timestamp() * 1000)
EVERY_5 = Cron("*/5 * * * *")


def utc(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


# --- which ticks are due ----------------------------------------------------------------


def test_a_new_schedule_starts_from_now() -> None:
    assert due(EVERY_5, None, None, T0 + 7 * MINUTE_MS).ticks == []
    assert due(EVERY_5, None, None, T0 + 7 * MINUTE_MS).done_until == T0 + 7 * MINUTE_MS


def test_a_tick_starts_when_it_is_due_and_once() -> None:
    assert due(EVERY_5, T0, None, T0 + 5 * MINUTE_MS - 1).ticks == []
    started = due(EVERY_5, T0, None, T0 + 5 * MINUTE_MS + 3)
    assert (started.ticks, started.done_until) == ([T0 + 5 * MINUTE_MS], T0 + 5 * MINUTE_MS + 3)
    assert due(EVERY_5, started.done_until, None, T0 + 6 * MINUTE_MS).ticks == []


def test_without_catch_up_only_a_handover_s_ticks_start_late() -> None:
    every_10s = Cron("* * * * * */10")
    now = T0 + 10 * MINUTE_MS
    handover = due(every_10s, now - 30_000, None, now)  # the partition moved for 30 s
    assert handover.ticks == [now - 20_000, now - 10_000, now] and handover.skipped is None
    outage = due(every_10s, now - 5 * MINUTE_MS, None, now)  # no worker for five minutes
    assert outage.ticks == [now - HANDOVER_GRACE_MS + i * 10_000 for i in range(7)]
    assert outage.skipped is not None and "older than its catch-up window" in outage.skipped


def test_catch_up_starts_each_missed_tick_within_the_window() -> None:
    cron = Cron("*/5 * * * *", catch_up="1h")
    now = T0 + 3 * HOUR_MS + 2 * MINUTE_MS  # down since T0: three hours of ticks missed
    caught = due(cron, T0, None, now)
    assert caught.ticks == [now - 2 * MINUTE_MS - 55 * MINUTE_MS + i * 5 * MINUTE_MS
                            for i in range(12)]
    assert caught.done_until == now and "older than its catch-up window (1:00:00)" in str(
        caught.skipped)
    assert due(cron, T0, None, T0 + 12 * MINUTE_MS).ticks == [T0 + 5 * MINUTE_MS,
                                                             T0 + 10 * MINUTE_MS]


def test_a_catch_up_is_capped_at_the_latest_ticks() -> None:
    cron = Cron("* * * * *", catch_up="1d")
    now = T0 + 20 * HOUR_MS
    capped = due(cron, T0, None, now)
    assert len(capped.ticks) == MAX_CATCH_UP_TICKS and capped.ticks[-1] == now
    assert f"the latest {MAX_CATCH_UP_TICKS} start" in str(capped.skipped)


def test_a_paused_schedule_starts_nothing_and_skips_its_pause_s_ticks_on_resume() -> None:
    cron = Cron("*/5 * * * *", catch_up="1d")
    paused = FunctionControl(function_id="f", paused=True, ts=T0 + MINUTE_MS)
    assert due(cron, T0, paused, T0 + HOUR_MS) == due(cron, T0, paused, T0 + HOUR_MS)
    assert due(cron, T0, paused, T0 + HOUR_MS).ticks == []
    assert due(cron, T0, paused, T0 + HOUR_MS).done_until == T0
    resumed = FunctionControl(function_id="f", paused=False, ts=T0 + HOUR_MS + 30_000)
    assert due(cron, T0, resumed, T0 + HOUR_MS + MINUTE_MS).ticks == []
    assert due(cron, T0, resumed, T0 + HOUR_MS + 5 * MINUTE_MS).ticks == [
        T0 + HOUR_MS + 5 * MINUTE_MS]


def test_a_tick_s_run_is_fixed_by_the_tick_and_starts_now() -> None:
    cron = Cron("0 9 * * *", tz="Europe/Berlin")
    tick, now = utc(2026, 7, 1, 7), utc(2026, 7, 1, 7, 30)
    start = cron_start("report", cron, tick, now)
    event_id = f"cron:report:{tick}"
    assert start == RunStarted(
        run_id=run_id_for("report", event_id), function_id="report", ts=now,
        event=Event(id=event_id, name="stepstream/cron", ts=tick, data_json=json.dumps({
            "cron": "0 9 * * *", "tz": "Europe/Berlin", "tick": tick,
            "scheduled_at": "2026-07-01T09:00:00+02:00"})))
    assert cron_start("report", cron, tick, now + 1).run_id == start.run_id


# --- the punctuation ------------------------------------------------------------------


async def handler(ctx: Context) -> None:
    return None


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def engine(partitions: int, **crons: Cron | str) -> tuple[Schedules, Clock, Stepstream]:
    settings = Settings(namespace="ns", partitions=partitions)
    ss = Stepstream(app_id="tests", settings=settings)
    for function_id, cron in crons.items():
        ss.function(id=function_id, cron=cron)(handler)
    topics = {"ns.runs": partitions, "ns.history": partitions}
    outputs = Outputs(settings, CODEC, Metrics(), topics, DelayTiers(settings))
    clock = Clock(0)
    return Schedules(outputs, ss.functions, partitions, clock=clock), clock, ss


def functions_task(partition: int = 0) -> tuple[Any, Any, StateStore[Any]]:
    table: StateStore[Any] = StateStore("ns-functions-changelog", partition, MemoryBackend(),
                                        WholeValues(CODEC.encode, CODEC.decode))
    task, producer = fake_task(partition, **{FUNCTIONS: table})
    return task, producer, table


def started(producer: Any) -> list[tuple[str, int]]:
    """(function, tick) of the runs started by committed transactions."""
    out = []
    for records, _ in producer.transactions:
        for topic, _, _, value in records:
            if topic == "ns.runs":
                start = CODEC.decode(value)
                out.append((start.function_id, start.event.ts))
    return out


@pytest.mark.parametrize(("day", "report", "backup"), [
    ((2026, 3, 28), [utc(2026, 3, 28, 8), utc(2026, 3, 29, 7)],   # 09:00 CET, then CEST
     [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1)]),            # 02:30 skipped: at the jump
    ((2026, 10, 24), [utc(2026, 10, 24, 7), utc(2026, 10, 25, 8)],  # CEST, then CET
     [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30)]),      # 02:30 twice: the first
])
async def test_ticks_start_once_across_a_dst_switch_on_a_virtual_clock(
        day: tuple[int, int, int], report: list[int], backup: list[int]) -> None:
    schedules, clock, _ = engine(1, report=Cron("0 9 * * *", tz="Europe/Berlin"),
                                 backup=Cron("30 2 * * *", tz="Europe/Berlin"),
                                 hourly=Cron("0 * * * *", tz="Europe/Berlin"))
    task, producer, _ = functions_task()
    clock.now = start = utc(*day)
    while clock.now <= start + 48 * HOUR_MS:  # every minute, twice over
        for _ in range(2):
            schedules.tick(task)
            assert await task.commit() is Outcome.COMMITTED
        clock.now += MINUTE_MS
    ticks = started(producer)
    assert [t for f, t in ticks if f == "report"] == report
    assert [t for f, t in ticks if f == "backup"] == backup
    assert [t for f, t in ticks if f == "hourly"] == [start + h * HOUR_MS for h in range(1, 49)]


async def test_an_aborted_transaction_starts_its_ticks_again_in_the_next() -> None:
    schedules, clock, _ = engine(1, f="*/5 * * * *")
    task, producer, table = functions_task()
    clock.now = T0
    schedules.tick(task)
    await task.commit()
    clock.now = T0 + 5 * MINUTE_MS
    schedules.tick(task)
    producer.fail_next = KafkaError._PURGE_QUEUE  # any abortable error
    assert await task.commit() is not Outcome.COMMITTED
    assert table.get(schedule_key("f")) == ScheduleState(function_id="f", done_until=T0)
    schedules.tick(task)
    assert await task.commit() is Outcome.COMMITTED
    assert started(producer) == [("f", T0 + 5 * MINUTE_MS)]


async def test_only_the_task_of_the_function_s_partition_starts_its_ticks() -> None:
    schedules, clock, _ = engine(4, f="* * * * *")
    owner = partition_of(b"f", 4)
    for partition in range(4):
        task, producer, table = functions_task(partition)
        clock.now = T0
        schedules.tick(task)
        clock.now = T0 + MINUTE_MS
        schedules.tick(task)
        await task.commit()
        assert started(producer) == ([("f", T0 + MINUTE_MS)] if partition == owner else [])
        assert (table.get(schedule_key("f")) is None) == (partition != owner)


async def test_a_pause_in_the_functions_table_stops_the_ticks() -> None:
    schedules, clock, _ = engine(1, f="* * * * *")
    task, producer, table = functions_task()
    clock.now = T0
    schedules.tick(task)
    table.put(b"f", FunctionControl(function_id="f", paused=True, ts=T0 + 1))
    for minute in range(1, 4):
        clock.now = T0 + minute * MINUTE_MS
        schedules.tick(task)
    table.put(b"f", FunctionControl(function_id="f", paused=False, ts=clock.now + 1))
    clock.now = T0 + 5 * MINUTE_MS
    schedules.tick(task)
    await task.commit()
    assert started(producer) == [("f", T0 + 4 * MINUTE_MS), ("f", T0 + 5 * MINUTE_MS)]
