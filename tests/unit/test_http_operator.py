"""The operator routes over fakes: pause and resume a function, cancel runs by query."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from schemas.messages import CancelRequested, FunctionControl
from stepstream import Cron
from stepstream.clock import now_ms
from streams.http import HttpApi
from streams.metrics import Metrics


class FakeStore:
    """Runs r1 and r2 of fn are running; the filter is recorded."""

    def __init__(self) -> None:
        self.asked: list[dict[str, Any]] = []

    async def run_ids(self, **query: Any) -> list[str]:
        self.asked.append(query)
        return ["r2", "r1"]

    async def functions(self, **_: Any) -> list[dict[str, Any]]:
        return []

    async def has_function(self, function_id: str) -> bool:
        return False


class FakePauses:
    async def states(self) -> dict[str, dict[str, Any]]:
        return {"fn": {"paused": True, "ts": 7}}


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[TestClient, list[Any], FakeStore]]:  # type: ignore[type-arg]
    sent: list[Any] = []
    store = FakeStore()

    async def send(message: Any) -> None:
        sent.append(message)

    api = HttpApi(store, Metrics(), None, lambda: True,  # type: ignore[arg-type]
                  send_control=send, functions=["fn", "other"], pauses=FakePauses(),
                  send_pause=send, schedules={"fn": Cron("0 9 * * *", tz="Europe/Berlin"),
                                              "other": Cron("*/5 * * * *", catch_up="1h")})
    client = TestClient(TestServer(api.application()))
    await client.start_server()
    try:
        yield client, sent, store
    finally:
        await client.close()


async def test_pause_and_resume_send_a_function_control() -> None:
    async with serving() as (client, sent, _):
        assert (await client.post("/v1/functions/fn/pause", json={})).status == 202
        assert (await client.post("/v1/functions/fn/resume", json={})).status == 202
        assert (await client.post("/v1/functions/nope/pause", json={})).status == 404
    assert [(type(m), m.function_id, m.paused) for m in sent] == [
        (FunctionControl, "fn", True), (FunctionControl, "fn", False)]


async def test_the_function_list_says_which_are_paused() -> None:
    async with serving() as (client, _, _):
        body = await (await client.get("/v1/functions")).json()
    assert [(f["function_id"], f["paused"], f["paused_at"]) for f in body["functions"]] == [
        ("fn", True, 7), ("other", False, None)]


async def test_the_function_list_shows_schedules_and_their_next_tick() -> None:
    before = now_ms()
    async with serving() as (client, _, _):
        body = await (await client.get("/v1/functions")).json()
    after, every_5 = now_ms(), Cron("*/5 * * * *")
    paused, other = body["functions"]
    assert paused["schedule"] == {"cron": "0 9 * * *", "tz": "Europe/Berlin",
                                  "catch_up_s": None, "next_tick": None}  # paused: none
    next_tick = other["schedule"].pop("next_tick")
    assert other["schedule"] == {"cron": "*/5 * * * *", "tz": "UTC", "catch_up_s": 3600.0}
    assert every_5.next_tick(before) <= next_tick <= (every_5.next_tick(after) or 0)


async def test_bulk_cancel_asks_each_matching_run_to_cancel() -> None:
    async with serving() as (client, sent, store):
        response = await client.post("/v1/runs/cancel", json={
            "function": "fn", "started_after": 100, "started_before": "1970-01-01T00:00:01Z"})
        body = await response.json()
    assert response.status == 202
    assert body["requested"] == 2 and body["run_ids"] == ["r2", "r1"]
    assert store.asked == [{"function": "fn", "status": "running", "since": 100,
                            "until": 1000, "limit": 10_000}]
    assert [(type(m), m.run_id) for m in sent] == [(CancelRequested, "r2"),
                                                  (CancelRequested, "r1")]


async def test_a_dry_run_counts_without_cancelling() -> None:
    async with serving() as (client, sent, _):
        response = await client.post("/v1/runs/cancel", json={"dry_run": True})
        body = await response.json()
    assert response.status == 200 and body["matched"] == 2 and body["requested"] == 0
    assert sent == []


async def test_bulk_cancel_refuses_a_status_that_cannot_be_cancelled() -> None:
    async with serving() as (client, sent, _):
        response = await client.post("/v1/runs/cancel", json={"status": "failed"})
    assert response.status == 400 and sent == []
