"""Functions exercising the step toolkit and function options, for the integration tests.

Steps record what they did in Redis lists (``{namespace}:log:{run}``) with the time,
so tests can check order and timing from records the engine does not write.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from stepstream import CancelOn, Context, RetryPolicy, Stepstream, Timeouts

ss = Stepstream(app_id="toolkit")


def note(run_id: str, what: str, **extra: Any) -> float:
    """Append ``what`` with the time to the run's log in Redis; returns the time."""
    now = time.time()
    client = redis.Redis.from_url(os.environ["STEPSTREAM_REDIS_URL"])
    key = f"{os.environ['STEPSTREAM_NAMESPACE']}:log:{run_id}"
    client.rpush(key, json.dumps({"what": what, "at": now, **extra}))
    return now


@ss.function(id="sleeper", trigger="kit/sleep")
async def sleeper(ctx: Context) -> dict[str, float]:
    before = await ctx.step.run("before", note, ctx.run_id, "before")
    await ctx.step.sleep("nap", float(ctx.event.data.get("seconds", 1)))
    if ctx.event.data.get("until_offset") is not None:
        until = datetime.fromtimestamp(before, UTC) + timedelta(
            seconds=float(ctx.event.data["until_offset"]))
        await ctx.step.sleep_until("alarm", until)
    after = await ctx.step.run("after", note, ctx.run_id, "after")
    return {"slept": after - before}


@ss.function(id="approver", trigger="kit/invoice.created")
async def approver(ctx: Context) -> dict[str, Any]:
    approval = await ctx.step.wait_for_event(
        "wait-approval", event="kit/invoice.approved",
        if_="async.data.invoice_id == event.data.invoice_id",
        timeout=float(ctx.event.data.get("timeout", 30)))
    if approval is None:
        return {"approved": False}
    return {"approved": True, "by": approval["data"]["by"]}


async def _double(ctx: Context) -> int:
    value = await ctx.step.run("double", lambda n: n * 2, int(ctx.event.data["n"]))
    if ctx.event.data.get("fail"):
        await ctx.step.run("explode", _explode)
    return value


def _explode() -> None:
    raise ValueError("child exploded")


ss.function(id="doubler", trigger="kit/double", retries=0)(_double)


@ss.function(id="parent", trigger="kit/parent")
async def parent(ctx: Context) -> dict[str, Any]:
    try:
        doubled = await ctx.step.invoke("call-child", function=_double,
                                        data={"n": ctx.event.data["n"],
                                              "fail": ctx.event.data.get("fail", False)})
    except Exception as exc:  # StepError from the failed child
        return {"child_failed": type(exc).__name__}
    return {"doubled": doubled}


@ss.function(id="fan-out", trigger="kit/fan-out")
async def fan_out(ctx: Context) -> dict[str, Any]:
    async def slow(name: str) -> str:
        note(ctx.run_id, f"start-{name}")
        await asyncio.sleep(0.5)
        note(ctx.run_id, f"end-{name}")
        return name.upper()

    results = await asyncio.gather(ctx.step.run("a", slow, "a"), ctx.step.run("b", slow, "b"),
                                   ctx.step.run("c", slow, "c"))
    total = await ctx.step.run("join", lambda parts: "".join(parts), list(results))
    return {"joined": total}


@ss.function(id="announcer", trigger="kit/announce")
async def announcer(ctx: Context) -> list[str]:
    ids = await ctx.step.send_event("announce", [
        {"name": "kit/double", "data": {"n": 21}},
        {"name": "kit/double", "data": {"n": 5}}])
    await ctx.step.run("after", note, ctx.run_id, "after-send")
    return ids


@ss.function(id="cancellable", trigger="kit/order.placed",
             cancel_on=[CancelOn(event="kit/order.cancelled",
                                 if_="async.data.order_id == event.data.order_id")],
             timeouts=Timeouts(finish=timedelta(seconds=30)))
async def cancellable(ctx: Context) -> str:
    await ctx.step.run("first", note, ctx.run_id, "first")
    await ctx.step.sleep("linger", 20)
    await ctx.step.run("never", note, ctx.run_id, "never")
    return "done"


@ss.function(id="slowpoke", trigger="kit/slow", timeouts=Timeouts(finish=timedelta(seconds=1)))
async def slowpoke(ctx: Context) -> str:
    await ctx.step.sleep("long", 30)
    return "too late"


async def _failure_handler(ctx: Context) -> dict[str, Any]:
    data = ctx.event.data
    await ctx.step.run("record", lambda: note(data["run_id"], "on_failure", error=data["error"]))
    return {"handled": data["run_id"]}


@ss.function(id="fragile", trigger="kit/fragile", retries=0, on_failure=_failure_handler)
async def fragile(ctx: Context) -> None:
    await ctx.step.run("break", _explode)


@ss.function(id="charge", trigger="kit/charge", idempotency="event.data.payment_id")
async def charge(ctx: Context) -> str:
    return str(await ctx.step.run("charge", note, ctx.run_id, "charged"))


@ss.function(id="stubborn", trigger="kit/stubborn", retry=RetryPolicy(
    retries=5, initial=timedelta(milliseconds=50), jitter=0.0))
async def stubborn(ctx: Context) -> None:
    def always() -> None:
        note(ctx.run_id, "attempt")
        raise RuntimeError("nope")

    await ctx.step.run("limited", always, retries=1)
