"""Functions on source topics (``TopicTrigger``), run by the tests in real workers.

The topics are named after the test's namespace (``source_topic``), so every test has
its own; the test creates them before it starts a worker (stepstream never does).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

from stepstream import CancelOn, Context, Stepstream, TopicTrigger

ss = Stepstream(app_id="sources")
STAMPED_START = datetime(2025, 1, 1, tzinfo=UTC)
"""Where ``stamped`` starts reading: records of 2024 are before it."""


def source_topic(namespace: str, name: str) -> str:
    """The name of one of a test's source topics."""
    return f"{namespace}-{name}"


_NS = os.environ.get("STEPSTREAM_NAMESPACE", "stepstream")
PAYMENTS = TopicTrigger(source_topic(_NS, "payments"))


@ss.function(id="orders", trigger=TopicTrigger(source_topic(_NS, "orders"), start="earliest"))
async def orders(ctx: Context) -> dict[str, Any]:
    """One run per order record; its output says which record it came from."""
    seen = await ctx.step.run("seen", lambda: {"order": ctx.event.data.get("order")})
    return {**seen, "event_id": ctx.event.id, "name": ctx.event.name}


@ss.function(id="late", trigger=TopicTrigger(source_topic(_NS, "late")))
async def late(ctx: Context) -> Any:
    """``start="latest"`` (the default): records from before it was deployed start none."""
    return ctx.event.data


@ss.function(id="stamped", trigger=TopicTrigger(source_topic(_NS, "stamped"),
                                                start=STAMPED_START))
async def stamped(ctx: Context) -> Any:
    """Starts at ``STAMPED_START``: only records with a later timestamp start runs."""
    return {**ctx.event.data, "ts": ctx.event.ts}


@ss.function(id="keyed", if_="record.headers.kind == 'paid' && record.key != null",
             trigger=TopicTrigger(source_topic(_NS, "keyed"), start="earliest",
                                  id="'order-' + string(record.value.order_id)"))
async def keyed(ctx: Context) -> Any:
    """Event id from the value; only records with header ``kind: paid`` and a key."""
    return {"id": ctx.event.id, **ctx.event.data}


@ss.function(id="checkout", trigger="shop/checkout.started")
async def checkout(ctx: Context) -> Any:
    """Waits for the order's payment record on the payments topic."""
    paid = await ctx.step.wait_for_event(
        "payment", event=PAYMENTS, timeout=timedelta(minutes=2),
        if_="async.data.order == event.data.order")
    return {"paid": None if paid is None else paid["data"]["amount"]}


@ss.function(id="hold", trigger="shop/hold.started", cancel_on=[CancelOn(
    event=TopicTrigger(source_topic(_NS, "cancellations")),
    if_="async.data.order == event.data.order")])
async def hold(ctx: Context) -> Any:
    """Sleeps for an hour unless a record of the cancellations topic cancels it."""
    await ctx.step.sleep("hold", timedelta(hours=1))
    return "held"


@ss.function(id="avro", trigger=TopicTrigger(source_topic(_NS, "avro"), start="earliest"))
async def avro(ctx: Context) -> Any:
    """An Avro record in the Confluent wire format, decoded through the registry."""
    return ctx.event.data


@ss.function(id="proto", trigger=TopicTrigger(source_topic(_NS, "proto"), start="earliest"))
async def proto(ctx: Context) -> Any:
    """A Protobuf record in the Confluent wire format, decoded with no generated class."""
    return ctx.event.data
