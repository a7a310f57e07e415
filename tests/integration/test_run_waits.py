"""Waiting for a run's end (``streams.run_waits``) against real Redis: a waiter wakes when
the projector writes the run's end, answers at once for a run that has ended already, and
answers with what stands at its timeout.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from schemas.messages import Event, HistoryRecord
from streams.readmodel import RunStore
from streams.run_waits import RunWaits

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


class CountingStore(RunStore):
    """Counts the reads a waiter makes: after its read, only an announcement wakes it."""

    reads = 0

    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        doc = await super().get_run(run_id)
        self.reads += 1
        return doc

    async def runs_for_event(self, event_id: str) -> list[dict[str, Any]]:
        docs = await super().runs_for_event(event_id)
        self.reads += 1
        return docs


@pytest.fixture
async def waits(redis_url: str) -> AsyncIterator[RunWaits]:
    client = aioredis.Redis.from_url(redis_url)
    waits = RunWaits(CountingStore(client, f"t{uuid.uuid4().hex[:10]}"))
    yield waits
    await waits.close()
    await waits.store.flush()
    await client.aclose()


def rec(run: str, seq: int, kind: str, event: str = "e1", **fields: Any) -> HistoryRecord:
    return HistoryRecord(run_id=run, seq=seq, ts=seq, kind=kind, function_id=f"fn-{run}",
                         event=Event(id=event, name="x") if kind == "run.started" else None,
                         **fields)


def reads(waits: RunWaits) -> int:
    assert isinstance(waits.store, CountingStore)
    return waits.store.reads


async def parked(waits: RunWaits, waiter: asyncio.Task[Any], *, after: int = 0) -> None:
    """Until ``waiter`` has read the read model more than ``after`` times in all and waits:
    what is written next reaches it through the announcement only."""
    async with asyncio.timeout(10):
        while reads(waits) <= after:
            await asyncio.sleep(0.005)
    await asyncio.sleep(0)  # let it pass from the read to its wait
    assert not waiter.done(), f"the waiter answered early: {waiter.result()!r}"


async def test_a_waiter_wakes_when_the_run_ends(waits: RunWaits) -> None:
    await waits.store.apply_many([rec("r1", 1, "run.started")])
    waiter = asyncio.create_task(waits.run("r1", 30))
    await parked(waits, waiter)

    await waits.store.apply_many([rec("r1", 2, "run.completed", output_json='{"n": 1}')])
    doc = await asyncio.wait_for(waiter, 5)
    assert (doc["status"], doc["output"]) == ("completed", {"n": 1})


async def test_a_run_not_seen_yet_is_waited_for_and_an_ended_one_answers_at_once(
        waits: RunWaits) -> None:
    waiter = asyncio.create_task(waits.run("r2", 30))
    await parked(waits, waiter)
    await waits.store.apply_many([rec("r2", 1, "run.started"),
                                  rec("r2", 2, "run.failed")])
    assert (await asyncio.wait_for(waiter, 5))["status"] == "failed"
    # Ended before the question: answered from the document, no announcement needed.
    assert (await asyncio.wait_for(waits.run("r2", 30), 1))["status"] == "failed"


async def test_at_the_timeout_the_answer_is_what_stands(waits: RunWaits) -> None:
    assert await waits.run("nobody", 0.2) is None
    await waits.store.apply_many([rec("r3", 1, "run.started")])
    assert (await waits.run("r3", 0.2))["status"] == "running"


async def test_an_event_waiter_wakes_when_every_run_of_the_event_has_ended(
        waits: RunWaits) -> None:
    await waits.store.apply_many([rec("a", 1, "run.started", event="ev"),
                                  rec("b", 1, "run.started", event="ev")])
    waiter = asyncio.create_task(waits.event_runs("ev", 30))
    await parked(waits, waiter)
    before = reads(waits)
    await waits.store.apply_many([rec("a", 2, "run.completed")])
    await parked(waits, waiter, after=before)  # woken, read one of two ended: waits again
    await waits.store.apply_many([rec("b", 2, "run.cancelled")])
    docs = await asyncio.wait_for(waiter, 5)
    assert sorted(d["status"] for d in docs) == ["cancelled", "completed"]


async def test_closing_answers_every_waiter_at_once(waits: RunWaits) -> None:
    await waits.store.apply_many([rec("r4", 1, "run.started")])
    waiter = asyncio.create_task(waits.run("r4", 30))
    await parked(waits, waiter)
    await waits.close()
    assert (await asyncio.wait_for(waiter, 1))["status"] == "running"
