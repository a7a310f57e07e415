"""Batching: one run per ``max_size`` events, or per whatever came within ``timeout``.

Per key value: ``meta`` (a hash: ``open``, the id of the batch's first event, which
names the batch, and ``due``), ``items`` (the open batch's events, JSON). The first
event of a batch sets a timer at ``due``; the batch closes when it is full or when its
timer fires, whichever comes first. A closed batch is kept in ``closed`` for ten
minutes, so a redelivered timer or event that closed it gets the same batch back (and
starts the same run, named by the batch). ``of`` maps each event to its batch, so an
event delivered twice is in one batch once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from schemas.messages import Event

REMEMBER_MS = 10 * 60 * 1000

_COMMON = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- KEYS: meta, items, seen, of, closed, closed_at
local remember = tonumber(ARGV[1])

local function close(batch)
  local body = '[' .. table.concat(redis.call('LRANGE', KEYS[2], 0, -1), ',') .. ']'
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[5], batch, body)
  redis.call('ZADD', KEYS[6], now, batch)
  redis.call('PEXPIRE', KEYS[5], remember)
  redis.call('PEXPIRE', KEYS[6], remember)
  return body
end
"""

_ADD = _COMMON + """
-- ARGV: remember_ms, event id, event JSON, max_size, timeout_ms
local id, body, max_size, timeout = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
for _, old in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - remember)) do
  redis.call('HDEL', KEYS[4], old)
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - remember)
for _, old in ipairs(redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now - remember)) do
  redis.call('HDEL', KEYS[5], old)
end
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now - remember)
local batch = redis.call('HGET', KEYS[4], id)
if batch then  -- delivered again
  local closed = redis.call('HGET', KEYS[5], batch)
  if closed then return {'closed', batch, closed} end
  if batch == id then return {'opened', batch, redis.call('HGET', KEYS[1], 'due')} end
  return {'added', batch, ''}
end
batch = redis.call('HGET', KEYS[1], 'open')
local due = ''
if not batch then
  batch, due = id, tostring(now + timeout)
  redis.call('HSET', KEYS[1], 'open', id, 'due', due)
end
redis.call('ZADD', KEYS[3], now, id)
redis.call('HSET', KEYS[4], id, batch)
redis.call('RPUSH', KEYS[2], body)
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], remember + timeout) end
if redis.call('LLEN', KEYS[2]) >= max_size then
  return {'closed', batch, close(batch)}
end
if batch == id then return {'opened', batch, due} end
return {'added', batch, ''}
"""

_FIRE = _COMMON + """
-- ARGV: remember_ms, batch
local batch = ARGV[2]
if redis.call('HGET', KEYS[1], 'open') == batch then return close(batch) end
return redis.call('HGET', KEYS[5], batch) or ''
"""


@dataclass(frozen=True, slots=True)
class BatchKeys:
    """The keys of one batch key value."""

    meta: str
    items: str
    seen: str
    of: str
    closed: str
    closed_at: str

    def all(self) -> list[str]:
        """In the order the scripts expect them."""
        return [self.meta, self.items, self.seen, self.of, self.closed, self.closed_at]


@dataclass(frozen=True, slots=True)
class Added:
    """What an event did to its batch."""

    batch: str
    """The batch's name: the id of its first event."""
    timer_due: int | None = None
    """The event opened the batch: set the batch's timer at this time."""
    closed: list[Event] | None = None
    """The batch is full (closed by this event): start its run with these events."""


def event_json(event: Event) -> str:
    """An event as the batch keeps it."""
    return json.dumps({"id": event.id, "name": event.name, "data_json": event.data_json,
                       "ts": event.ts}, separators=(",", ":"))


def events_of(body: str) -> list[Event]:
    """The events of a closed batch."""
    return [Event(id=e["id"], name=e["name"], data_json=e["data_json"], ts=e["ts"])
            for e in json.loads(body)]


class Batcher:
    """The batching scripts, registered on one Redis client."""

    def __init__(self, redis: Any) -> None:
        self._add = redis.register_script(_ADD)
        self._fire = redis.register_script(_FIRE)

    async def add(self, keys: BatchKeys, event: Event, *, max_size: int,
                  timeout_ms: int) -> Added:
        """Put ``event`` in its key's open batch (opening one if there is none)."""
        outcome, batch, extra = await self._add(
            keys=keys.all(), args=[REMEMBER_MS + timeout_ms, event.id, event_json(event),
                                   max_size, timeout_ms])
        outcome, batch, extra = (_text(outcome), _text(batch), _text(extra))
        if outcome == "closed":
            return Added(batch=batch, closed=events_of(extra))
        if outcome == "opened" and extra:
            return Added(batch=batch, timer_due=int(extra))
        return Added(batch=batch)

    async def fire(self, keys: BatchKeys, batch: str, *, timeout_ms: int) -> list[Event]:
        """Close ``batch`` when its timer fires; its events (again, if it closed before)."""
        body = _text(await self._fire(keys=keys.all(), args=[REMEMBER_MS + timeout_ms, batch]))
        return events_of(body) if body else []


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
