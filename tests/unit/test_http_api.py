"""The HTTP API's contract: every route documented in ``/openapi.json``, and bad input
answered with a 4xx that says what is wrong (no broker or Redis here: a fake read model).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate

from streams.http import HttpApi
from streams.http_params import BadInput, parse_time
from streams.http_static import openapi_path
from streams.metrics import Metrics

NOW_MS = int(time.time() * 1000)
RUNS = {"r1": {"run_id": "r1", "status": "running", "steps": [], "ended_at": None},
        "r2": {"run_id": "r2", "status": "failed", "steps": [{"id": "a"}], "ended_at": NOW_MS},
        "r3": {"run_id": "r3", "status": "failed", "steps": [{"id": "a"}],
               "ended_at": NOW_MS - 7200_000}}


class FakeStore:
    """Just enough of the read model for the routes to answer."""

    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        return RUNS.get(run_id)

    async def functions(self, **_: Any) -> list[dict[str, Any]]:
        return []

    async def has_function(self, function_id: str) -> bool:
        return False


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[TestClient, list[Any]]]:  # type: ignore[type-arg]
    sent: list[Any] = []

    async def send_event(name: str, data: dict[str, Any], event_id: str | None) -> str:
        return event_id or "generated"

    async def send_control(message: Any) -> None:
        sent.append(message)

    api = HttpApi(FakeStore(), Metrics(), send_event, lambda: True,  # type: ignore[arg-type]
                  send_control=send_control, functions=["fn"], replay_window_s=3600,
                  retention_s=30 * 86400)
    client = TestClient(TestServer(api.application()))
    await client.start_server()
    try:
        yield client, sent
    finally:
        await client.close()


def spec() -> dict[str, Any]:
    return json.loads(openapi_path().read_text())  # type: ignore[no-any-return]


def app_routes() -> set[tuple[str, str]]:
    api = HttpApi(FakeStore(), Metrics(), None, None)  # type: ignore[arg-type]
    app: web.Application = api.application()
    return {(route.method.lower(), route.resource.canonical) for route in app.router.routes()
            if route.method != "HEAD" and route.resource is not None}


def test_the_openapi_document_is_valid_openapi_3() -> None:
    validate(spec())


def test_every_route_is_in_the_openapi_document_and_nothing_else() -> None:
    documented = {(method, path) for path, item in spec()["paths"].items()
                  for method in item if method in {"get", "post", "put", "delete", "patch"}}

    assert app_routes() == documented


async def test_the_document_is_served() -> None:
    async with serving() as (client, _):
        reply = await client.get("/openapi.json")
        assert reply.status == 200
        assert await reply.json() == spec()


@pytest.mark.parametrize("path", ["/", "/dashboard", "/dashboard/app.js", "/dashboard/app.css"])
async def test_the_dashboard_is_served(path: str) -> None:
    async with serving() as (client, _):
        reply = await client.get(path)
        assert reply.status == 200
        assert len(await reply.text()) > 100


@pytest.mark.parametrize("method, path, body, status, says", [
    ("GET", "/v1/runs/nope", None, 404,
     "no run 'nope' (finished runs leave the history 30 days after they end)"),
    ("GET", "/v1/nowhere", None, 404, "Not Found: GET /v1/nowhere"),
    ("DELETE", "/v1/runs/r1", None, 405, "Method Not Allowed"),
    ("GET", "/dashboard/secrets.txt", None, 404, "no dashboard file"),
    ("POST", "/v1/events", b"{not json", 400, "body is not JSON"),
    ("POST", "/v1/events", b"[1, 2]", 400, "must be a JSON object"),
    ("POST", "/v1/events", b'{"data": {}}', 400, 'string "name"'),
    ("POST", "/v1/events", b"x" * (3 * 1024 * 1024), 413, "body over"),
    ("POST", "/v1/runs/r1/cancel", b"{oops", 400, "body is not JSON"),
    ("POST", "/v1/runs/r1/cancel", b'{"reason": 7}', 400, '"reason" must be a string'),
    ("POST", "/v1/runs/r1/cancel", b"x" * (3 * 1024 * 1024), 413, "body over"),
    ("POST", "/v1/runs/nope/cancel", None, 404, "no run 'nope'"),
    ("POST", "/v1/runs/r2/cancel", None, 409, "is failed already"),
    ("POST", "/v1/runs/r1/replay", None, 409, "only failed or cancelled runs"),
    ("POST", "/v1/runs/r2/replay", b'{"from_step": "zz"}', 400, "has no step 'zz'"),
    ("POST", "/v1/runs/r3/replay", None, 409, "no longer holds its state"),
    ("GET", "/v1/runs?status=done", None, 400, "status='done'"),
    ("GET", "/v1/runs?limit=0", None, 400, "limit=0"),
    ("GET", "/v1/runs?limit=many", None, 400, "limit='many'"),
    ("GET", "/v1/runs?since=yesterday", None, 400, "since='yesterday'"),
    ("GET", "/v1/runs?since=2000&until=1000", None, 400, "since must not be after until"),
    ("GET", "/v1/runs?cursor=%21%21", None, 400, "bad cursor"),
    ("GET", "/v1/dlq?limit=100000", None, 400, "limit=100000"),
    ("GET", "/v1/functions?until=soon", None, 400, "until='soon'"),
    ("POST", "/v1/functions/nope/replay", None, 404, "no function 'nope'"),
    ("POST", "/v1/functions/fn/replay", b'{"status": "completed"}', 400, "status='completed'"),
    ("POST", "/v1/functions/fn/replay", b'{"since": "then"}', 400, "since='then'"),
])
async def test_bad_input_gets_a_4xx_that_says_why(method: str, path: str, body: bytes | None,
                                                 status: int, says: str) -> None:
    async with serving() as (client, sent):
        reply = await client.request(method, path, data=body,
                                     headers={"Content-Type": "application/json"})
        assert reply.status == status
        assert reply.content_type == "application/json"
        assert says in (await reply.json())["error"]
        assert sent == []


async def test_cancel_and_replay_send_their_messages() -> None:
    async with serving() as (client, sent):
        cancel = await client.post("/v1/runs/r1/cancel", json={"reason": "by ops"})
        replay = await client.post("/v1/runs/r2/replay", json={"from_step": "a"})

        assert (cancel.status, replay.status) == (202, 202)
        assert [(type(m).__name__, m.run_id) for m in sent] == [("CancelRequested", "r1"),
                                                                ("ReplayRequested", "r2")]
        assert sent[0].reason == "by ops"
        assert sent[1].from_step == "a"


@pytest.mark.parametrize("text, expected", [
    ("1700000000000", 1_700_000_000_000),
    ("2023-11-14T22:13:20Z", 1_700_000_000_000),
    ("2023-11-14T22:13:20", 1_700_000_000_000),
    ("2023-11-14T23:13:20+01:00", 1_700_000_000_000),
])
def test_times_are_epoch_ms_or_iso_8601(text: str, expected: int) -> None:
    assert parse_time("since", text) == expected


def test_a_time_that_is_neither_is_refused() -> None:
    with pytest.raises(BadInput, match="ISO 8601"):
        parse_time("since", "last tuesday")
