"""Fixtures shared by every test: the dev broker, Redis, a namespace, workers.

Integration tests run against the real Tansu broker (one per session, on a free
port, stopped by pid) and real Redis; each test gets its own namespace, so its
own topics, consumer group and Redis keys. ``STEPSTREAM_TEST_BROKER=kafka`` runs
them on one Apache Kafka node instead (``bench/kafka_broker.py``: Java and Maven,
or ``STEPSTREAM_KAFKA_LIBS``); CI stays on Tansu.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bench.kafka_broker import KafkaBroker
from stepstream.devservices import DevBroker, DevRedis, WorkerProcess, forget_namespace
from stepstream.settings import Settings
from streams.readmodel import RunStore

ROOT = Path(__file__).resolve().parent.parent
SLOW_DIRECTORIES = ("chaos", "deploy", "e2e")
"""Suites marked ``slow``: ``pytest -m "not slow"`` is the fast lane (unit and
integration) to run while working; CI runs everything."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(item.path).relative_to(ROOT / "tests").parts[0] in SLOW_DIRECTORIES:
            item.add_marker(pytest.mark.slow)


_worker_logs: list[Path] = []
"""Logs of the workers the running test started: shown when it fails."""
_LOG_TAIL_LINES = 30


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, None]:
    """A failed test's report ends with the tail of each worker's log: CI shows only
    the report, and a worker's view (rebalances, restores, errors) explains most
    failures of the integration tests."""
    report = (yield).get_result()
    if call.when == "setup":
        _worker_logs.clear()
    if report.failed and call.when == "call":
        for log in _worker_logs:
            lines = log.read_text(errors="replace").splitlines() if log.exists() else []
            report.sections.append((f"worker log {log.name} (last {_LOG_TAIL_LINES} lines)",
                                    "\n".join(lines[-_LOG_TAIL_LINES:])))


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevBroker | KafkaBroker]:
    """The session's broker: the dev broker, or Kafka with ``STEPSTREAM_TEST_BROKER=kafka``;
    ``STEPSTREAM_TEST_BROKER_PORT`` names one that runs already (started by hand, to look
    at its topics after a failure)."""
    port = os.environ.get("STEPSTREAM_TEST_BROKER_PORT")
    if port:
        yield DevBroker(port=int(port))
        return
    kind = os.environ.get("STEPSTREAM_TEST_BROKER", "tansu")
    log = tmp_path_factory.mktemp("broker") / f"{kind}.log"
    with KafkaBroker(log_path=log) if kind == "kafka" else DevBroker(log_path=log) as running:
        yield running


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = DevRedis(url=os.environ.get("STEPSTREAM_TEST_REDIS_URL",
                                         "redis://127.0.0.1:6379/0"))
    server.start(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


@contextlib.contextmanager
def namespace(broker: DevBroker | KafkaBroker, redis_url: str) -> Iterator[Settings]:
    """Settings of a new namespace: its own topics, consumer group and Redis keys (gone
    from the shared Redis on exit: CI runs on this machine's Redis as tests leave it)."""
    settings = Settings(brokers=broker.bootstrap, redis_url=redis_url,
                        namespace=f"t{uuid.uuid4().hex[:10]}", partitions=4)
    try:
        yield settings
    finally:
        forget_namespace(redis_url, settings.namespace)


@pytest.fixture
def settings(broker: DevBroker | KafkaBroker, redis_url: str) -> Iterator[Settings]:
    """Settings of a namespace of this test's own."""
    with namespace(broker, redis_url) as settings:
        yield settings


@pytest.fixture
async def run_store(redis_url: str) -> AsyncIterator[RunStore]:
    """A Redis read model of a namespace of this test's own, emptied afterwards."""
    client = aioredis.Redis.from_url(redis_url)
    store = RunStore(client, f"t{uuid.uuid4().hex[:10]}")
    yield store
    await store.flush()
    await client.aclose()


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a worker process these settings."""
    return {"STEPSTREAM_BROKERS": settings.brokers, "STEPSTREAM_REDIS_URL": settings.redis_url,
            "STEPSTREAM_NAMESPACE": settings.namespace,
            "STEPSTREAM_PARTITIONS": str(settings.partitions),
            "STEPSTREAM_SESSION_TIMEOUT_S": "6", "PYTHONPATH": str(ROOT),
            "STEPSTREAM_LOGLEVEL": os.environ.get("STEPSTREAM_LOGLEVEL", "info"),
            # a killed worker's eager chain is re-dispatched after this long (default 60 s)
            "STEPSTREAM_CHAIN_LEASE_MS": "3000"}


WorkerFactory = Callable[..., WorkerProcess]


@contextlib.contextmanager
def worker_factory(settings: Settings, log_dir: Path) -> Iterator[WorkerFactory]:
    """Start worker processes for a namespace; all are stopped on exit."""
    started: list[WorkerProcess] = []

    def start(module: str = "tests.integration.functions", *, ready: bool = True,
              **env: str) -> WorkerProcess:
        log = log_dir / f"worker-{len(started)}.log"
        _worker_logs.append(log)
        worker = WorkerProcess(module, env={**settings_env(settings), **env}, log_path=log,
                               cwd=str(ROOT))
        started.append(worker.start())
        return worker.wait_ready() if ready else worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator[WorkerFactory]:
    """Start worker processes for this test's namespace."""
    with worker_factory(settings, tmp_path) as start:
        yield start
