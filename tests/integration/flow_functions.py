"""Functions with flow-control options, for ``test_flow_control.py``.

Each step appends what it saw to a Redis list (``{namespace}:flowlog:{function}``),
with times taken by the step itself and the worker's pid: the tests check concurrency,
spacing, order and batches from these records, not from the engine's own history.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import timedelta
from typing import Any

import redis

from stepstream import Concurrency, Context, Stepstream, Throttle

ss = Stepstream(app_id="flow")


def log_key(namespace: str, function_id: str) -> str:
    """The list a function's steps append to."""
    return f"{namespace}:flowlog:{function_id}"


def record(function_id: str, **fields: Any) -> None:
    """Append one record (with the worker's pid) to the function's list."""
    client = redis.Redis.from_url(os.environ["STEPSTREAM_REDIS_URL"])
    client.rpush(log_key(os.environ["STEPSTREAM_NAMESPACE"], function_id),
                 json.dumps({**fields, "pid": os.getpid()}))


async def _work(function_id: str, run_id: str, step: str, hold: float,
                fields: dict[str, Any] | None = None) -> str:
    started = time.time()
    record(f"{function_id}:started", run=run_id, step=step, start=started)
    await asyncio.sleep(hold)
    record(function_id, run=run_id, step=step, start=started, end=time.time(), **(fields or {}))
    return step


# At most 2 steps at once, and at most 1 per tenant; two steps per run, eager chains on.
@ss.function(id="limited", trigger="flow/limited",
             concurrency=[{"limit": 2}, {"limit": 1, "key": "event.data.tenant"}])
async def limited(ctx: Context) -> None:
    tenant = ctx.event.data["tenant"]
    for i in range(2):
        await ctx.step.run(f"work-{i}", _work, "limited", ctx.run_id, f"work-{i}", 0.4,
                           {"tenant": tenant})


# One start per second (2 per 2 s, spread evenly).
@ss.function(id="throttled", trigger="flow/throttled",
             throttle=Throttle(limit=2, period=timedelta(seconds=2)))
async def throttled(ctx: Context) -> None:
    await ctx.step.run("start", _work, "throttled", ctx.run_id, "start", 0.0)


@ss.function(id="rate-limited", trigger="flow/rate-limited",
             rate_limit={"limit": 2, "period": "1h", "key": "event.data.user"})
async def rate_limited(ctx: Context) -> None:
    await ctx.step.run("run", _work, "rate-limited", ctx.run_id, "run", 0.0,
                       {"event": ctx.event.id, "user": ctx.event.data["user"]})


@ss.function(id="debounced", trigger="flow/debounced",
             debounce={"period": "2s", "key": "event.data.user"})
async def debounced(ctx: Context) -> None:
    await ctx.step.run("run", _work, "debounced", ctx.run_id, "run", 0.0,
                       {"event": ctx.event.id, "user": ctx.event.data["user"]})


@ss.function(id="batched", trigger="flow/batched",
             batch_events={"max_size": 5, "timeout": "3s"})
async def batched(ctx: Context) -> None:
    ids = [e.id for e in ctx.events]
    await ctx.step.run("run", _work, "batched", ctx.run_id, "run", 0.0,
                       {"events": ids, "first": ctx.event.id})


# One step at a time; higher `prio` (seconds ahead) goes first among the queued.
@ss.function(id="prioritized", trigger="flow/prioritized",
             concurrency=Concurrency(limit=1), priority={"run": "event.data.prio"})
async def prioritized(ctx: Context) -> None:
    await ctx.step.run("run", _work, "prioritized", ctx.run_id, "run",
                       float(ctx.event.data["hold"]), {"name": ctx.event.data["name"]})


async def _hold_once(run_id: str, hold: float) -> float:
    """Sleep ``hold`` seconds the first time this run gets here, briefly afterwards."""
    client = redis.Redis.from_url(os.environ["STEPSTREAM_REDIS_URL"])
    times = client.incr(f"{os.environ['STEPSTREAM_NAMESPACE']}:hold:{run_id}")
    started = time.time()
    record("hog", run=run_id, step="hold", start=started, end=None, attempt=times)
    await asyncio.sleep(hold if times == 1 else 0.2)
    record("hog", run=run_id, step="hold", start=started, end=time.time(), attempt=times)
    return started


# One slot: a worker killed while holding it must give it back (the lease lapses).
@ss.function(id="hog", trigger="flow/hog", concurrency=1)
async def hog(ctx: Context) -> None:
    await ctx.step.run("first", lambda: None)
    await ctx.step.run("hold", _hold_once, ctx.run_id, float(ctx.event.data["hold"]))
