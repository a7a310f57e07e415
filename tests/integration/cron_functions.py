"""A cron function, alone in its app so its ticks do not disturb other tests."""

from __future__ import annotations

from stepstream import Context, Stepstream

ss = Stepstream(app_id="cron")


@ss.function(id="ticker", cron="* * * * * */2")  # every 2 s (croniter's seconds field)
async def ticker(ctx: Context) -> int:
    return int(ctx.event.data["tick"])
