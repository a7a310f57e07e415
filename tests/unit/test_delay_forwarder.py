"""The delay forwarder: records leave when due, in a transaction that releases them (the
producer is a fake; tests/integration run the real broker)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from schemas.codec import default_codec
from schemas.messages import Delayed, Quarantined
from stepstream.settings import Settings
from stepstream.step import now_ms
from streams.delays import DelayTiers
from streams.metrics import Metrics
from streams.processors.delays import WINDOW_S, DelayForwarder
from streams.processors.outputs import Outputs
from tests.fakes import FakeMessage, fake_task

SETTINGS = Settings(namespace="ns", partitions=1)
PARTITIONS = {"ns.runs": 1, "ns.quarantine": 1, **{f"ns.delay.{t}": 1
                                                   for t in ("1s", "10s", "1m", "10m", "1h")}}


def forwarder(held: list[tuple[str, int, float]] | None = None) -> DelayForwarder:
    outputs = Outputs(SETTINGS, default_codec(), Metrics(), PARTITIONS, DelayTiers(SETTINGS))
    return DelayForwarder(outputs, targets={"ns.runs"},
                          hold_back=None if held is None else lambda *h: held.append(h))


def delayed(offset: int, due_in_ms: int, *, topic: str = "ns.runs",
            tier: str = "ns.delay.1s") -> FakeMessage:
    now = now_ms()
    record = Delayed(due_ms=now + due_in_ms, topic=topic, key=b"run-1",
                     value=f"payload {offset}".encode())
    return FakeMessage(tier, 0, offset, default_codec().encode(record), now)


async def settle(condition: Any, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


async def processed(delays: DelayForwarder, task: Any, message: FakeMessage) -> None:
    await delays.process(task, message)
    task.processed(message.topic(), message.offset())


async def test_records_leave_when_due_and_the_commit_stops_at_the_oldest_held() -> None:
    delays, (task, producer) = forwarder(), fake_task()
    for offset, due_in_ms in ((10, 300), (11, 0), (12, 0)):
        await processed(delays, task, delayed(offset, due_in_ms))
    await settle(lambda: len(delays) == 1)
    await task.commit()
    # 11 and 12 left on time behind 10, which still waits: the commit may not pass it
    assert producer.values("ns.runs") == [b"payload 11", b"payload 12"]
    assert producer.offsets() == {("ns.delay.1s", 0): 10}
    await settle(lambda: len(delays) == 0)
    await task.commit()
    assert producer.values("ns.runs")[-1] == b"payload 10"
    assert producer.offsets() == {("ns.delay.1s", 0): 13}


async def test_a_record_due_after_its_tiers_hold_hops_to_the_tier_that_fits() -> None:
    delays, (task, producer) = forwarder(), fake_task()
    # Produced 2.5 s ago into the 1 s tier (it waited its hold), due in 15 s: 10 s tier.
    message = delayed(1, 15_000)
    message._produced_ms -= 2_500
    await processed(delays, task, message)
    await settle(lambda: len(delays) == 0)
    await task.commit()
    (records, _), = producer.transactions
    topic, _, key, value = records[0]
    assert (topic, key) == ("ns.delay.10s", b"run-1")
    assert default_codec().decode_as(value, Delayed).topic == "ns.runs"


async def test_bad_records_are_quarantined_and_committed_past() -> None:
    delays, (task, producer) = forwarder(), fake_task()
    await processed(delays, task, FakeMessage("ns.delay.1s", 0, 5, b"\x00garbage", now_ms()))
    await processed(delays, task, delayed(6, 0, topic="ns.nowhere"))
    await settle(lambda: len(delays) == 0)
    await task.commit()
    reasons = [default_codec().decode_as(v, Quarantined).reason
               for v in producer.values("ns.quarantine")]
    assert len(reasons) == 2 and "ns.nowhere" in reasons[1]
    assert producer.offsets() == {("ns.delay.1s", 0): 7}
    assert producer.values("ns.runs") == []


async def test_an_ended_task_stops_its_timers() -> None:
    delays, (task, producer) = forwarder(), fake_task()
    await processed(delays, task, delayed(20, 0))
    await processed(delays, task, delayed(21, 60_000))
    await settle(lambda: len(delays) == 1)
    await task.commit()
    assert producer.offsets() == {("ns.delay.1s", 0): 21}
    delays.task_ended(task)
    assert len(delays) == 0


async def test_a_partition_is_read_only_a_window_ahead() -> None:
    held: list[tuple[str, int, float]] = []
    delays, (task, _) = forwarder(held), fake_task()
    await processed(delays, task, delayed(1, 5_000, tier="ns.delay.1h"))  # within the window
    assert held == []
    message = delayed(2, 3_600_000, tier="ns.delay.1h")
    before = time.monotonic()
    await processed(delays, task, message)
    [(topic, partition, until)] = held
    assert (topic, partition) == ("ns.delay.1h", 0)
    # Read on once the record is a window away from waking (its tier's hold, 1 h).
    assert before + 3600 - WINDOW_S - 1 <= until <= time.monotonic() + 3600 - WINDOW_S
    delays.task_ended(task)
