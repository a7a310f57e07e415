"""Pausing a function: the functions table, and its read model in Redis.

The source of truth is Kafka. A pause (or resume) is a ``FunctionControl`` produced to
every partition of the runs topic; each orchestrator task applies it in order with its
runs' other messages and keeps it in its ``functions`` table (a store on a compacted
changelog), so the pause holds from that offset on, in the same transactions as the
runs it holds back, and survives any worker's death. While a function is paused the
machine parks what its runs would dispatch (``streams.machine.resume``), and the
executor ends an eager chain before its next step (``until_paused``); a resume
dispatches, per partition, the held runs in the order they started.

Of two requests the later one (by ``ts``) holds on every partition, whatever order the
partitions received them in. Redis holds a copy for ``GET /v1/functions`` only: written
after every partition has the request, and written again from the table by each task
once it is restored (the rebuild path).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from schemas.messages import FunctionControl, RunState
from stepstream.step import ChainBudget
from streams.kafka.store import StateStore
from streams.machine import is_held

FUNCTIONS = "functions"
"""The name of the functions table: one ``FunctionControl`` per function id, and, on the
partition that starts a cron function's ticks, its ``ScheduleState`` (``streams.schedules``)."""


def paused(table: StateStore[FunctionControl], function_id: str) -> bool:
    """Whether ``function_id`` is paused, as this task's table says."""
    control = table.get(function_id.encode())
    return control is not None and control.paused


def until_paused(chain: ChainBudget, table: StateStore[FunctionControl],
                 function_id: str) -> ChainBudget:
    """``chain``, ended before its next step once the function is paused: the step that
    runs finishes, the rest waits for the resume."""
    before = chain.allow

    async def allow() -> bool:
        return not paused(table, function_id) and (before is None or await before())

    return replace(chain, allow=allow)


def apply_control(table: StateStore[FunctionControl], control: FunctionControl) -> bool:
    """Keep ``control`` unless a later request is known; whether it was kept."""
    key = control.function_id.encode()
    known = table.get(key)
    if known is not None and known.ts >= control.ts:
        return False  # a duplicate, or overtaken by a later request
    table.put(key, control)
    return True


def held_runs(runs: StateStore[RunState], function_id: str,
              skip: Callable[[Exception], None]) -> list[RunState]:
    """The runs of ``function_id`` a pause holds back, oldest first.

    A scan of the partition's runs: a resume is rare, and an index kept beside every
    run would cost at every message."""
    return sorted((state for _, state in runs.current_values(skip)
                   if state.function_id == function_id and is_held(state)),
                  key=lambda state: (state.started_at, state.run_id))


_SET_NEWER = """
local known = redis.call('HGET', KEYS[1], ARGV[1])
if known and tonumber(cjson.decode(known)['ts']) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


class PauseBoard:
    """The read model of paused functions: one Redis hash, function id -> state."""

    def __init__(self, redis: Any, namespace: str) -> None:
        self.redis = redis
        self.key = f"{namespace}:functions:control"
        self._set = redis.register_script(_SET_NEWER)

    async def record(self, controls: Iterable[FunctionControl]) -> None:
        """Write each state unless a later one is there already."""
        for control in controls:
            doc = json.dumps({"paused": control.paused, "ts": control.ts})
            await self._set(keys=[self.key], args=[control.function_id, doc, control.ts])

    async def states(self) -> dict[str, dict[str, Any]]:
        """Function id -> ``{"paused": bool, "ts": epoch ms}`` for every function ever
        paused (absent: never paused)."""
        raw = await self.redis.hgetall(self.key)
        return {_text(k): json.loads(v) for k, v in raw.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
