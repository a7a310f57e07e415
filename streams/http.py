"""The HTTP API every worker serves: health, metrics, events, runs, the dashboard.

Documented in ``streams/openapi.json`` (served at ``/openapi.json``); a test checks that
every route is in it. Errors are JSON, ``{"error": "..."}``, with a 4xx that says what
was wrong. Every request passes the browser rules of ``streams.http_guard`` (Host,
Origin, Content-Type), then the token check of ``streams.http_auth``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from stepstream.cron import Cron
from stepstream.errors import ConfigError, SerializationError
from stepstream.settings import Settings
from streams import http_static
from streams.http_auth import Handler, token_auth
from streams.http_functions import FunctionsApi, PauseStates, SendPause
from streams.http_guard import HostRule, browser_guard
from streams.http_login import Login
from streams.http_params import BadInput, json_body
from streams.http_runs import RunsApi, SendControl
from streams.http_session import Sessions
from streams.http_stream import HEARTBEAT_S, MAX_STREAMS, RunStreams
from streams.metrics import Metrics
from streams.readmodel import RunStore

_MAX_BODY = 2 * 1024 * 1024


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def _problem(status: int, message: str) -> web.Response:
    return _json({"error": message}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own 4xx answers (no such route, wrong method, body too large) as JSON,
    and a 503 while Redis, which holds the read model, does not answer."""
    try:
        return await handler(request)
    except RedisError as exc:
        response = _problem(503, f"the run store (Redis) is unavailable: {exc}")
        response.headers["Retry-After"] = "1"
        return response
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") \
            else f"{exc.reason}: {request.method} {request.path}"
        return _problem(exc.status, detail)


class HttpApi:
    """Routes of the worker's HTTP server.

    Args:
        store: the run read model.
        metrics: the worker's metrics.
        send_event: ``(name, data, id) -> event id``, producing to the events topic;
            with ``avro_schema=``, to the topic ``name`` in the Confluent wire format.
        ready: whether the worker has joined its group and owns partitions.
        send_control: produces cancel and replay requests to the runs topic.
        functions: ids of the functions the worker registers.
        pauses: which functions are paused (the read model).
        send_pause: produces pauses and resumes of functions.
        schedules: the cron functions' schedules, by function id.
        replay_window_s: how long after its end a run can be replayed.
        retention_s: how long after its end a run stays in the read model.
        max_streams: live run streams served at once (``Settings.http_max_streams``).
        stream_heartbeat_s: ``Settings.http_stream_heartbeat_s``.
    """

    def __init__(self, store: RunStore, metrics: Metrics, send_event: Any, ready: Any, *,
                 send_control: SendControl | None = None, functions: Iterable[str] = (),
                 replay_window_s: float | None = None, retention_s: float | None = None,
                 pauses: PauseStates | None = None, send_pause: SendPause | None = None,
                 schedules: Mapping[str, Cron] | None = None,
                 max_streams: int = MAX_STREAMS, stream_heartbeat_s: float = HEARTBEAT_S
                 ) -> None:
        self.store, self.metrics, self.send_event, self.ready = store, metrics, send_event, ready
        self.runs = RunsApi(store, send_control, functions, replay_window_s=replay_window_s,
                            retention_s=retention_s)
        self.functions = FunctionsApi(store, functions, pauses=pauses, send_pause=send_pause,
                                      schedules=schedules)
        self.streams = RunStreams(store, max_streams=max_streams,
                                  heartbeat_s=stream_heartbeat_s, gauge=metrics.http_streams)

    def application(self, *, token: str = "", bind_host: str = "127.0.0.1",
                    allowed_hosts: str = "", session_s: float = Settings.http_session_s
                    ) -> web.Application:
        """The aiohttp application.

        Args:
            token: the API token (``Settings.http_token``); empty: no auth.
            bind_host: where it is served (``Settings.http_host``), for the Host rule.
            allowed_hosts: ``Settings.http_allowed_hosts``.
            session_s: how long a dashboard login lasts (``Settings.http_session_s``).
        """
        sessions = Sessions(token, session_s)
        hosts = HostRule.of(allowed_hosts, bind_host=bind_host, token=token)
        app = web.Application(client_max_size=_MAX_BODY, middlewares=[
            browser_guard(hosts), token_auth(token, sessions), json_errors])
        app.on_shutdown.append(lambda _: self.runs.waits.close())
        app.on_shutdown.append(lambda _: self.streams.close())
        app.add_routes([
            web.get("/healthz", self.healthz),
            web.get("/readyz", self.readyz),
            web.get("/metrics", self.prometheus),
            web.post("/v1/events", self.post_event),
            *self.runs.routes(),
            *self.streams.routes(),
            *self.functions.routes(),
            *Login(token, sessions).routes(),
            *http_static.routes(),
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

    async def post_event(self, request: web.Request) -> web.Response:
        try:
            body = await json_body(request)
        except BadInput as exc:
            return _problem(exc.status, str(exc))
        if not isinstance(body.get("name"), str):
            return _problem(400, 'body must be an object with a string "name"')
        data, event_id = body.get("data", {}), body.get("id")
        if not isinstance(data, dict) or (event_id is not None and not isinstance(event_id, str)):
            return _problem(400, '"data" must be an object and "id" a string')
        schema = body.get("avro_schema")
        if schema is not None and not isinstance(schema, str | dict):
            return _problem(400, '"avro_schema" must be an Avro schema (an object or text)')
        try:
            sent = await (self.send_event(body["name"], data, event_id) if schema is None
                          else self.send_event(body["name"], data, event_id,
                                               avro_schema=schema))
        except ConfigError as exc:
            return _problem(400, str(exc))
        except SerializationError as exc:  # too large; with a schema, also not matching it
            return _problem(413 if schema is None else 400, str(exc))
        return _json({"id": sent}, status=202)
