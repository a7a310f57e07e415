"""Runs, functions and dead letters over HTTP: list, look at, cancel and replay.

Reads come from the read model (``streams.readmodel``). Cancel and replay are
messages on the runs topic (``CancelRequested``, ``ReplayRequested``) that the
orchestrator applies like any other, so they are answered ``202 Accepted``: the
run changes once the orchestrator has the message, visible in the read model a
moment later. The read model is checked first so that a request for an unknown
run (404) or one in the wrong state (409) says so at once.

``GET /v1/runs/{id}?wait=30s`` and ``GET /v1/events/{id}/runs?wait=30s`` hold the
request until the run (every run of the event) has ended, and answer at once then
(``streams.run_waits``); at the timeout they answer with what stands.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import wraps
from typing import Any

from aiohttp import web

from schemas.messages import CancelRequested, ReplayRequested
from stepstream.options import parse_duration
from streams.http_params import (
    BadInput,
    json_body,
    limit_of,
    optional_str,
    problem,
    status_filter,
    time_range,
)
from streams.paging import decode_cursor
from streams.readmodel import RunStore
from streams.run_waits import RunWaits
from streams.timeline import FINAL

SendControl = Callable[[CancelRequested | ReplayRequested], Awaitable[None]]
"""Produces a control message to the runs topic, keyed by its run id."""
REPLAYABLE = ("failed", "cancelled")
MAX_BULK = 10_000
"""Most runs one bulk replay or cancel selects (the newest first)."""
_SEND_AT_ONCE = 500
_STARTED = {"started_after": "since", "started_before": "until"}
"""A bulk cancel's names of the run list's ``since`` and ``until`` (run start times)."""
MAX_WAIT_S = 60.0
"""Longest ``wait`` a request may ask for (proxies and load balancers cut idle requests
at about a minute): a client that needs longer asks again."""
Handler = Callable[[Any, web.Request], Awaitable[web.StreamResponse]]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _cursor(query: Any) -> str | None:
    cursor = query.get("cursor") or None
    if cursor is not None:
        try:
            decode_cursor(cursor)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
    return cursor


def _wait_s(query: Any) -> float:
    """``wait`` from a query string, in seconds (0: answer at once)."""
    text = query.get("wait") or ""
    if not text:
        return 0.0
    try:
        seconds = parse_duration(text).total_seconds()
    except ValueError as exc:
        raise BadInput(f"wait={text!r}: {exc}") from None
    if seconds > MAX_WAIT_S:
        raise BadInput(f"wait={text!r}: at most {MAX_WAIT_S:.0f}s; ask again to wait longer")
    return seconds


def _answers_bad_input(handler: Handler) -> Handler:
    @wraps(handler)
    async def checked(self: Any, request: web.Request) -> web.StreamResponse:
        try:
            return await handler(self, request)
        except BadInput as exc:
            return problem(exc.status, str(exc))

    return checked


class RunsApi:
    """The ``/v1/runs``, ``/v1/functions/{id}/replay`` and ``/v1/dlq`` routes.

    Args:
        store: the read model.
        send_control: produces cancel and replay requests; None: those routes answer 503.
        functions: ids of the functions this worker registers (listed even without runs).
        replay_window_s: how long after its end a run can be replayed: the engine keeps
            its state that long (``Settings.finished_run_retention_s``).
        retention_s: how long after its end a run stays in the read model
            (``Settings.readmodel_retention_s``): a 404 says so.
    """

    def __init__(self, store: RunStore, send_control: SendControl | None,
                 functions: Iterable[str] = (), *, replay_window_s: float | None = None,
                 retention_s: float | None = None) -> None:
        self.store, self.send_control = store, send_control
        self.waits = RunWaits(store)
        self.registered = sorted(functions)
        self.replay_window_s, self.retention_s = replay_window_s, retention_s

    def routes(self) -> list[web.RouteDef]:
        """The routes, for ``web.Application.add_routes``."""
        return [
            web.get("/v1/runs", self.list_runs),
            web.post("/v1/runs/cancel", self.cancel_matching),
            web.get("/v1/runs/{run_id}", self.get_run),
            web.post("/v1/runs/{run_id}/cancel", self.cancel),
            web.post("/v1/runs/{run_id}/replay", self.replay),
            web.get("/v1/events/{event_id}/runs", self.event_runs),
            web.post("/v1/functions/{function_id}/replay", self.replay_function),
            web.get("/v1/dlq", self.dead_letters),
            web.post("/v1/dlq/{run_id}/replay", self.replay_dead_letter),
        ]

    async def _send(self, message: CancelRequested | ReplayRequested) -> None:
        await self._send_all([message])

    async def _send_all(self, messages: Sequence[CancelRequested | ReplayRequested]) -> None:
        if self.send_control is None:
            raise BadInput("this worker cannot send control messages", status=503)
        for start in range(0, len(messages), _SEND_AT_ONCE):
            await asyncio.gather(*map(self.send_control, messages[start:start + _SEND_AT_ONCE]))

    async def _run(self, request: web.Request) -> dict[str, Any]:
        run_id = request.match_info["run_id"]
        run = await self.store.get_run(run_id)
        if run is None:
            raise self._unknown(run_id)
        return run

    def _unknown(self, run_id: str) -> BadInput:
        kept = "" if self.retention_s is None else (
            f" (finished runs leave the history {self.retention_s / 86400:g} days after "
            "they end)")
        return BadInput(f"no run {run_id!r}{kept}", status=404)

    @_answers_bad_input
    async def list_runs(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        since, until = time_range(query)
        status, limit, cursor = status_filter(query), limit_of(query), _cursor(query)
        page = await self.store.list_runs(function=query.get("function") or None,
                                          status=status, since=since, until=until, limit=limit,
                                          cursor=cursor)
        return web.json_response({"runs": page.items, "next_cursor": page.next_cursor})

    @_answers_bad_input
    async def get_run(self, request: web.Request) -> web.StreamResponse:
        # A run not seen yet is waited for too: its id is known before it starts.
        run_id, wait_s = request.match_info["run_id"], _wait_s(request.query)
        run = await (self.waits.run(run_id, wait_s) if wait_s else self.store.get_run(run_id))
        if run is None:
            raise self._unknown(run_id)
        return web.json_response(run)

    @_answers_bad_input
    async def event_runs(self, request: web.Request) -> web.StreamResponse:
        event_id, wait_s = request.match_info["event_id"], _wait_s(request.query)
        runs = await (self.waits.event_runs(event_id, wait_s) if wait_s
                      else self.store.runs_for_event(event_id))
        return web.json_response({"event_id": event_id, "runs": runs})

    @_answers_bad_input
    async def cancel(self, request: web.Request) -> web.StreamResponse:
        body = await json_body(request, required=False)
        reason = optional_str(body, "reason") or "cancelled through the API"
        run = await self._run(request)
        if run["status"] in FINAL:
            raise BadInput(f"run {run['run_id']!r} is {run['status']} already", status=409)
        await self._send(CancelRequested(run_id=run["run_id"], reason=reason, ts=_now_ms()))
        return web.json_response({"run_id": run["run_id"], "requested": "cancel"}, status=202)

    @_answers_bad_input
    async def cancel_matching(self, request: web.Request) -> web.StreamResponse:
        """Cancel every running run a filter selects (the run list's filters)."""
        body = await json_body(request, required=False)
        function = optional_str(body, "function")
        since, until = time_range({name: str(body[key]) for key, name in _STARTED.items()
                                   if body.get(key) is not None})
        status_filter(body, ("running",))
        limit = limit_of(body, default=MAX_BULK, maximum=MAX_BULK)
        run_ids = await self.store.run_ids(function=function, status="running", since=since,
                                           until=until, limit=limit)
        dry_run = body.get("dry_run") is True
        if not dry_run:
            reason = optional_str(body, "reason") or "cancelled through the API (bulk)"
            now = _now_ms()
            await self._send_all([CancelRequested(run_id=run_id, reason=reason, ts=now)
                                  for run_id in run_ids])
        return web.json_response({"requested": 0 if dry_run else len(run_ids),
                                  "matched": len(run_ids), "run_ids": run_ids,
                                  "dry_run": dry_run}, status=200 if dry_run else 202)

    @_answers_bad_input
    async def replay(self, request: web.Request) -> web.StreamResponse:
        body = await json_body(request, required=False)
        from_step = optional_str(body, "from_step")
        run = await self._run(request)
        if run["status"] not in REPLAYABLE:
            raise BadInput(f"run {run['run_id']!r} is {run['status']}: only failed or "
                           "cancelled runs can be replayed", status=409)
        self._within_replay_window(run)
        if from_step is not None and from_step not in {s["id"] for s in run["steps"]}:
            raise BadInput(f"run {run['run_id']!r} has no step {from_step!r}")
        await self._send(ReplayRequested(run_id=run["run_id"], ts=_now_ms(),
                                         from_step=from_step))
        return web.json_response({"run_id": run["run_id"], "requested": "replay",
                                  "from_step": from_step}, status=202)

    def _within_replay_window(self, run: dict[str, Any]) -> None:
        window = self.replay_window_s
        if window is not None and (run["ended_at"] or 0) < _now_ms() - window * 1000:
            raise BadInput(f"run {run['run_id']!r} ended more than {window:g} s ago: the "
                           "engine no longer holds its state (finished_run_retention_s)",
                           status=409)

    @_answers_bad_input
    async def replay_function(self, request: web.Request) -> web.StreamResponse:
        function_id = request.match_info["function_id"]
        body = await json_body(request, required=False)
        since, until = time_range({k: str(v) for k, v in body.items()
                                   if k in ("since", "until") and v is not None})
        status = status_filter(body, REPLAYABLE) or "failed"
        limit = limit_of(body, default=1000, maximum=MAX_BULK)
        if function_id not in self.registered and not await self.store.has_function(
                function_id):
            raise BadInput(f"no function {function_id!r}", status=404)
        run_ids = await self.store.run_ids(function=function_id, status=status, since=since,
                                           until=until, limit=limit)
        now = _now_ms()
        await self._send_all([ReplayRequested(run_id=run_id, ts=now) for run_id in run_ids])
        return web.json_response({"function_id": function_id, "status": status,
                                  "replayed": len(run_ids), "run_ids": run_ids}, status=202)

    @_answers_bad_input
    async def dead_letters(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        limit, cursor = limit_of(query), _cursor(query)
        page = await self.store.dead_letters(function=query.get("function") or None,
                                             limit=limit, cursor=cursor)
        return web.json_response({"dead_letters": page.items, "next_cursor": page.next_cursor,
                                  "total": await self.store.dlq_size()})

    @_answers_bad_input
    async def replay_dead_letter(self, request: web.Request) -> web.StreamResponse:
        run_id = request.match_info["run_id"]
        letters = await self.store.dead_letters_of(run_id)
        if not letters:
            raise BadInput(f"no dead letter for run {run_id!r}", status=404)
        run = await self._run(request)
        if run["status"] not in REPLAYABLE:
            raise BadInput(f"run {run_id!r} is {run['status']}: its dead letters cannot be "
                           "replayed", status=409)
        self._within_replay_window(run)
        await self._send(ReplayRequested(run_id=run_id, ts=_now_ms()))
        return web.json_response({"run_id": run_id, "requested": "replay",
                                  "steps": [letter["step_id"] for letter in letters]},
                                 status=202)
