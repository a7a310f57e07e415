"""An HttpApi over fakes behind a real aiohttp server, for the HTTP API's unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from streams.http import HttpApi
from streams.metrics import Metrics

RUNS: dict[str, dict[str, Any]] = {
    "r1": {"run_id": "r1", "status": "running", "steps": [], "ended_at": None}}


class FakeStore:
    """Just enough of the read model: run ``r1`` is running."""

    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        return RUNS.get(run_id)

    async def runs_for_event(self, event_id: str) -> list[dict[str, Any]]:
        return []


@asynccontextmanager
async def serving(**application: Any) -> AsyncIterator[tuple[TestClient, list[Any]]]:  # type: ignore[type-arg]
    """A client of the API (``HttpApi.application(**application)``) on a free port, and
    what it sent: ``("event", name)`` and the control messages."""
    sent: list[Any] = []

    async def send_event(name: str, data: dict[str, Any], event_id: str | None) -> str:
        sent.append(("event", name))
        return event_id or "generated"

    async def send_control(message: Any) -> None:
        sent.append(message)

    api = HttpApi(FakeStore(), Metrics(), send_event, lambda: True,  # type: ignore[arg-type]
                  send_control=send_control)
    client = TestClient(TestServer(api.application(**application)))
    await client.start_server()
    try:
        yield client, sent
    finally:
        await client.close()


def own_origin(client: TestClient) -> str:  # type: ignore[type-arg]
    """The origin a page served by the test server has."""
    return str(client.make_url("")).rstrip("/")
