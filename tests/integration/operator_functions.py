"""Functions of the operator-control tests (pause, bulk cancel, children of a cancelled
parent). Steps count their executions in Redis, apart from the engine's own history."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from typing import Any

import redis

from stepstream import Context, Singleton, Stepstream
from tests.integration.functions import record_execution

ss = Stepstream(app_id="operator")


def gate_key(namespace: str, gate: str) -> str:
    """The Redis key that opens gate ``gate`` (a step waits for it)."""
    return f"{namespace}:gate:{gate}"


async def _first(run_id: str, gate: str | None) -> int:
    record_execution(run_id, "first")
    if gate is not None:
        store = redis.Redis.from_url(os.environ["STEPSTREAM_REDIS_URL"])
        key = gate_key(os.environ["STEPSTREAM_NAMESPACE"], gate)
        while not store.exists(key):
            await asyncio.sleep(0.05)
    return 1


async def _second(run_id: str) -> int:
    return record_execution(run_id, "second")


@ss.function(id="gated", trigger="op/gated")
async def gated(ctx: Context) -> dict[str, Any]:
    """Two steps; the first waits for its event's gate, if it names one."""
    await ctx.step.run("first", _first, ctx.run_id, ctx.event.data.get("gate"))
    second = await ctx.step.run("second", _second, ctx.run_id)
    return {"second": second}


@ss.function(id="single-skip", trigger="op/single",
             singleton=Singleton(key="event.data.user", mode="skip"))
async def single_skip(ctx: Context) -> int:
    """One running run per user; its step waits for its event's gate, if it names one."""
    return await ctx.step.run("first", _first, ctx.run_id, ctx.event.data.get("gate"))


@ss.function(id="single-cancel", trigger="op/single",
             singleton={"key": "event.data.user", "mode": "cancel"})
async def single_cancel(ctx: Context) -> int:
    return await ctx.step.run("first", _first, ctx.run_id, ctx.event.data.get("gate"))


@ss.function(id="napper", trigger="op/nap")
async def napper(ctx: Context) -> None:
    await ctx.step.sleep("nap", timedelta(minutes=10))


@ss.function(id="dozer", trigger="op/nap")
async def dozer(ctx: Context) -> None:
    await ctx.step.sleep("nap", timedelta(minutes=10))


@ss.function(id="parent", trigger="op/parent")
async def parent(ctx: Context) -> Any:
    """Invokes ``child`` (which sleeps) with the event's ``policy`` and ``timeout`` (s)."""
    timeout = ctx.event.data.get("timeout")
    return await ctx.step.invoke(
        "call", function="child", on_parent_cancel=ctx.event.data.get("policy", "cancel"),
        timeout=None if timeout is None else timedelta(seconds=timeout))


@ss.function(id="child", trigger="op/never")
async def child(ctx: Context) -> None:
    await ctx.step.sleep("nap", timedelta(minutes=10))
