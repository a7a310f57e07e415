"""``GET /v1/runs/{id}/stream``: a run's steps, progress and end as they happen
(Server-Sent Events).

The stream first sends the run as it stands (``run``), then every step outcome recorded
after the client's ``Last-Event-ID`` (all of them on a first connection), then each new
one as the projector writes it, and ends after the run's ``end`` (``streams.run_events``
numbers the events). Nothing polls Redis: the stream registers for its run on the read
model's ``changed`` channel (``streams.announcements``), where the projector announces
each batch's runs and the executors their progress, and reads the run once per wake-up.

Bounded: at most ``max_streams`` open streams per process (more get 503 with
``Retry-After``), each holding one watcher and no task of its own. A comment line every
``heartbeat_s`` keeps proxies from closing an idle stream, and the socket is looked at
every second, so a client that went away frees its slot within a second (aiohttp does not
cancel a handler whose client left). Redis away: the stream waits, sending heartbeats,
and reads again once the subscription is back. A worker that shuts down ends its streams;
clients reconnect (to another worker) with ``Last-Event-ID`` and lose nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from aiohttp import web
from prometheus_client import Gauge

from streams.announcements import Announcements
from streams.http_params import BadInput, problem
from streams.readmodel import CHANGED_CHANNEL, RunStore
from streams.redis_client import STORE_ERRORS
from streams.run_events import Cursor, LiveEvent, ended_before

log = logging.getLogger("stepstream.http")

MAX_STREAMS = 100
"""Default of ``STEPSTREAM_HTTP_MAX_STREAMS``: open streams per worker process."""
HEARTBEAT_S = 15.0
"""Default of ``STEPSTREAM_HTTP_STREAM_HEARTBEAT_S``: proxies cut idle requests at about
a minute, some at 30 s."""
RETRY_MS = 2000
"""What browsers wait before reconnecting a stream that broke."""
_GONE_CHECK_S = 1.0


def sse(event: LiveEvent) -> bytes:
    """``event`` in the text/event-stream format."""
    data = json.dumps(event.data, separators=(",", ":"), default=str)
    return f"id: {event.id}\nevent: {event.event}\ndata: {data}\n\n".encode()


def _changed_keys(data: bytes | str) -> list[str]:
    try:
        run_ids = json.loads(data)
    except ValueError:
        log.warning("live streams: unexpected announcement %r", data)
        return []
    return [str(run_id) for run_id in run_ids] if isinstance(run_ids, list) else []


def last_event_id(request: web.Request) -> int:
    """Where the client is: ``Last-Event-ID`` (a reconnecting browser sends it), or
    ``?last_event_id=`` (a first connection cannot set the header); 0: nothing yet."""
    text = request.headers.get("Last-Event-ID") or request.query.get("last_event_id") or "0"
    if not text.strip().isdigit():
        raise BadInput(f"Last-Event-ID {text!r}: expected an event id of this stream "
                       "(a whole number)")
    return int(text)


class RunStreams:
    """The ``/v1/runs/{run_id}/stream`` route.

    Args:
        store: the read model.
        max_streams: open streams this process serves at most.
        heartbeat_s: seconds between comment lines on a quiet stream.
        gauge: counts the open streams, if given.
    """

    def __init__(self, store: RunStore, *, max_streams: int = MAX_STREAMS,
                 heartbeat_s: float = HEARTBEAT_S, gauge: Gauge | None = None) -> None:
        self.store, self.max_streams, self.heartbeat_s = store, max_streams, heartbeat_s
        self.gauge = gauge
        self.announcements = Announcements(store, CHANGED_CHANNEL, _changed_keys)
        self.open = 0

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/runs/{run_id}/stream", self.stream)]

    async def close(self) -> None:
        """End every stream (the server shuts down; clients reconnect elsewhere)."""
        await self.announcements.close()

    async def stream(self, request: web.Request) -> web.StreamResponse:
        run_id = request.match_info["run_id"]
        try:
            cursor = Cursor(last_event_id(request))
        except BadInput as exc:
            return problem(exc.status, str(exc))
        if self.open >= self.max_streams:
            response = problem(503, f"this worker serves {self.max_streams} live streams "
                               "already (STEPSTREAM_HTTP_MAX_STREAMS): try again later, "
                               "another worker, or GET /v1/runs/{id}?wait=")
            response.headers["Retry-After"] = "5"
            return response
        self._count(+1)
        try:
            return await self._serve(request, run_id, cursor)
        finally:
            self._count(-1)

    def _count(self, delta: int) -> None:
        self.open += delta
        if self.gauge is not None:
            self.gauge.set(self.open)

    async def _serve(self, request: web.Request, run_id: str, cursor: Cursor
                     ) -> web.StreamResponse:
        announcements = self.announcements
        await announcements.subscribed(self.heartbeat_s)
        with announcements.watching(run_id) as changed:
            doc, progress = await self.store.get_run_live(run_id)  # Redis down: 503
            if doc is None:
                return problem(404, f"no run {run_id!r}")
            if ended_before(doc, cursor.seq):
                return web.Response(status=204)  # the client has the end: stop reconnecting
            response = web.StreamResponse(headers={
                "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no"})  # nginx: do not buffer the stream
            await response.prepare(request)
            try:
                await response.write(f"retry: {RETRY_MS}\n\n".encode())
                await response.write(sse(cursor.opening(doc)))
                while True:
                    for event in cursor.advance(doc, progress):
                        await response.write(sse(event))
                    if cursor.ended or announcements.closing:
                        break
                    await self._quiet(request, response, changed)
                    changed.clear()
                    with contextlib.suppress(*STORE_ERRORS):  # woken again when it is back
                        fresh, progress = await self.store.get_run_live(run_id)
                        if fresh is None:  # expired or rebuilt under the stream
                            break
                        doc = fresh
            except ConnectionError:
                log.debug("live stream of %s: the client went away", run_id)
            return response

    async def _quiet(self, request: web.Request, response: web.StreamResponse,
                     changed: asyncio.Event) -> None:
        """Until the run changes or the server closes; heartbeats meanwhile.

        Raises:
            ConnectionResetError: the client went away.
        """
        loop = asyncio.get_running_loop()
        beat = loop.time() + self.heartbeat_s
        while not changed.is_set() and not self.announcements.closing:
            transport = request.transport
            if transport is None or transport.is_closing():
                raise ConnectionResetError("the client closed the stream")
            if loop.time() >= beat:
                await response.write(b": keep-alive\n\n")
                beat = loop.time() + self.heartbeat_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(),
                                       min(_GONE_CHECK_S, max(0.0, beat - loop.time())))
