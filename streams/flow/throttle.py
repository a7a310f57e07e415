"""Throttle: at most ``limit`` run starts per ``period`` per key value, spread evenly.

GCRA (the generic cell rate algorithm, as Inngest's throttle): one start every
``period / limit``, ``burst`` of them back to back. The state is one number per key
value, the theoretical arrival time (``tat``). Runs over the limit queue (ordered by
``priority``) and come back when their turn is due, which the script computes from
their place in the queue. A run that was let through is remembered for a while
(``admitted``), so a redelivered first dispatch takes no second token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streams.flow.queue import LAPSE_GRACE_MS, PRELUDE

REMEMBER_MS = 10 * 60 * 1000
"""How long a run let through is remembered (at least the period)."""

_ADMIT = PRELUDE + """
-- KEYS: tat, waiting, wexp, admitted
-- ARGV: interval_ms, burst, run id, score, remember_ms, grace_ms
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local member, score = ARGV[3], ARGV[4]
local remember, grace = tonumber(ARGV[5]), tonumber(ARGV[6])
local now = now_ms()
local ttl = remember + interval * burst
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - remember)
if redis.call('ZSCORE', KEYS[4], member) then
  return {1, 0, 0}
end
trim_waiters(KEYS[2], KEYS[3], now)
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local earliest = tat - interval * (burst - 1)
local available = 0
if now >= earliest then
  available = math.min(burst, math.floor((now - earliest) / interval) + 1)
end
local rank = ahead(KEYS[2], score)
if available > rank then
  redis.call('SET', KEYS[1], tat + interval, 'PX', ttl)
  redis.call('ZADD', KEYS[4], now, member)
  redis.call('PEXPIRE', KEYS[4], ttl)
  dequeue(KEYS[2], KEYS[3], member)
  return {1, 0, 0}
end
-- The runs ahead take the next starts; this one's is `rank` intervals after the first.
local due = math.max(earliest + rank * interval, now + 1)
local added = enqueue(KEYS[2], KEYS[3], member, score, due + grace, ttl)
return {0, due, added}
"""


@dataclass(frozen=True, slots=True)
class ThrottleAnswer:
    """Whether the run may start now; if not, when its turn is due."""

    granted: bool
    retry_at: int = 0
    queued: bool = False
    """It joined the queue now (so a run is counted as throttled once)."""


@dataclass(frozen=True, slots=True)
class ThrottleKeys:
    """The keys of one throttle key value."""

    tat: str
    waiting: str
    wexp: str
    admitted: str


class Throttler:
    """The throttle script, registered on one Redis client."""

    def __init__(self, redis: Any) -> None:
        self._admit = redis.register_script(_ADMIT)

    async def admit(self, keys: ThrottleKeys, *, interval_ms: int, burst: int, run_id: str,
                    score: int, remember_ms: int = REMEMBER_MS) -> ThrottleAnswer:
        """Let ``run_id`` start, or queue it and say when to come back."""
        granted, retry_at, added = await self._admit(
            keys=[keys.tat, keys.waiting, keys.wexp, keys.admitted],
            args=[max(1, interval_ms), burst, run_id, score, max(remember_ms, interval_ms),
                  LAPSE_GRACE_MS])
        return ThrottleAnswer(granted=bool(granted), retry_at=int(retry_at),
                              queued=bool(added))
