"""The next version of ``backfill_functions``' ``hourly``, which a shadow backfill runs
over past records: its output changes for records with ``n == 1`` only."""

from __future__ import annotations

import os
from typing import Any

from stepstream import Context, Stepstream, TopicTrigger
from tests.integration.backfill_functions import hourly_topic

ss = Stepstream(app_id="backfill")


def notify(data: dict[str, Any]) -> Any:
    raise RuntimeError(f"a shadow run ran the side effect of {data}")


@ss.function(id="hourly", trigger=TopicTrigger(hourly_topic(
    os.environ.get("STEPSTREAM_NAMESPACE", "stepstream"))))
async def hourly(ctx: Context) -> Any:
    data = await ctx.step.run("echo", lambda: ctx.event.data)
    sent = await ctx.step.run("notify", notify, data, side_effect=True)
    if sent != {"receipt": f"r-{data['hour']}-{data['n']}"}:
        raise RuntimeError(f"not the live run's receipt: {sent}")
    return {**data, "n": data["n"] * 10} if data["n"] == 1 else data
