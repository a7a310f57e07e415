"""Concurrency slots: at most ``limit`` step executions per key value, across workers.

Each limit value keeps ``holders``, a sorted set of the dispatches holding a slot
(member ``{run id}:{seq}``, score: when the lease lapses), and the waiting queue of
``streams.flow.queue``. A slot is a lease: the executor renews it while the step runs,
and a killed worker's slot comes back when its lease lapses. A dispatch delivered twice
has the same member, so it holds one slot, never two.

A dispatch must get a slot from every limit of its function at once (a function-level
limit and per-key ones): it takes all of them, or none and waits in the queues of those
that are full (only those, so a run held back by its tenant's limit does not hold back
other tenants at the function-level limit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streams.flow.queue import LAPSE_GRACE_MS, PRELUDE

_ACQUIRE = PRELUDE + """
-- KEYS: holders, waiting, wexp for each limit
-- ARGV: lease_ms, mode ('acquire' | 'keep'), holder, waiter, score, poll_ms, grace_ms,
--       limit for each limit
local lease, mode, holder = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local waiter, score = ARGV[4], ARGV[5]
local poll, grace = tonumber(ARGV[6]), tonumber(ARGV[7])
local now = now_ms()
local ttl = math.max(lease * 3, 600000)
local n = #KEYS / 3
local ok, ranks, all = {}, {}, true
for i = 1, n do
  local holders, waiting, wexp = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
  trim_waiters(waiting, wexp, now)
  local held = redis.call('ZSCORE', holders, holder)
  if held and mode == 'acquire' then
    ok[i], ranks[i] = true, 0  -- a redelivered dispatch: the slot is already its own
  else
    local others = redis.call('ZCARD', holders) - (held and 1 or 0)
    ranks[i] = ahead(waiting, score)
    ok[i] = tonumber(ARGV[7 + i]) - others > ranks[i]
  end
  all = all and ok[i]
end
if all then
  for i = 1, n do
    redis.call('ZADD', KEYS[3 * i - 2], now + lease, holder)
    redis.call('PEXPIRE', KEYS[3 * i - 2], ttl)
    dequeue(KEYS[3 * i - 1], KEYS[3 * i], waiter)
  end
  return {1, 0, 0}
end
if mode == 'keep' then
  return {0, 0, 0}  -- the chain stops; its slot goes when the dispatch ends
end
local wait = poll
for i = 1, n do
  if not ok[i] then
    wait = math.max(wait, poll * (1 + math.floor(ranks[i] / tonumber(ARGV[7 + i]))))
  end
end
wait = math.min(wait, poll * 8)
local added = 0
for i = 1, n do
  if ok[i] then
    dequeue(KEYS[3 * i - 1], KEYS[3 * i], waiter)
  else
    added = added + enqueue(KEYS[3 * i - 1], KEYS[3 * i], waiter, score,
                            now + wait + grace, ttl)
  end
end
return {0, now + wait, added}
"""

_RENEW = PRELUDE + """
-- KEYS: holders for each limit; ARGV: lease_ms, holder. Returns the leases lost.
local lease, holder = tonumber(ARGV[1]), ARGV[2]
local now = now_ms()
local lost = 0
for _, holders in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
  if redis.call('ZSCORE', holders, holder) then
    redis.call('ZADD', holders, now + lease, holder)
    redis.call('PEXPIRE', holders, math.max(lease * 3, 600000))
  else
    lost = lost + 1
  end
end
return lost
"""

_RELEASE = """
for _, holders in ipairs(KEYS) do
  redis.call('ZREM', holders, ARGV[1])
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Limit:
    """One concurrency limit as it applies to one dispatch."""

    limit: int
    holders: str
    waiting: str
    wexp: str


@dataclass(frozen=True, slots=True)
class SlotAnswer:
    """Whether the dispatch got its slots; if not, when to check again."""

    granted: bool
    retry_at: int = 0
    queued: bool = False
    """It joined a queue it was not in yet (counted once per wait)."""


class ConcurrencySlots:
    """The concurrency scripts, registered on one Redis client."""

    def __init__(self, redis: Any, *, lease_ms: int, poll_ms: int) -> None:
        self.lease_ms = lease_ms
        self.poll_ms = poll_ms
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def acquire(self, limits: Sequence[Limit], *, holder: str, waiter: str, score: int,
                      keep: bool = False) -> SlotAnswer:
        """Take a slot of every limit for ``holder`` (or, with ``keep``, hold on to it).

        ``keep`` is asked before each further step of an eager chain: the holder keeps
        its slots only if no waiter is ahead of it; it never queues.
        """
        keys = [k for lim in limits for k in (lim.holders, lim.waiting, lim.wexp)]
        args = [self.lease_ms, "keep" if keep else "acquire", holder, waiter, score,
                self.poll_ms, LAPSE_GRACE_MS, *(lim.limit for lim in limits)]
        granted, retry_at, added = await self._acquire(keys=keys, args=args)
        return SlotAnswer(granted=bool(granted), retry_at=int(retry_at), queued=bool(added))

    async def renew(self, limits: Sequence[Limit], holder: str) -> int:
        """Extend the holder's leases; returns how many had lapsed already (lost)."""
        return int(await self._renew(keys=[lim.holders for lim in limits],
                                     args=[self.lease_ms, holder]))

    async def release(self, limits: Sequence[Limit], holder: str) -> None:
        """Give the holder's slots back."""
        await self._release(keys=[lim.holders for lim in limits], args=[holder])
