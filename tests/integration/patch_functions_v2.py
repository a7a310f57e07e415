"""Version 2 of ``patch_functions_v1``: a tax step, behind ``ctx.patched``, before the wait."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from stepstream import Context, Stepstream
from tests.integration.patch_functions_v1 import charge

ss = Stepstream(app_id="patching")


@ss.function(id="order", trigger="patch/order.placed")
async def order(ctx: Context) -> Any:
    total = await ctx.step.run("price", lambda: 100)
    taxed = ctx.patched("tax")
    if taxed:
        total = await ctx.step.run("add-tax", lambda t: t + 20, total)
    await ctx.step.wait_for_event("confirm", event="patch/order.confirmed",
                                  if_="async.data.order == event.data.order",
                                  timeout=timedelta(minutes=5))
    return await ctx.step.run("charge", charge, total, "new" if taxed else "old")
