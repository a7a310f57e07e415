"""Functions of the live-stream tests: steps that wait for the test to let them finish,
saying their progress meanwhile."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import redis.asyncio as aioredis

from stepstream import Context, NonRetriableError, Stepstream

ss = Stepstream(app_id="tests-live")
STEPS = 3


def gate_key(namespace: str, run_id: str, step: int) -> str:
    """The key the test sets to let step ``s{step}`` of ``run_id`` finish."""
    return f"{namespace}:gate:{run_id}:{step}"


@ss.function(id="gated", trigger="test/gated")
async def gated(ctx: Context) -> dict[str, Any]:
    """``STEPS`` steps; each reports progress in a tight loop until its gate opens."""
    namespace = os.environ["STEPSTREAM_NAMESPACE"]

    async def through_the_gate(step: int) -> int:
        client = aioredis.Redis.from_url(os.environ["STEPSTREAM_REDIS_URL"])
        try:
            spins = 0
            while not await client.exists(gate_key(namespace, ctx.run_id, step)):
                spins += 1
                ctx.progress(0.5, f"waiting at gate {step} ({spins})")  # a flood, coalesced
                await asyncio.sleep(0.01)
            ctx.progress(1.0, "through")
            return step
        finally:
            await client.aclose()

    total = 0
    for step in range(STEPS):
        total += await ctx.step.run(f"s{step}", through_the_gate, step)
    return {"total": total}


@ss.function(id="doomed", trigger="test/doomed")
async def doomed(ctx: Context) -> None:
    """One step that succeeds, one that fails for good."""
    await ctx.step.run("fine", lambda: "ok")

    def fail() -> None:
        raise NonRetriableError("no way")

    await ctx.step.run("broken", fail)
