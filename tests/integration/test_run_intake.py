"""A worker with ``STEPSTREAM_MAX_ACTIVE_RUNS`` runs waiting for their steps takes no new
events: they wait in Kafka, and start once runs have moved on (``streams.intake``)."""

from __future__ import annotations

import time

import redis

from stepstream import Stepstream
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.conftest import WorkerFactory
from tests.integration.functions import executions, release_key
from tests.integration.helpers import sample, scrape, wait_for, wait_for_run


def gauge(url: str, name: str) -> float:
    value = sample(scrape(url), name)
    assert value is not None, f"{name} not in /metrics"
    return value


def test_events_wait_in_kafka_while_the_worker_has_its_fill_of_active_runs(
        settings: Settings, start_worker: WorkerFactory) -> None:
    worker = start_worker(STEPSTREAM_MAX_ACTIVE_RUNS="2", STEPSTREAM_MONITOR_INTERVAL_S="0.2")
    client = Stepstream("t", settings=settings)
    store = redis.Redis.from_url(settings.redis_url)
    # Two runs reach the limit however the worker batches their events: after the
    # first alone, one run is active and intake goes on.
    first = [run_id_for("held", client.send("test/held", {"i": i})) for i in range(2)]
    wait_for(lambda: executions(store, settings.namespace, first, 1) == 2,
             what="the first two runs in their step")
    wait_for(lambda: gauge(worker.url, "stepstream_run_intake_paused") == 1,
             what="run intake paused")
    assert gauge(worker.url, "stepstream_runs_active") == 2

    later = [run_id_for("held", client.send("test/held", {"i": i})) for i in range(2, 6)]
    # Nothing to wait for: what is checked is that nothing happens. Unpaused, a worker
    # starts such runs within milliseconds.
    time.sleep(1.0)
    assert executions(store, settings.namespace, later, 1) == 0

    store.set(release_key(settings.namespace), 1)
    for run_id in first + later:
        assert wait_for_run(worker.url, run_id)["output"] == "released"
    assert executions(store, settings.namespace, first + later, 1) == 6
    wait_for(lambda: gauge(worker.url, "stepstream_run_intake_paused") == 0,
             what="run intake resumed")
