"""Functions over HTTP: list them with their run counts, whether they are paused and
their schedules; pause and resume them (``streams.pauses``; a paused cron function
starts no tick, ``streams.schedules``).

A pause or resume answers ``202 Accepted`` once every partition of the runs topic has
the request: each orchestrator holds (or releases) the function's runs from there on,
a moment later. Asking twice is harmless: the later request holds.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from aiohttp import web

from schemas.messages import FunctionControl
from stepstream.clock import now_ms
from stepstream.cron import Cron
from streams.http_params import BadInput, problem, time_range
from streams.readmodel import RunStore

SendPause = Callable[[FunctionControl], Awaitable[None]]
"""Produces a pause or resume to every partition of the runs topic."""


class PauseStates(Protocol):
    """The read model of paused functions (``streams.pauses.PauseBoard``)."""

    async def states(self) -> dict[str, dict[str, Any]]: ...


class FunctionsApi:
    """The ``/v1/functions`` routes.

    Args:
        store: the run read model.
        functions: ids of the functions this worker registers (listed even without runs).
        pauses: which functions are paused; None: none are shown paused.
        send_pause: produces pauses and resumes; None: those routes answer 503.
        schedules: the cron functions' schedules, by function id.
    """

    def __init__(self, store: RunStore, functions: Iterable[str], *,
                 pauses: PauseStates | None = None, send_pause: SendPause | None = None,
                 schedules: Mapping[str, Cron] | None = None) -> None:
        self.store, self.registered = store, sorted(functions)
        self.pauses, self.send_pause = pauses, send_pause
        self.schedules = dict(schedules or {})

    def routes(self) -> list[web.RouteDef]:
        """The routes, for ``web.Application.add_routes``."""
        return [web.get("/v1/functions", self.functions),
                web.post("/v1/functions/{function_id}/pause", self.pause),
                web.post("/v1/functions/{function_id}/resume", self.resume)]

    async def functions(self, request: web.Request) -> web.StreamResponse:
        try:
            since, until = time_range(request.query)
        except BadInput as exc:
            return problem(exc.status, str(exc))
        found = {f["function_id"]: f for f in await self.store.functions(since=since,
                                                                           until=until)}
        for function_id in self.registered:
            found.setdefault(function_id, {
                "function_id": function_id, "runs": 0, "running": 0, "completed": 0,
                "failed": 0, "cancelled": 0, "failure_rate": None})
        states = await self.pauses.states() if self.pauses is not None else {}
        for function_id, doc in found.items():
            state = states.get(function_id, {})
            doc["paused"] = bool(state.get("paused", False))
            doc["paused_at"] = state.get("ts") if doc["paused"] else None
            cron = self.schedules.get(function_id)
            doc["schedule"] = None if cron is None else {
                "cron": cron.expression, "tz": cron.tz,
                "catch_up_s": None if cron.catch_up_ms is None else cron.catch_up_ms / 1000,
                "next_tick": None if doc["paused"] else cron.next_tick(now_ms())}
        return web.json_response({"functions": [found[k] for k in sorted(found)]})

    async def pause(self, request: web.Request) -> web.StreamResponse:
        return await self._control(request, paused=True)

    async def resume(self, request: web.Request) -> web.StreamResponse:
        return await self._control(request, paused=False)

    async def _control(self, request: web.Request, *, paused: bool) -> web.StreamResponse:
        function_id = request.match_info["function_id"]
        if self.send_pause is None:
            return problem(503, "this worker cannot pause functions")
        if function_id not in self.registered and not await self.store.has_function(
                function_id):
            return problem(404, f"no function {function_id!r}")
        await self.send_pause(FunctionControl(function_id=function_id, paused=paused,
                                              ts=time.time_ns() // 1_000_000))
        return web.json_response({"function_id": function_id, "paused": paused},
                                 status=202)
