"""``ctx.progress`` under ``stepstream.testing.run``: recorded in the result, not repeated
by replays, and a fraction out of range is an error."""

from __future__ import annotations

import pytest

from stepstream import Context
from stepstream.testing import run

pytestmark = pytest.mark.asyncio


async def test_progress_is_recorded_per_step_and_not_repeated_on_replay() -> None:
    async def handler(ctx: Context) -> int:
        ctx.progress(0.0, "starting")  # outside steps: said once, by the first dispatch

        def count(n: int) -> int:
            for i in range(n):
                ctx.progress((i + 1) / n, f"{i + 1} of {n}")
            return n

        first = await ctx.step.run("first", count, 2)
        return first + await ctx.step.run("second", count, 1)

    result = await run(handler)
    assert result.status == "completed" and result.output == 3
    assert [(p.step_id, p.fraction, p.message) for p in result.progress] == [
        (None, 0.0, "starting"), ("first", 0.5, "1 of 2"), ("first", 1.0, "2 of 2"),
        ("second", 1.0, "1 of 1")]
    assert all(p.run_id == result.run_id for p in result.progress)


async def test_a_fraction_out_of_range_fails_the_step() -> None:
    async def handler(ctx: Context) -> None:
        await ctx.step.run("bad", lambda: ctx.progress(1.5))

    result = await run(handler)
    assert result.status == "failed"
    assert "fraction must be a number from 0 to 1" in result.step_errors["bad"].message
