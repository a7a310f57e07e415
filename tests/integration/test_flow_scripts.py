"""The flow-control Lua scripts against real Redis (no broker): limits, queues, leases
and idempotency, decision by decision."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from schemas.messages import Event
from streams.flow.batch import Batcher, BatchKeys
from streams.flow.concurrency import ConcurrencySlots, Limit
from streams.flow.debounce import DebounceKeys, Debouncer
from streams.flow.ratelimit import RateLimiter, Verdict
from streams.flow.throttle import ThrottleKeys, Throttler

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[tuple[aioredis.Redis, str]]:
    client = aioredis.Redis.from_url(redis_url)
    prefix = f"t{uuid.uuid4().hex[:10]}"
    yield client, prefix
    keys = [k async for k in client.scan_iter(f"{prefix}:*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def limit(prefix: str, name: str, size: int) -> Limit:
    return Limit(limit=size, holders=f"{prefix}:{name}:h", waiting=f"{prefix}:{name}:w",
                 wexp=f"{prefix}:{name}:x")


async def test_concurrency_grants_up_to_the_limit_then_queues(store: tuple) -> None:
    client, prefix = store
    slots = ConcurrencySlots(client, lease_ms=10_000, poll_ms=100)
    fn = [limit(prefix, "fn", 2)]

    granted = [(await slots.acquire(fn, holder=f"r{i}:1", waiter=f"r{i}:", score=i)).granted
               for i in range(3)]

    assert granted == [True, True, False]
    again = await slots.acquire(fn, holder="r0:1", waiter="r0:", score=0)
    assert again.granted  # a redelivered dispatch keeps its own slot, takes no second one
    assert await client.zcard(fn[0].holders) == 2


async def test_a_freed_slot_goes_to_the_head_of_the_queue_not_to_a_newcomer(
        store: tuple) -> None:
    client, prefix = store
    slots = ConcurrencySlots(client, lease_ms=10_000, poll_ms=100)
    fn = [limit(prefix, "fn", 1)]
    assert (await slots.acquire(fn, holder="a:1", waiter="a:", score=100)).granted
    queued = await slots.acquire(fn, holder="b:1", waiter="b:", score=200)
    assert not queued.granted and queued.queued

    await slots.release(fn, "a:1")
    newcomer = await slots.acquire(fn, holder="c:1", waiter="c:", score=300)
    head = await slots.acquire(fn, holder="b:2", waiter="b:", score=200)

    assert not newcomer.granted and head.granted


async def test_priority_lets_a_later_run_go_first(store: tuple) -> None:
    client, prefix = store
    slots = ConcurrencySlots(client, lease_ms=10_000, poll_ms=100)
    fn = [limit(prefix, "fn", 1)]
    assert (await slots.acquire(fn, holder="a:1", waiter="a:", score=100)).granted
    await slots.acquire(fn, holder="low:1", waiter="low:", score=200)
    await slots.acquire(fn, holder="high:1", waiter="high:", score=250 - 60_000)

    await slots.release(fn, "a:1")

    assert not (await slots.acquire(fn, holder="low:2", waiter="low:", score=200)).granted
    assert (await slots.acquire(fn, holder="high:2", waiter="high:", score=-59_750)).granted


async def test_a_lapsed_lease_gives_the_slot_back(store: tuple) -> None:
    client, prefix = store
    slots = ConcurrencySlots(client, lease_ms=300, poll_ms=100)
    fn = [limit(prefix, "fn", 1)]
    assert (await slots.acquire(fn, holder="dead:1", waiter="dead:", score=1)).granted
    assert not (await slots.acquire(fn, holder="b:1", waiter="b:", score=2)).granted

    await asyncio.sleep(0.5)  # the holder's worker died: no renewal

    assert (await slots.acquire(fn, holder="b:2", waiter="b:", score=2)).granted
    assert await slots.renew(fn, "dead:1") == 1  # it lost its lease


async def test_a_renewed_lease_outlives_its_first_expiry(store: tuple) -> None:
    client, prefix = store
    slots = ConcurrencySlots(client, lease_ms=300, poll_ms=100)
    fn = [limit(prefix, "fn", 1)]
    assert (await slots.acquire(fn, holder="a:1", waiter="a:", score=1)).granted
    for _ in range(4):
        await asyncio.sleep(0.15)
        assert await slots.renew(fn, "a:1") == 0

    assert not (await slots.acquire(fn, holder="b:1", waiter="b:", score=2)).granted


async def test_every_limit_must_have_room_and_only_full_ones_queue(store: tuple) -> None:
    client, prefix = store
    slots = ConcurrencySlots(client, lease_ms=10_000, poll_ms=100)
    tenant_a = [limit(prefix, "fn", 3), limit(prefix, "tenant-a", 1)]
    tenant_b = [limit(prefix, "fn", 3), limit(prefix, "tenant-b", 1)]
    assert (await slots.acquire(tenant_a, holder="a1:1", waiter="a1:", score=1)).granted

    blocked = await slots.acquire(tenant_a, holder="a2:1", waiter="a2:", score=2)
    other = await slots.acquire(tenant_b, holder="b1:1", waiter="b1:", score=3)

    assert not blocked.granted and other.granted  # a2 waits only in tenant a's queue
    assert await client.zcard(tenant_a[0].waiting) == 0
    assert await client.zcard(tenant_a[1].waiting) == 1
    assert await client.zcard(tenant_a[0].holders) == 2  # a2 took no function-level slot


async def test_keep_holds_the_slot_only_while_no_one_waits_ahead(store: tuple) -> None:
    client, prefix = store
    slots = ConcurrencySlots(client, lease_ms=10_000, poll_ms=100)
    fn = [limit(prefix, "fn", 1)]
    assert (await slots.acquire(fn, holder="a:1", waiter="a:", score=100)).granted
    assert (await slots.acquire(fn, holder="a:1", waiter="a:", score=100, keep=True)).granted
    await slots.acquire(fn, holder="young:1", waiter="young:", score=500)
    assert (await slots.acquire(fn, holder="a:1", waiter="a:", score=100, keep=True)).granted

    await slots.acquire(fn, holder="old:1", waiter="old:", score=50)

    assert not (await slots.acquire(fn, holder="a:1", waiter="a:", score=100,
                                    keep=True)).granted


async def test_throttle_spaces_starts_and_queues_the_rest(store: tuple) -> None:
    client, prefix = store
    throttle = Throttler(client)
    keys = ThrottleKeys(*(f"{prefix}:{part}" for part in ("tat", "w", "x", "a")))

    answers = [await throttle.admit(keys, interval_ms=1000, burst=1, run_id=f"r{i}", score=i)
               for i in range(3)]

    assert [a.granted for a in answers] == [True, False, False]
    first_due = answers[1].retry_at
    assert answers[2].retry_at - first_due >= 900  # the third waits one interval more
    again = await throttle.admit(keys, interval_ms=1000, burst=1, run_id="r0", score=0)
    assert again.granted  # a redelivered first dispatch takes no second token
    await asyncio.sleep(max(0, first_due / 1000 - time.time()) + 0.05)
    assert (await throttle.admit(keys, interval_ms=1000, burst=1, run_id="r1", score=1)).granted
    assert not (await throttle.admit(keys, interval_ms=1000, burst=1, run_id="r2",
                                     score=2)).granted


async def test_throttle_burst_lets_several_start_back_to_back(store: tuple) -> None:
    client, prefix = store
    throttle = Throttler(client)
    keys = ThrottleKeys(*(f"{prefix}:{part}" for part in ("tat", "w", "x", "a")))

    answers = [await throttle.admit(keys, interval_ms=60_000, burst=3, run_id=f"r{i}",
                                    score=i) for i in range(4)]

    assert [a.granted for a in answers] == [True, True, True, False]


async def test_rate_limit_drops_over_the_limit_and_answers_a_redelivery_the_same(
        store: tuple) -> None:
    client, prefix = store
    rates = RateLimiter(client)

    async def decide(run: str) -> Verdict:
        return await rates.decide(f"{prefix}:a", f"{prefix}:d", run_id=run, limit=2,
                                  period_ms=60_000)

    first = [await decide(r) for r in ("r1", "r2", "r3")]
    again = [await decide(r) for r in ("r1", "r3")]

    assert first == [Verdict.ADMITTED, Verdict.ADMITTED, Verdict.DROPPED]
    assert again == [Verdict.ADMITTED_BEFORE, Verdict.DROPPED_BEFORE]


async def test_rate_limit_window_slides(store: tuple) -> None:
    client, prefix = store
    rates = RateLimiter(client)
    args = {"limit": 1, "period_ms": 300}

    assert (await rates.decide(f"{prefix}:a", f"{prefix}:d", run_id="r1", **args)).admitted
    assert not (await rates.decide(f"{prefix}:a", f"{prefix}:d", run_id="r2", **args)).admitted
    await asyncio.sleep(0.4)
    assert (await rates.decide(f"{prefix}:a", f"{prefix}:d", run_id="r3", **args)).admitted


async def test_debounce_keeps_the_newest_event(store: tuple) -> None:
    client, prefix = store
    debounce = Debouncer(client)
    keys = DebounceKeys(f"{prefix}:l", f"{prefix}:s", f"{prefix}:f")

    e1 = await debounce.push(keys, event_id="e1", event_ts=100, period_ms=60_000)
    e3 = await debounce.push(keys, event_id="e3", event_ts=300, period_ms=60_000)
    e2 = await debounce.push(keys, event_id="e2", event_ts=200, period_ms=60_000)  # late

    assert e1.timer_due is not None and e1.superseded == 0
    assert e3.timer_due is not None and e3.superseded == 1
    assert e2.timer_due is None and e2.superseded == 1
    assert not await debounce.fire(keys, event_id="e1")
    assert await debounce.fire(keys, event_id="e3")
    assert await debounce.fire(keys, event_id="e3")  # a redelivered timer: the same run again
    redelivered = await debounce.push(keys, event_id="e3", event_ts=300, period_ms=60_000)
    assert redelivered.timer_due is None  # fired already: no second run


def event(n: int) -> Event:
    return Event(id=f"e{n}", name="x", data_json=f'{{"n":{n}}}', ts=n)


async def test_batches_close_when_full_or_when_their_timer_fires(store: tuple) -> None:
    client, prefix = store
    batcher = Batcher(client)
    keys = BatchKeys(*(f"{prefix}:{part}" for part in ("m", "i", "s", "o", "c", "ca")))

    added = [await batcher.add(keys, event(n), max_size=3, timeout_ms=5000) for n in range(5)]

    assert added[0].timer_due is not None and added[0].batch == "e0"
    assert added[2].closed == [event(0), event(1), event(2)]
    assert added[3].timer_due is not None and added[3].batch == "e3"
    again = await batcher.add(keys, event(1), max_size=3, timeout_ms=5000)
    assert again.closed == [event(0), event(1), event(2)]  # redelivered: the same batch
    assert await batcher.fire(keys, "e3", timeout_ms=5000) == [event(3), event(4)]
    assert await batcher.fire(keys, "e0", timeout_ms=5000) == [event(0), event(1), event(2)]
    fresh = await batcher.add(keys, event(9), max_size=3, timeout_ms=5000)
    assert fresh.batch == "e9" and fresh.timer_due is not None
