"""Version 1 of a function that ``test_patching`` upgrades while a run waits in it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from stepstream import Context, Stepstream

ss = Stepstream(app_id="patching")


def charge(total: int, path: str) -> dict[str, Any]:
    return {"charged": total, "path": path}


@ss.function(id="order", trigger="patch/order.placed")
async def order(ctx: Context) -> Any:
    total = await ctx.step.run("price", lambda: 100)
    await ctx.step.wait_for_event("confirm", event="patch/order.confirmed",
                                  if_="async.data.order == event.data.order",
                                  timeout=timedelta(minutes=5))
    return await ctx.step.run("charge", charge, total, "old")
