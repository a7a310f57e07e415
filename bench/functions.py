"""Functions the benchmarks run: no-op steps, so what is measured is the engine."""

from __future__ import annotations

from typing import Any

from stepstream import Context, Stepstream

ss = Stepstream(app_id="bench")


def noop(i: int) -> int:
    return i


@ss.function(id="noop-steps", trigger="bench/noop")
async def noop_steps(ctx: Context) -> dict[str, Any]:
    """``n`` no-op steps in a row."""
    n = int(ctx.event.data["n"])
    for i in range(n):
        await ctx.step.run(f"step-{i}", noop, i)
    return {"n": n}
