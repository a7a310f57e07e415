"""Run a worker process: provision topics, start the engine and its HTTP server."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from aiohttp import web

from stepstream.client import Stepstream
from stepstream.events import make_event
from stepstream.step import now_ms
from streams.engine import Engine
from streams.health import BrokerProbe
from streams.http import HttpApi
from streams.http_auth import exposure_warning
from streams.monitor import install_monitor
from topics.provision import ensure_topics

log = logging.getLogger("stepstream.worker")


def build_engine(ss: Stepstream) -> Engine:
    """Check or create the topics, then wire the engine and its HTTP server.

    Raises:
        PartitionMismatch: a topic exists with another partition count (refuse to start:
            runs would be routed to partitions the changelog does not match).
        ConnectionError: the broker does not answer.
    """
    engine = Engine(ss)
    created = ensure_topics(ss.settings, engine.specs)
    if created:
        log.info("created topics: %s", ", ".join(created))
    _serve_http(engine)
    install_monitor(engine)
    return engine


def _serve_http(engine: Engine) -> None:
    settings, app = engine.settings, engine.app

    async def send_event(name: str, data: dict[str, Any], event_id: str | None) -> str:
        event = make_event(name, data, id=event_id, ts=now_ms(),
                           limit=settings.max_payload_bytes)
        await (await engine.topic("events").send(key=event.id.encode(),
                                                 value=engine.codec.encode(event)))
        return event.id

    probe = BrokerProbe(app, settings.topic("runs"))
    app.task(probe.run)

    def ready() -> bool:
        # Faust keeps its assignment through a broker outage: ask the broker too.
        return (bool(app.consumer.assignment()) and not app.rebalancing and probe.reachable
                and engine.delays.joined)

    async def send_control(message: Any) -> None:
        # Cancel and replay requests join the run's other messages on the runs topic.
        await (await engine.topic("runs").send(key=message.run_id.encode(),
                                               value=engine.codec.encode(message)))

    api = HttpApi(engine.store, engine.metrics, send_event, ready, send_control=send_control,
                  functions=engine.ss.functions)

    @app.task
    async def serve() -> None:
        runner = web.AppRunner(api.application(token=settings.http_token), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, settings.http_host, settings.http_port)
            await site.start()
            for sock in site._server.sockets if site._server else ():  # type: ignore[attr-defined]
                host, port = sock.getsockname()[:2]
                log.warning("stepstream worker: HTTP on http://%s:%s (namespace %s)",
                            host, port, settings.namespace)
            if warning := exposure_warning(settings.http_host, settings.http_token):
                log.error("!!! %s", warning)
            await asyncio.Event().wait()  # until the worker stops and cancels this task
        finally:
            await runner.cleanup()


def _use_uvloop() -> None:
    """Run the worker's event loops (the agents' and the consumer thread's) on uvloop.

    Every message costs a few loop turns, socket reads and writes and futures; uvloop
    does them in C. Without it (not installed, another platform) asyncio's loop serves.
    """
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


class _QuietWorker(faust.Worker):
    """Faust's worker without its terminal spinner.

    The spinner sets the root logger to DEBUG so that it can spin on every record; every
    aiokafka debug call then builds a record. Profiled: 16% of a busy worker's CPU.
    """

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        super().on_setup_root_logger(logger, level)


def run_worker(ss: Stepstream, *, loglevel: str = "warning") -> None:
    """Run the engine until SIGTERM/SIGINT."""
    _use_uvloop()
    engine = build_engine(ss)
    worker = _QuietWorker(engine.app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
