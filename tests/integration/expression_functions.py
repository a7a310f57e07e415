"""Functions whose CEL expressions fail or go over budget, for
``test_expression_failures.py``, beside a plain one that must keep running."""

from __future__ import annotations

from stepstream import Context, Stepstream

ss = Stepstream(app_id="expressions")

NESTED = "event.data.xs.map(a, event.data.xs.map(b, a * b)).size() > 0"
"""About a million multiplications over a 1,000-element list: over budget."""


@ss.function(id="nested-filter", trigger="expr/items", if_=NESTED)
async def nested_filter(ctx: Context) -> str:
    return await ctx.step.run("never", lambda: "matched")


@ss.function(id="dividing-key", trigger="expr/items",
             idempotency="event.data.n / event.data.zero")
async def dividing_key(ctx: Context) -> str:
    return await ctx.step.run("never", lambda: "started")


@ss.function(id="overflowing-key", trigger="expr/items",
             concurrency=[{"limit": 1, "key": "event.data.big * 4"}])
async def overflowing_key(ctx: Context) -> str:
    return await ctx.step.run("never", lambda: "started")


@ss.function(id="waits", trigger="expr/wait")
async def waits(ctx: Context) -> object:
    # The over-budget condition never matches: the wait times out (returns None).
    return await ctx.step.wait_for_event(
        "reply", event="expr/items", timeout=3,
        if_="async.data.xs.map(a, async.data.xs.map(b, a * b)).size() > 0")


@ss.function(id="plain", trigger="expr/ping")
async def plain(ctx: Context) -> str:
    return await ctx.step.run("pong", lambda: "pong")
