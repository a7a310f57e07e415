"""Functions the backfill tests start runs of: one on a source topic, one on events by
name (added after its events were sent)."""

from __future__ import annotations

import os
from typing import Any

from stepstream import Context, Stepstream, TopicTrigger

ss = Stepstream(app_id="backfill")


def hourly_topic(namespace: str) -> str:
    """The test's source topic."""
    return f"{namespace}-hourly"


@ss.function(id="hourly", trigger=TopicTrigger(hourly_topic(
    os.environ.get("STEPSTREAM_NAMESPACE", "stepstream"))))
async def hourly(ctx: Context) -> Any:
    """``start="latest"``: records from before it was deployed start none live. Its
    ``notify`` step is a side effect: a shadow run takes the output recorded here."""
    data = await ctx.step.run("echo", lambda: ctx.event.data)
    await ctx.step.run("notify", lambda: {"receipt": f"r-{data['hour']}-{data['n']}"},
                       side_effect=True)
    return data


@ss.function(id="later", trigger="test/later")
async def later(ctx: Context) -> Any:
    return await ctx.step.run("echo", lambda: ctx.event.data)
