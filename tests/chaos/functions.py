"""Functions the chaos tests run in real worker processes.

Every step execution inserts a row into ``executions`` in PostgreSQL (the test's own
schema; DSN in ``CHAOS_DATABASE_URL``): which run, which step, which worker process,
when. That table is written by the steps themselves, outside the engine, so the
checkers can count real executions without trusting the engine's own account. Redis
is not used here: the Redis-outage test runs these functions with Redis down.
"""

from __future__ import annotations

import asyncio
import collections
import os
from typing import Any

import psycopg

from stepstream import Context, Stepstream

ss = Stepstream(app_id="chaos")

SCHEMA = """
CREATE TABLE executions (
    id bigserial PRIMARY KEY,
    run_id text NOT NULL,
    step_id text NOT NULL,
    pid integer NOT NULL,
    at double precision NOT NULL DEFAULT extract(epoch FROM clock_timestamp())
)
"""


async def record_execution(run_id: str, step_id: str) -> None:
    """One row per execution of a step, committed before the step returns."""
    async with await psycopg.AsyncConnection.connect(os.environ["CHAOS_DATABASE_URL"],
                                                     autocommit=True) as conn:
        await conn.execute("INSERT INTO executions (run_id, step_id, pid) VALUES (%s, %s, %s)",
                           (run_id, step_id, os.getpid()))


async def _add_one(run_id: str, step_id: str, total: int, pause: float) -> int:
    await record_execution(run_id, step_id)
    await asyncio.sleep(pause)
    return total + 1


@ss.function(id="ledger", trigger="chaos/ledger", retries=5)
async def ledger(ctx: Context) -> dict[str, Any]:
    """``steps`` steps in a row; step ``s{i}`` returns ``i + 1`` from the previous output,
    so the run's output proves every step saw its predecessor's saved result."""
    total = 0
    for i in range(int(ctx.event.data["steps"])):
        total = await ctx.step.run(f"s{i}", _add_one, ctx.run_id, f"s{i}", total,
                                   float(ctx.event.data.get("pause", 0.0)))
    return {"total": total}


@ss.function(id="slow", trigger="chaos/slow")
async def slow(ctx: Context) -> dict[str, Any]:
    """One step that takes ``seconds``: it must not hold up other runs."""
    async def crawl() -> str:
        await record_execution(ctx.run_id, "crawl")
        await asyncio.sleep(float(ctx.event.data["seconds"]))
        return "done"

    return {"result": await ctx.step.run("crawl", crawl)}


_dispatches: collections.Counter[str] = collections.Counter()


@ss.function(id="fickle", trigger="chaos/fickle", eager=False)  # one step per dispatch
async def fickle(ctx: Context) -> list[str]:
    """Calls its two steps in another order on every dispatch (state outside steps: the
    replay contract broken on purpose)."""
    _dispatches[ctx.run_id] += 1
    order = ["a", "b"] if _dispatches[ctx.run_id] % 2 else ["b", "a"]

    async def note(step_id: str) -> str:
        await record_execution(ctx.run_id, step_id)
        return step_id

    return [await ctx.step.run(step_id, note, step_id) for step_id in order]
