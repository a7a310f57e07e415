"""A function for the secret-masking test: it gets a password in its event, returns a
token from a step, and has a step that fails until the test lets it pass (a Redis key), so
that a replay can be seen to hand the real password to the function again."""

from __future__ import annotations

import os
from typing import Any

import redis

from stepstream import Context, RetryPolicy, Stepstream

ss = Stepstream(app_id="secret-tests")


def open_key(namespace: str, run_id: str) -> str:
    """Set this key and ``guarded``'s ``gate`` step passes for that run."""
    return f"{namespace}:open:{run_id}"


@ss.function(id="guarded", trigger="test/guarded", retry=RetryPolicy(retries=0))
async def guarded(ctx: Context) -> dict[str, Any]:
    data = ctx.event.data

    def measure() -> list[Any]:
        # What the function received, told without the secret field names.
        return [len(data["password"]), data["nested"]["api_token"] == "x"]

    def gate() -> bool:
        client = redis.Redis.from_url(os.environ["STEPSTREAM_REDIS_URL"])
        if not client.exists(open_key(os.environ["STEPSTREAM_NAMESPACE"], ctx.run_id)):
            raise PermissionError("the gate is closed")
        return True

    measured = await ctx.step.run("measure", measure)
    issued = await ctx.step.run("issue", lambda: {"token": "abc"})
    await ctx.step.run("gate", gate)
    return {"measured": measured, "issued": issued}
