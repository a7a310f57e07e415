"""Bearer-token auth of the HTTP API: 401 without a token, 403 with a wrong one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from streams.http import HttpApi
from streams.http_auth import exposure_warning, is_loopback
from streams.metrics import Metrics

TOKEN = "s3cret-token"


class FakeStore:
    """The read model's read side, in memory."""

    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        return {"run_id": run_id, "status": "completed"}

    async def runs_for_event(self, event_id: str) -> list[dict[str, Any]]:
        return []

    def __getattr__(self, name: str) -> Any:  # routes added later read more of the store
        async def nothing(*args: Any, **kwargs: Any) -> Any:
            return None

        return nothing


@asynccontextmanager
async def serving(token: str) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    """An HttpApi with fakes behind a real aiohttp server on a free port."""

    async def send_event(name: str, data: dict[str, Any], event_id: str | None) -> str:
        return event_id or "generated"

    api = HttpApi(FakeStore(), Metrics(), send_event, lambda: True)  # type: ignore[arg-type]
    client = TestClient(TestServer(api.application(token=token)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_probes_and_metrics_need_no_token(path: str) -> None:
    async with serving(TOKEN) as client:
        assert (await client.get(path)).status == 200


@pytest.mark.parametrize("method, path", [
    ("GET", "/v1/runs/r1"),
    ("GET", "/v1/events/e1/runs"),
    ("POST", "/v1/events"),
    ("POST", "/v1/runs/r1/cancel"),
    ("POST", "/v1/runs/r1/replay"),
    ("GET", "/"),
    ("GET", "/metrics/../v1/runs/r1"),
])
async def test_everything_else_needs_the_token(method: str, path: str) -> None:
    async with serving(TOKEN) as client:
        await _refused(client, method, path)


async def _refused(client: TestClient, method: str, path: str) -> None:  # type: ignore[type-arg]
    body = {"name": "x", "data": {}}
    missing = await client.request(method, path, json=body)
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    not_bearer = await client.request(method, path, json=body,
                                      headers={"Authorization": f"Basic {TOKEN}"})
    assert not_bearer.status == 401
    wrong = await client.request(method, path, json=body,
                                 headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status == 403
    prefix = await client.request(method, path, json=body,
                                  headers={"Authorization": f"Bearer {TOKEN[:-1]}"})
    assert prefix.status == 403


async def test_the_right_token_passes() -> None:
    async with serving(TOKEN) as client:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        run = await client.get("/v1/runs/r1", headers=auth)
        assert run.status == 200 and (await run.json())["run_id"] == "r1"
        sent = await client.post("/v1/events", json={"name": "x", "data": {}, "id": "e1"},
                                 headers={"Authorization": f"bearer {TOKEN}"})
        assert sent.status == 202 and (await sent.json())["id"] == "e1"


async def test_no_token_configured_means_open() -> None:
    async with serving("") as client:
        assert (await client.get("/v1/runs/r1")).status == 200


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("::1", True), ("localhost", True), ("127.0.0.2", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("worker.internal", False),
])
def test_exposure_warning(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert (exposure_warning(host, "") is None) is loopback
    assert exposure_warning(host, TOKEN) is None
