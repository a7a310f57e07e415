"""The live stream's HTTP side and the progress board against real Redis, in process:
heartbeats on a quiet stream, the answers before a stream opens (400, 404, 204), and a
flood of progress reports written as the last value of each step."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from schemas.messages import Event, HistoryRecord
from stepstream.progress import StepProgress
from streams.http_stream import RunStreams
from streams.progress import ProgressBoard
from streams.readmodel import RunStore

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def rec(seq: int, kind: str, **fields: Any) -> HistoryRecord:
    return HistoryRecord(run_id="r1", seq=seq, ts=seq, kind=kind, function_id="fn",
                         event=Event(id="e", name="x") if kind == "run.started" else None,
                         **fields)


@pytest.fixture
def store(run_store: RunStore) -> RunStore:
    return run_store


@pytest.fixture
async def http(store: RunStore) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    streams = RunStreams(store, heartbeat_s=0.2)
    app = web.Application()
    app.add_routes(streams.routes())
    app.on_shutdown.append(lambda _: streams.close())
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_a_quiet_stream_gets_heartbeats(store: RunStore, http: TestClient) -> None:  # type: ignore[type-arg]
    await store.apply_many([rec(1, "run.started")])
    reply = await http.get("/v1/runs/r1/stream")
    assert reply.status == 200 and reply.headers["Content-Type"] == "text/event-stream"
    async with asyncio.timeout(30):
        while (await reply.content.readline()) != b": keep-alive\n":
            pass
    reply.close()


async def test_before_the_stream_a_bad_id_an_unknown_run_and_a_run_already_seen_end(
        store: RunStore, http: TestClient) -> None:  # type: ignore[type-arg]
    assert (await http.get("/v1/runs/r1/stream", headers={"Last-Event-ID": "x"})).status == 400
    assert (await http.get("/v1/runs/nope/stream")).status == 404
    await store.apply_many([rec(1, "run.started"), rec(2, "run.completed", output_json="1")])
    assert (await http.get("/v1/runs/r1/stream?last_event_id=2")).status == 204
    ended = await http.get("/v1/runs/r1/stream?last_event_id=1")
    assert "event: end" in await ended.text()


async def test_a_flood_of_progress_is_written_as_each_steps_last_value(
        store: RunStore) -> None:
    board = ProgressBoard(store, interval_s=0.05)
    pubsub = store.redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(store.key("changed"))
    await store.apply_many([rec(1, "run.started")])
    for i in range(10_000):
        board.report(StepProgress(run_id="r1", step_id="s", attempt=0, fraction=i / 10_000,
                                  message=f"{i}", ts=i))
    await asyncio.to_thread(board.report, StepProgress(  # from a step's thread
        run_id="r1", step_id="t", attempt=0, fraction=1.0, message="thread", ts=1))

    async def written() -> dict[str, Any]:
        while True:
            _, progress = await store.get_run_live("r1")
            if progress.get("s", {}).get("message") == "9999" and "t" in progress:
                return progress
            await pubsub.get_message(timeout=1.0)  # the board announces each write

    async with asyncio.timeout(30):
        progress = await written()
    assert progress["t"]["message"] == "thread"
    await store.apply_many([rec(2, "run.completed")])
    assert (await store.get_run_live("r1"))[1] == {}  # the run's end takes it away
    await board.close()
    await pubsub.aclose()
