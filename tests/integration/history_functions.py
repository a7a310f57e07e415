"""Functions for the run-history tests (read model, API, CLI, dashboard, metrics).

``fixable`` fails until the test "fixes" it (a Redis key), so that a replay can be
seen to succeed; ``narrated`` logs before, between and inside its steps; ``napper``
sleeps durably, so it can be cancelled while it runs.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

import redis

from stepstream import Context, RetryPolicy, Stepstream
from tests.integration.functions import record_execution

ss = Stepstream(app_id="history-tests")
app_log = logging.getLogger("tests.history")
app_log.setLevel(logging.INFO)  # let INFO through to the run's history


def fixed_key(namespace: str, run_id: str) -> str:
    """Set this key and ``fixable``'s ``fragile`` step succeeds for that run."""
    return f"{namespace}:fixed:{run_id}"


def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["STEPSTREAM_REDIS_URL"])


@ss.function(id="fixable", trigger="test/fixable", retry=RetryPolicy(
    retries=1, initial=timedelta(milliseconds=100), jitter=0.0))
async def fixable(ctx: Context) -> dict[str, Any]:
    """``prepare`` works; ``fragile`` fails (twice: one retry) until it is fixed."""
    run_id = ctx.run_id
    ctx.logger.info("processing order %s", ctx.event.data.get("order"))

    def prepare() -> dict[str, int]:
        record_execution(run_id, "prepare")
        return {"items": 3}

    def fragile(items: int) -> int:
        attempt = record_execution(run_id, "fragile")
        ctx.logger.info("fragile attempt %d", attempt)
        if not _redis().exists(fixed_key(os.environ["STEPSTREAM_NAMESPACE"], run_id)):
            raise ConnectionError("the warehouse API is down")
        return items * 2

    prepared = await ctx.step.run("prepare", prepare)
    shipped = await ctx.step.run("fragile", fragile, prepared["items"])
    ctx.logger.info("shipped %d", shipped)
    return {"shipped": shipped}


@ss.function(id="narrated", trigger="test/narrated")
async def narrated(ctx: Context) -> str:
    """Logs outside, between and inside steps, through ctx.logger and Python logging."""
    ctx.logger.info("hello from the handler")

    def first() -> int:
        ctx.logger.info("inside first")
        return 1

    def second(value: int) -> int:
        app_log.warning("python logging inside second: %d", value)
        return value + 1

    one = await ctx.step.run("first", first)
    ctx.logger.info("between the steps")
    two = await ctx.step.run("second", second, one)
    ctx.logger.info("done with %d", two)
    return f"total={two}"


@ss.function(id="napper", trigger="test/napper")
async def napper(ctx: Context) -> str:
    """Sleeps durably for ``seconds`` (default one minute) between two steps."""
    await ctx.step.run("before", lambda: "awake")
    await ctx.step.sleep("nap", timedelta(seconds=float(ctx.event.data.get("seconds", 60))))
    return await ctx.step.run("after", lambda: "rested")  # type: ignore[no-any-return]
