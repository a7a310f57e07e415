"""Rate limit: at most ``limit`` runs start in any window of ``period`` per key value.

A sliding log: ``admitted`` holds the runs let through (scored by time), ``dropped``
the ones refused. Both are keyed by run id, so an event delivered twice gets the same
answer and takes no second token. Entries are kept for the period (or ten minutes,
whichever is longer) so that a redelivery within that time is recognised.
"""

from __future__ import annotations

import enum
from typing import Any

REMEMBER_MS = 10 * 60 * 1000

_DECIDE = """
-- KEYS: admitted, dropped; ARGV: run id, limit, period_ms, remember_ms
local member, limit = ARGV[1], tonumber(ARGV[2])
local period, remember = tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - remember)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - remember)
if redis.call('ZSCORE', KEYS[1], member) then return 2 end
if redis.call('ZSCORE', KEYS[2], member) then return -1 end
local key = KEYS[2]
local answer = 0
if redis.call('ZCOUNT', KEYS[1], '(' .. (now - period), '+inf') < limit then
  key, answer = KEYS[1], 1
end
redis.call('ZADD', key, now, member)
redis.call('PEXPIRE', key, remember)
return answer
"""


class Verdict(enum.Enum):
    """What the rate limit says about a run."""

    ADMITTED = 1
    ADMITTED_BEFORE = 2
    DROPPED = 0
    DROPPED_BEFORE = -1

    @property
    def admitted(self) -> bool:
        """Whether the run starts."""
        return self in (Verdict.ADMITTED, Verdict.ADMITTED_BEFORE)


class RateLimiter:
    """The rate-limit script, registered on one Redis client."""

    def __init__(self, redis: Any) -> None:
        self._decide = redis.register_script(_DECIDE)

    async def decide(self, admitted_key: str, dropped_key: str, *, run_id: str, limit: int,
                     period_ms: int) -> Verdict:
        """Admit or drop ``run_id``; the same run always gets the same verdict."""
        answer = await self._decide(keys=[admitted_key, dropped_key],
                                    args=[run_id, limit, period_ms,
                                          max(REMEMBER_MS, period_ms)])
        return Verdict(int(answer))
