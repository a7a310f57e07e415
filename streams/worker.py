"""Run a worker process: provision topics, start the engine and its HTTP server."""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import signal
from typing import Any

from aiohttp import web

from stepstream.client import Stepstream
from stepstream.events import make_event
from stepstream.step import now_ms
from streams.engine import Engine
from streams.health import BrokerProbe
from streams.http import HttpApi
from streams.http_auth import exposure_warning
from streams.memory import release_periodically
from streams.monitor import Monitor
from streams.sources import check_sources, source_groups
from topics.catalog import catalog
from topics.provision import ensure_topics, existing_partitions

log = logging.getLogger("stepstream.worker")


def build_engine(ss: Stepstream) -> Engine:
    """Check or create the topics, then wire the engine.

    Raises:
        PartitionMismatch: a topic exists with another partition count (refuse to start:
            runs would be routed to partitions the changelog does not match).
        ConnectionError: the broker does not answer.
        ConfigError: a source topic (``TopicTrigger``) does not exist.
    """
    specs = catalog(ss.settings)
    created = ensure_topics(ss.settings, specs)
    if created:
        log.info("created topics: %s", ", ".join(created))
    names = {spec.name for spec in specs}
    existing = existing_partitions(ss.settings)
    check_sources(source_groups(ss.settings.namespace, ss.functions), existing, ss.settings)
    partitions = {name: count for name, count in existing.items() if name in names}
    return Engine(ss, partitions=partitions)


def http_api(engine: Engine, probe: BrokerProbe) -> HttpApi:
    """The worker's HTTP API over ``engine``."""
    settings = engine.settings

    async def send_event(name: str, data: dict[str, Any], event_id: str | None, *,
                         avro_schema: str | dict[str, Any] | None = None) -> str:
        if avro_schema is not None:  # a record for a topic: the SDK's producer writes it
            sent: str = await engine.ss.send_async(name, data, id=event_id,
                                                   avro_schema=avro_schema)
            return sent
        event = make_event(name, data, id=event_id, ts=now_ms(),
                           limit=settings.max_payload_bytes)
        await engine.send("events", event.id, event)
        return event.id

    def ready() -> bool:
        # The consumer keeps its assignment through a broker outage: ask the broker too.
        return engine.ready and probe.reachable

    async def send_control(message: Any) -> None:
        # Cancel and replay requests join the run's other messages on the runs topic.
        await engine.send("runs", message.run_id, message)

    return HttpApi(engine.store, engine.metrics, send_event, ready, send_control=send_control,
                   functions=engine.ss.functions,
                   replay_window_s=engine.settings.finished_run_retention_s,
                   retention_s=engine.settings.readmodel_retention_s,
                   pauses=engine.pauses, send_pause=engine.control,
                   schedules={f.id: f.cron for f in engine.ss.functions.values() if f.cron},
                   max_streams=settings.http_max_streams,
                   stream_heartbeat_s=settings.http_stream_heartbeat_s)


async def serve_http(api: HttpApi, engine: Engine) -> None:
    """Serve ``api`` until cancelled."""
    settings = engine.settings
    app = api.application(token=settings.http_token, bind_host=settings.http_host,
                          allowed_hosts=settings.http_allowed_hosts,
                          session_s=settings.http_session_s)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.http_host, settings.http_port)
        await site.start()
        for host, port in _bound(runner):
            log.warning("stepstream worker: HTTP on http://%s:%s (namespace %s)",
                        host, port, settings.namespace)
        if warning := exposure_warning(settings.http_host, settings.http_token):
            log.error("!!! %s", warning)
        await asyncio.Event().wait()  # until the worker stops and cancels this task
    finally:
        await runner.cleanup()


def _bound(runner: web.AppRunner) -> list[tuple[str, int]]:
    """Where the runner's sites listen."""
    addresses = []
    for address in runner.addresses:
        if isinstance(address, tuple):
            addresses.append((str(address[0]), int(address[1])))
    return addresses


async def run(ss: Stepstream) -> None:
    """Run the engine, its HTTP server and its monitor until SIGTERM/SIGINT."""
    engine = build_engine(ss)
    probe = BrokerProbe(engine.sender.producer, engine.settings.topic("runs"))
    monitor = Monitor(engine)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, engine.stop)
    helpers = [asyncio.ensure_future(job) for job in (
        serve_http(http_api(engine, probe), engine), probe.run(), monitor.run(),
        release_periodically())]
    try:
        await engine.run()
    finally:
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)


def _use_uvloop() -> None:
    """Run the worker's event loop on uvloop: every message costs a few loop turns and
    futures, which uvloop does in C. Without it (not installed, another platform)
    asyncio's loop serves."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run_worker(ss: Stepstream, *, loglevel: str = "warning") -> None:
    """Run the engine until SIGTERM/SIGINT."""
    logging.getLogger().setLevel(loglevel.upper())
    # kill -USR1 <pid> prints every thread's stack to stderr (a stuck worker's post-mortem).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    _use_uvloop()
    asyncio.run(run(ss))
