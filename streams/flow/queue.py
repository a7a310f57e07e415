"""Lua shared by the scripts that queue runs (concurrency, throttle): the clock and
the waiting queues that ``priority`` orders.

A limit with runs waiting keeps two sorted sets: ``waiting`` (member: who waits, score:
its place, ``streams.flow.keys.queue_score``) and ``wexp`` (member: who waits, score:
when its entry lapses). A waiter that stops coming back (its run was cancelled, or it
got its slot through another limit) lapses a few seconds after its next check was due,
so it cannot block the queue; one that was only late is put back at the same place,
since its place derives from the run.

The rule a waiter meets to go: fewer runs wait ahead of it than there are free slots
(or tokens). So a higher-priority run queued behind a limit goes first, and a newcomer
takes a free slot only if no one is waiting ahead of it.
"""

from __future__ import annotations

LAPSE_GRACE_MS = 5000
"""How long past its next check a waiting entry lives."""

PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Drop the waiters whose entry lapsed.
local function trim_waiters(waiting, wexp, now)
  local lapsed = redis.call('ZRANGEBYSCORE', wexp, '-inf', now)
  for _, member in ipairs(lapsed) do
    redis.call('ZREM', waiting, member)
  end
  if #lapsed > 0 then
    redis.call('ZREMRANGEBYSCORE', wexp, '-inf', now)
  end
end

-- How many wait ahead of a waiter whose place is `score` (a string, exclusive).
local function ahead(waiting, score)
  return redis.call('ZCOUNT', waiting, '-inf', '(' .. score)
end

-- Queue (or keep queued, at its first place) `member` until `lapse`; 1 if it is new.
local function enqueue(waiting, wexp, member, score, lapse, ttl)
  local added = redis.call('ZADD', waiting, 'NX', score, member)
  redis.call('ZADD', wexp, lapse, member)
  redis.call('PEXPIRE', waiting, ttl)
  redis.call('PEXPIRE', wexp, ttl)
  return added
end

local function dequeue(waiting, wexp, member)
  redis.call('ZREM', waiting, member)
  redis.call('ZREM', wexp, member)
end
"""
