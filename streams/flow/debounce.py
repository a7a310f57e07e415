"""Debounce: per key value, keep the last event until no newer one came for the period.

``latest`` (a hash: ``id``, ``ts``, ``due``) is the event waiting to start a run. Each
event that becomes the latest sets a timer (a ``FlowTimer`` through the delay topics)
at ``due``; when a timer fires and its event is still the latest, the run starts with
it. A newer event replaces the latest and sets its own timer, so the earlier timer
finds another event and does nothing. "Newer" is the greater event ``ts`` (ties: the
later arrival), so events processed out of order by several workers settle on the
same one.

Idempotency: ``seen`` remembers events for ten minutes (a redelivered event changes
nothing, but sets its timer again if it is still the latest, in case the first was
lost); ``fired`` remembers the timers that started a run (a redelivered timer starts
it again: the same run id, so the same run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

REMEMBER_MS = 10 * 60 * 1000

_CLOCK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

_PUSH = _CLOCK + """
-- KEYS: latest, seen, fired; ARGV: event id, event ts, period_ms, remember_ms
local id, ts = ARGV[1], tonumber(ARGV[2])
local period, remember = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - remember)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - remember)
local current = redis.call('HMGET', KEYS[1], 'id', 'ts', 'due')
if redis.call('ZSCORE', KEYS[2], id) then
  if current[1] == id then return {1, tonumber(current[3]), 0} end
  return {0, 0, 0}
end
redis.call('ZADD', KEYS[2], now, id)
redis.call('PEXPIRE', KEYS[2], remember)
if current[1] and tonumber(current[2]) > ts then
  return {0, 0, 1}  -- older than the event already waiting: superseded at once
end
local due = now + period
redis.call('HSET', KEYS[1], 'id', id, 'ts', ts, 'due', due)
redis.call('PEXPIRE', KEYS[1], period + remember)
return {1, due, current[1] and 1 or 0}
"""

_FIRE = _CLOCK + """
-- KEYS: latest, seen, fired; ARGV: the timer's event id, remember_ms
local token, remember = ARGV[1], tonumber(ARGV[2])
if redis.call('HGET', KEYS[1], 'id') == token then
  redis.call('DEL', KEYS[1])
  redis.call('ZADD', KEYS[3], now, token)
  redis.call('PEXPIRE', KEYS[3], remember)
  return 1
end
if redis.call('ZSCORE', KEYS[3], token) then return 1 end
return 0
"""


@dataclass(frozen=True, slots=True)
class Pushed:
    """What an event did to its debounce."""

    timer_due: int | None
    """Set a timer for this event at this time; None: it is not (or no longer) the latest."""
    superseded: int
    """Events that will start no run because of this one (0 or 1)."""


@dataclass(frozen=True, slots=True)
class DebounceKeys:
    """The keys of one debounce key value."""

    latest: str
    seen: str
    fired: str


class Debouncer:
    """The debounce scripts, registered on one Redis client."""

    def __init__(self, redis: Any) -> None:
        self._push = redis.register_script(_PUSH)
        self._fire = redis.register_script(_FIRE)

    async def push(self, keys: DebounceKeys, *, event_id: str, event_ts: int,
                   period_ms: int) -> Pushed:
        """Record an event; says whether to set a timer for it."""
        timer, due, superseded = await self._push(
            keys=[keys.latest, keys.seen, keys.fired],
            args=[event_id, event_ts, period_ms, REMEMBER_MS])
        return Pushed(timer_due=int(due) if timer else None, superseded=int(superseded))

    async def fire(self, keys: DebounceKeys, *, event_id: str) -> bool:
        """Whether the timer of ``event_id`` starts its run (it is still the latest)."""
        return bool(await self._fire(keys=[keys.latest, keys.seen, keys.fired],
                                     args=[event_id, REMEMBER_MS]))
