"""The HTTP API every worker serves: health, metrics, runs, events."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from stepstream.errors import SerializationError
from streams.http_auth import bearer_auth
from streams.metrics import Metrics
from streams.readmodel import RunStore

_MAX_BODY = 2 * 1024 * 1024


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def _problem(status: int, message: str) -> web.Response:
    return _json({"error": message}, status=status)


class HttpApi:
    """Routes of the worker's HTTP server.

    Args:
        store: the run read model.
        metrics: the worker's metrics.
        send_event: ``(name, data, id) -> event id``, producing to the events topic.
        ready: whether the worker has joined its group and owns partitions.
    """

    def __init__(self, store: RunStore, metrics: Metrics, send_event: Any, ready: Any) -> None:
        self.store, self.metrics, self.send_event, self.ready = store, metrics, send_event, ready

    def application(self, *, token: str = "") -> web.Application:
        """The aiohttp application."""
        app = web.Application(client_max_size=_MAX_BODY, middlewares=[bearer_auth(token)])
        app.add_routes([
            web.get("/healthz", self.healthz),
            web.get("/readyz", self.readyz),
            web.get("/metrics", self.prometheus),
            web.get("/v1/runs/{run_id}", self.get_run),
            web.get("/v1/events/{event_id}/runs", self.event_runs),
            web.post("/v1/events", self.post_event),
        ])
        return app

    async def healthz(self, _: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(self, _: web.Request) -> web.Response:
        ready = bool(self.ready())
        return _json({"ready": ready}, status=200 if ready else 503)

    async def prometheus(self, _: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(),
                            content_type="text/plain", charset="utf-8")

    async def get_run(self, request: web.Request) -> web.Response:
        run = await self.store.get_run(request.match_info["run_id"])
        if run is None:
            return _problem(404, f"no run {request.match_info['run_id']!r}")
        return _json(run)

    async def event_runs(self, request: web.Request) -> web.Response:
        event_id = request.match_info["event_id"]
        return _json({"event_id": event_id, "runs": await self.store.runs_for_event(event_id)})

    async def post_event(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _problem(400, "body must be JSON")
        except web.HTTPRequestEntityTooLarge:
            return _problem(413, f"body over {_MAX_BODY} bytes")
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            return _problem(400, 'body must be an object with a string "name"')
        data, event_id = body.get("data", {}), body.get("id")
        if not isinstance(data, dict) or (event_id is not None and not isinstance(event_id, str)):
            return _problem(400, '"data" must be an object and "id" a string')
        try:
            sent = await self.send_event(body["name"], data, event_id)
        except SerializationError as exc:
            return _problem(413, str(exc))
        return _json({"id": sent}, status=202)
