"""``stepstream.testing.replay``: new code checked against a recorded run."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest

from schemas.messages import HistoryRecord
from stepstream import Context, NondeterminismError
from stepstream.testing import ReplayMismatch, replay, run
from streams.timeline import apply_record


async def old(ctx: Context) -> Any:
    await ctx.step.run("reserve", lambda: "r")
    await ctx.step.run("charge", lambda: "c")
    await ctx.step.run("ship", lambda: "s")
    return "done"


async def recorded(handler: Any = old, **kwargs: Any) -> list[HistoryRecord]:
    result = await run(handler, {"order": 1}, **kwargs)
    return result.history


def as_served(records: list[HistoryRecord]) -> dict[str, Any]:
    """The run as ``GET /v1/runs/{id}`` serves it."""
    doc: dict[str, Any] | None = None
    for record in records:
        doc = apply_record(doc, record)
    return json.loads(json.dumps(doc))  # type: ignore[no-any-return]


async def test_a_reordered_step_is_caught_and_both_steps_named() -> None:
    async def reordered(ctx: Context) -> Any:
        await ctx.step.run("reserve", lambda: "r")
        await ctx.step.run("ship", lambda: "s")  # now before the charge
        await ctx.step.run("charge", lambda: "c")
        return "done"

    history = await recorded()
    for recording in (history, as_served(history)):
        with pytest.raises(ReplayMismatch) as caught:
            await replay(reordered, recording)
        assert (caught.value.position, caught.value.recorded_step, caught.value.new_step) == (
            1, "charge", "ship")
        assert "'charge'" in str(caught.value) and "'ship'" in str(caught.value)
        assert isinstance(caught.value, NondeterminismError)


async def test_the_same_code_and_an_appended_step_replay_cleanly() -> None:
    async def appended(ctx: Context) -> Any:
        await old(ctx)
        return await ctx.step.run("invoice", lambda: "i")

    history = await recorded()

    await replay(old, history)
    await replay(appended, as_served(history))


async def test_code_that_ends_before_the_recorded_steps_is_caught() -> None:
    async def shortened(ctx: Context) -> Any:
        await ctx.step.run("reserve", lambda: "r")
        return "done"

    with pytest.raises(ReplayMismatch) as caught:
        await replay(shortened, await recorded())

    assert (caught.value.recorded_step, caught.value.new_step) == ("charge", None)


async def test_a_step_added_behind_a_patch_keeps_recorded_runs_on_their_path() -> None:
    async def unguarded(ctx: Context) -> Any:
        await ctx.step.run("reserve", lambda: "r")
        await ctx.step.run("fraud-check", lambda: "ok")
        await ctx.step.run("charge", lambda: "c")
        await ctx.step.run("ship", lambda: "s")
        return "done"

    async def guarded(ctx: Context) -> Any:
        await ctx.step.run("reserve", lambda: "r")
        if ctx.patched("fraud-check"):
            await ctx.step.run("fraud-check", lambda: "ok")
        await ctx.step.run("charge", lambda: "c")
        await ctx.step.run("ship", lambda: "s")
        return "done"

    history = await recorded()
    with pytest.raises(ReplayMismatch, match="fraud-check"):
        await replay(unguarded, history)
    await replay(guarded, history)
    await replay(guarded, await recorded(guarded))  # a run that took the new path


async def waits(ctx: Context) -> Any:
    await ctx.step.run("request", lambda: "sent")
    approval = await ctx.step.wait_for_event("approval", event="ok", timeout=timedelta(days=1))
    return await ctx.step.run("apply", lambda: approval is not None)


async def test_a_run_in_flight_is_checked_up_to_the_step_it_waits_on() -> None:
    async def without_wait(ctx: Context) -> Any:
        await ctx.step.run("request", lambda: "sent")
        return await ctx.step.run("apply", lambda: True)

    history = await recorded(waits)
    waiting = [r for r in history if r.seq <= next(
        r.seq for r in history if r.kind == "step.waiting")]

    await replay(waits, waiting)
    with pytest.raises(ReplayMismatch) as caught:
        await replay(without_wait, waiting)
    assert (caught.value.recorded_step, caught.value.new_step) == ("approval", "apply")


async def test_parallel_steps_may_have_completed_in_any_order() -> None:
    async def parallel(ctx: Context) -> Any:
        return await asyncio.gather(ctx.step.run("left", lambda: 1),
                                    ctx.step.run("right", lambda: 2))

    history = await recorded(parallel)
    served = as_served(history)
    served["steps"].reverse()  # as if "right" had completed first

    await replay(parallel, served)

