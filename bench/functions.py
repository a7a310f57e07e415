"""Functions the benchmarks run: no-op steps, so what is measured is the engine."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from stepstream import Context, Stepstream

ss = Stepstream(app_id="bench")


def noop(i: int) -> int:
    return i


async def pause(i: int, ms: int) -> dict[str, int]:
    """A slow-ish step that says which worker process ran it (the recovery benchmark)."""
    await asyncio.sleep(ms / 1000)
    return {"i": i, "pid": os.getpid()}


@ss.function(id="noop-steps", trigger="bench/noop")
async def noop_steps(ctx: Context) -> dict[str, Any]:
    """``n`` no-op steps in a row."""
    n = int(ctx.event.data["n"])
    for i in range(n):
        await ctx.step.run(f"step-{i}", noop, i)
    return {"n": n}


@ss.function(id="slow-chain", trigger="bench/slow")
async def slow_chain(ctx: Context) -> dict[str, Any]:
    """``n`` steps of ``ms`` milliseconds each, in a row."""
    n, ms = int(ctx.event.data["n"]), int(ctx.event.data["ms"])
    for i in range(n):
        await ctx.step.run(f"step-{i}", pause, i, ms)
    return {"n": n}


@ss.function(id="await-approval", trigger="bench/order")
async def await_approval(ctx: Context) -> dict[str, Any]:
    """Waits for the approval of its own order (the waiter benchmark)."""
    approval = await ctx.step.wait_for_event(
        "approval", event="bench/approved", timeout=24 * 3600.0,
        if_="async.data.order == event.data.order")
    return {"approved": approval is not None}


def kilobyte(i: int) -> str:
    return f"{i:08d}" + "x" * 1016


@ss.function(id="long-run", trigger="bench/long")
async def long_run(ctx: Context) -> dict[str, Any]:
    """``n`` steps in a row, each returning 1 KB (the run-length benchmark)."""
    n = int(ctx.event.data["n"])
    for i in range(n):
        await ctx.step.run(f"step-{i}", kilobyte, i)
    return {"n": n}


@ss.function(id="nap-week", trigger="bench/nap")
async def nap_week(ctx: Context) -> dict[str, Any]:
    """Sleeps for a week (the sleeping-runs benchmark)."""
    await ctx.step.sleep("nap", 7 * 24 * 3600.0)
    return {}


@ss.function(id="mapping-filter", trigger="bench/items",
             if_="event.data.xs.map(x, x * 2).size() > 100000")
async def mapping_filter(ctx: Context) -> dict[str, Any]:
    """Never matches; a ``map`` over the event's list, inside the expression budget (the
    expression benchmark)."""
    return {}


@ss.function(id="nested-filter", trigger="bench/items",
             if_="event.data.xs.map(a, event.data.xs.map(b, a * b)).size() > 0")
async def nested_filter(ctx: Context) -> dict[str, Any]:
    """A ``map`` in a ``map`` over the event's list: over the budget, never evaluated
    (the expression benchmark)."""
    return {}
