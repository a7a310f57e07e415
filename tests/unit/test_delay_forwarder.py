"""The delay forwarder's holding, sending on and commit bookkeeping, without a broker."""

from __future__ import annotations

import asyncio
from typing import Any

from schemas.codec import default_codec
from schemas.messages import Delayed
from stepstream.settings import Settings
from stepstream.step import now_ms
from streams.delay_forwarder import DelayForwarder
from streams.delays import DelayTiers

SETTINGS = Settings(namespace="ns")


class FakeMessage:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes,
                 produced_ms: int) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._value, self._produced_ms = value, produced_ms

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, self._produced_ms)


class FakeSender:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def send(self, topic: str, key: bytes, value: bytes) -> asyncio.Future[Any]:
        self.sent.append((topic, key, value))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def forwarder(sender: FakeSender, quarantined: list[str]) -> DelayForwarder:
    async def quarantine(_message: Any, reason: str) -> None:
        quarantined.append(reason)

    return DelayForwarder(SETTINGS, DelayTiers(SETTINGS), sender,  # type: ignore[arg-type]
                          default_codec(), targets={"ns.runs"}, quarantine=quarantine,
                          stopping=lambda: False)


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


async def test_records_leave_when_due_and_the_commit_stops_at_the_oldest_held() -> None:
    sender, quarantined = FakeSender(), []
    delays = forwarder(sender, quarantined)
    for offset, due_in_ms in ((10, 300), (11, 0), (12, 0)):
        await delays._hold(delayed(offset, due_in_ms))
    await settle(lambda: len(sender.sent) == 2)
    # 11 and 12 left on time behind 10, which still waits: the commit may not pass it
    assert [value for _, _, value in sender.sent] == [b"payload 11", b"payload 12"]
    assert sender.sent[0][0] == "ns.runs"
    assert delays._due_commits() == {("ns.delay.1s", 0): 10}
    await settle(lambda: len(sender.sent) == 3)
    # Sent, then no longer held once its send is acknowledged (a moment later).
    await settle(lambda: len(delays) == 0)
    assert delays._due_commits() == {("ns.delay.1s", 0): 13}


async def test_a_record_due_after_its_tiers_hold_hops_to_the_tier_that_fits() -> None:
    sender, quarantined = FakeSender(), []
    delays = forwarder(sender, quarantined)
    # Produced 2.5 s ago into the 1 s tier (it waited its hold), due in 15 s: 10 s tier.
    message = delayed(1, 15_000)
    message._produced_ms -= 2_500
    await delays._hold(message)
    await settle(lambda: len(sender.sent) == 1)
    topic, key, value = sender.sent[0]
    assert (topic, key) == ("ns.delay.10s", b"run-1")
    assert default_codec().decode_as(value, Delayed).topic == "ns.runs"


async def test_bad_records_are_quarantined_and_committed_past() -> None:
    sender, quarantined = FakeSender(), []
    delays = forwarder(sender, quarantined)
    await delays._hold(FakeMessage("ns.delay.1s", 0, 5, b"\x00garbage", now_ms()))
    await delays._hold(delayed(6, 0, topic="ns.nowhere"))
    await settle(lambda: len(quarantined) == 2)
    assert "ns.nowhere" in quarantined[1]
    await settle(lambda: delays._due_commits() == {("ns.delay.1s", 0): 7})
    assert sender.sent == []


async def test_revoked_partitions_stop_their_timers_and_commit_what_was_sent_on() -> None:
    sender, quarantined = FakeSender(), []
    delays = forwarder(sender, quarantined)
    await delays._hold(delayed(20, 0))
    await delays._hold(delayed(21, 60_000))
    await settle(lambda: len(sender.sent) == 1 and len(delays) == 1)
    held = next(iter(delays._held.values())).tasks[21]
    assert await delays._release({("ns.delay.1s", 0)}) == {("ns.delay.1s", 0): 21}
    await asyncio.sleep(0)
    assert held.cancelled()
    assert delays._due_commits() == {}  # no longer ours
