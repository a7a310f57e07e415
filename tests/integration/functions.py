"""Functions the integration tests run in real worker processes.

Every step records each execution in Redis (``{namespace}:exec:{run}:{step}``),
a record independent of the engine's own history, so tests can count how often
a step really ran.
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from typing import Any

import redis

from stepstream import Context, NonRetriableError, RetryPolicy, Stepstream

ss = Stepstream(app_id="tests")
_FAST = RetryPolicy(retries=3, initial=timedelta(milliseconds=300), factor=3.0, jitter=0.0)


def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["STEPSTREAM_REDIS_URL"])


def executions_key(namespace: str, run_id: str, step_id: str) -> str:
    """Where a step's executions are counted."""
    return f"{namespace}:exec:{run_id}:{step_id}"


def executions(store: redis.Redis, namespace: str, run_ids: list[str], steps: int) -> int:
    """Executions of the chain steps ``s0`` .. ``s{steps-1}`` of ``run_ids``, all counted."""
    keys = [executions_key(namespace, r, f"s{i}") for r in run_ids for i in range(steps)]
    return sum(int(v or 0) for v in store.mget(keys))


def record_execution(run_id: str, step_id: str) -> int:
    """Count one execution of a step; returns how many there were, this one included."""
    key = executions_key(os.environ["STEPSTREAM_NAMESPACE"], run_id, step_id)
    return int(_redis().incr(key))


@ss.function(id="flaky", trigger="test/flaky", retry=_FAST)
async def flaky(ctx: Context) -> dict[str, Any]:
    """Step two fails twice, then succeeds; its output feeds step three."""
    run_id = ctx.run_id

    def prepare() -> dict[str, int]:
        record_execution(run_id, "prepare")
        return {"base": 40}

    def unreliable(base: int) -> int:
        if record_execution(run_id, "unreliable") <= 2:
            raise ConnectionError("the flaky API said no")
        return base + 2

    def finish(value: int) -> str:
        record_execution(run_id, "finish")
        return f"answer={value}"

    prepared = await ctx.step.run("prepare", prepare)
    value = await ctx.step.run("unreliable", unreliable, prepared["base"])
    return {"result": await ctx.step.run("finish", finish, value)}


@ss.function(id="doomed", trigger="test/doomed", retry=RetryPolicy(
    retries=2, initial=timedelta(milliseconds=100), jitter=0.0))
async def doomed(ctx: Context) -> None:
    """A step that always fails: the run fails after retries + 1 attempts."""

    def never_works() -> None:
        record_execution(ctx.run_id, "never-works")
        raise RuntimeError("the database is on fire")

    await ctx.step.run("never-works", never_works)


@ss.function(id="hopeless", trigger="test/hopeless", retries=5)
async def hopeless(ctx: Context) -> None:
    """A NonRetriableError fails the step at once, whatever the retries."""

    def reject() -> None:
        record_execution(ctx.run_id, "reject")
        raise NonRetriableError("this input can never work")

    await ctx.step.run("reject", reject)


@ss.function(id="chain", trigger="test/chain", retries=2)
async def chain(ctx: Context) -> dict[str, Any]:
    """``steps`` steps in a row, each sleeping ``pause`` seconds (``pauses``: per step id);
    for crash and lease tests."""
    total, data = 0, ctx.event.data
    for i in range(int(data.get("steps", 5))):
        pause = float(data.get("pauses", {}).get(f"s{i}", data.get("pause", 0.0)))
        total = await ctx.step.run(f"s{i}", _slow_add, ctx.run_id, f"s{i}", total, pause)
    return {"total": total}


async def _slow_add(run_id: str, step_id: str, total: int, pause: float) -> int:
    record_execution(run_id, step_id)
    await asyncio.sleep(pause)
    return total + 1


def release_key(namespace: str) -> str:
    """Set it and the ``held`` runs' steps end."""
    return f"{namespace}:release"


@ss.function(id="held", trigger="test/held")
async def held(ctx: Context) -> str:
    """One step that ends once the test sets ``release_key``."""
    async def wait_for_release() -> str:
        record_execution(ctx.run_id, "s0")
        while not _redis().exists(release_key(os.environ["STEPSTREAM_NAMESPACE"])):
            await asyncio.sleep(0.05)
        return "released"

    return await ctx.step.run("s0", wait_for_release)


@ss.function(id="bulky", trigger="test/bulky", retries=2)
async def bulky(ctx: Context) -> int:
    """Steps that each return ``size`` bytes of text (``sizes``: one per step)."""
    sizes = [int(size) for size in ctx.event.data["sizes"]]
    for i, size in enumerate(sizes):
        await ctx.step.run(f"b{i}", lambda n=size: "x" * n)
    return len(sizes)
