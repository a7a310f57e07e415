"""The read model's Redis side (``streams.readmodel.RunStore``) against real Redis: the status
index through a replay, keyset pages over equal start times, dead letters, the rebuild lock.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from schemas.messages import ErrorInfo, Event, HistoryRecord
from streams.readmodel import RunStore
from streams.retention import sweep

# The Redis client is made in the fixture's (session) loop: the tests must run in it too.
pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
BOOM = ErrorInfo(type="RuntimeError", message="boom", traceback="tb")


@pytest.fixture
def store(run_store: RunStore) -> RunStore:
    return run_store


def rec(run: str, seq: int, kind: str, *, fn: str = "fn", ts: int = 0,
        **fields: Any) -> HistoryRecord:
    return HistoryRecord(run_id=run, seq=seq, ts=ts or seq, kind=kind, function_id=fn, **fields)


def started(run: str, ts: int, fn: str = "fn") -> HistoryRecord:
    return rec(run, 1, "run.started", fn=fn, ts=ts, event=Event(id=f"e-{run}", name="x"))


def dead(run: str, seq: int) -> HistoryRecord:
    return rec(run, seq, "step.failed", step_id="s", error=BOOM, started_at=seq, ended_at=seq)


async def ids(store: RunStore, **filters: Any) -> list[str]:
    return [r["run_id"] for r in (await store.list_runs(**filters)).items]


async def test_the_status_index_follows_a_run_through_failure_replay_and_success(
        store: RunStore) -> None:
    await store.apply_many([started("r", 10), dead("r", 2), rec("r", 3, "run.failed",
                                                                 error=BOOM)])
    assert await ids(store, status="failed") == ["r"]
    assert await ids(store, function="fn", status="running") == []
    assert [d["step_id"] for d in (await store.dead_letters()).items] == ["s"]
    assert await store.dlq_size() == 1

    await store.apply(rec("r", 4, "run.replayed"))
    assert await ids(store, status="failed") == []
    assert await ids(store, function="fn", status="running") == ["r"]
    assert await store.dlq_size() == 0  # replayed: no longer waiting

    await store.apply_many([rec("r", 5, "step.completed", step_id="s", output_json="1",
                                started_at=5, ended_at=5),
                            rec("r", 6, "run.completed", output_json="1")])
    assert await ids(store, status="completed") == await ids(store, function="fn") == ["r"]
    assert await ids(store, status="running") == []
    (fn,) = await store.functions()
    assert (fn["runs"], fn["completed"], fn["failed"], fn["failure_rate"]) == (1, 1, 0, 0.0)


async def test_pages_cover_every_run_once_even_with_equal_start_times(store: RunStore) -> None:
    await store.apply_many([started(f"r{i:02}", 100 + i // 4) for i in range(23)])

    seen, cursor = [], None
    while True:
        page = await store.list_runs(limit=5, cursor=cursor)
        seen += [r["run_id"] for r in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break

    assert sorted(seen) == [f"r{i:02}" for i in range(23)]
    assert len(seen) == len(set(seen))
    assert await ids(store, since=104, until=104) == ["r19", "r18", "r17", "r16"]
    with pytest.raises(ValueError, match="bad cursor"):
        await store.list_runs(cursor="not-a-cursor")


async def test_a_redelivered_batch_changes_nothing(store: RunStore) -> None:
    batch = [started("r", 10), dead("r", 2), rec("r", 3, "run.failed", error=BOOM)]
    await store.apply_many(batch)
    before = await store.get_run("r")

    await store.apply_many(batch)
    await store.apply_many(batch[1:])

    assert await store.get_run("r") == before
    assert await store.dlq_size() == 1


async def test_projectors_wait_while_a_rebuild_holds_the_lock(store: RunStore) -> None:
    await store.redis.set(store.lock_key, "1", ex=60)
    live = asyncio.create_task(store.apply(started("late", 10)))
    rebuilding = RunStore(store.redis, store.prefix.rstrip(":"), rebuilding=True)

    await rebuilding.apply(started("early", 5))  # the rebuild itself writes
    await asyncio.sleep(0.5)  # proving an absence: the live write has had time, and waits
    assert not live.done()
    assert await ids(store) == ["early"]

    await store.redis.delete(store.lock_key)
    await asyncio.wait_for(live, 5)
    assert await ids(store) == ["late", "early"]


async def test_runs_that_ended_before_the_cutoff_leave_every_index(store: RunStore) -> None:
    await store.apply_many([started("old", 10), dead("old", 2),
                            rec("old", 3, "run.failed", ts=100, error=BOOM),
                            started("recent", 20), rec("recent", 2, "run.completed", ts=900),
                            started("long-running", 5)])
    assert await store.dlq_size() == 1

    assert await sweep(store, ended_before=500) == 1

    assert await store.get_run("old") is None
    assert sorted(await ids(store)) == ["long-running", "recent"]
    assert await ids(store, status="failed") == []
    assert await ids(store, function="fn", status="failed") == []
    assert await store.runs_for_event("e-old") == []
    assert await store.dlq_size() == 0
    assert (await store.get_run("recent") or {})["status"] == "completed"
    assert await sweep(store, ended_before=500) == 0  # nothing left to expire


async def test_a_run_replayed_after_it_ended_is_not_expired(store: RunStore) -> None:
    await store.apply_many([started("r", 10), rec("r", 2, "run.failed", ts=100, error=BOOM),
                            rec("r", 3, "run.replayed", ts=200)])
    assert await sweep(store, ended_before=500) == 0
    assert await ids(store, status="running") == ["r"]
