"""Cron functions with catch-up windows, alone in their app so their ticks do not disturb
other tests; every 2 s (croniter's seconds field), so that an outage of seconds misses
ticks."""

from __future__ import annotations

from stepstream import Context, Cron, Stepstream

ss = Stepstream(app_id="schedules")


@ss.function(id="caught-up", cron=Cron("* * * * * */2", catch_up="10s"))
async def caught_up(ctx: Context) -> int:
    return int(ctx.event.data["tick"])


@ss.function(id="pausable", cron=Cron("* * * * * */2", tz="Europe/Berlin", catch_up="1m"))
async def pausable(ctx: Context) -> int:
    return int(ctx.event.data["tick"])
