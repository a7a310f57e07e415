"""A finished run leaves the runs table (a changelog tombstone) after
``finished_run_retention_s``; a duplicate of its event produced after that starts it
again, as the README says."""

from __future__ import annotations

import redis

from stepstream import Stepstream
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.conftest import WorkerFactory
from tests.integration.functions import executions
from tests.integration.helpers import read_all, wait_for, wait_for_run


def test_a_finished_run_is_deleted_after_the_window(settings: Settings,
                                                     start_worker: WorkerFactory) -> None:
    worker = start_worker(STEPSTREAM_FINISHED_RUN_RETENTION_S="1")
    client = Stepstream("t", settings=settings)
    run_id = run_id_for("chain", client.send("test/chain", {"steps": 1}, id="expiring"))
    first = wait_for_run(worker.url, run_id)
    assert first["status"] == "completed"
    changelog = f"{settings.namespace}-runs-changelog"

    def tombstoned() -> bool:
        values = [m.value() for m in read_all(settings.brokers, changelog)
                  if m.key() == run_id.encode()]
        return bool(values) and values[-1] is None

    wait_for(tombstoned, what="the run's tombstone in the runs changelog")
    store = redis.Redis.from_url(settings.redis_url)
    assert executions(store, settings.namespace, [run_id], 1) == 1
    client.send("test/chain", {"steps": 1}, id="expiring")  # its state is gone: runs again
    wait_for(lambda: executions(store, settings.namespace, [run_id], 1) == 2,
             what="the duplicate's run executing its step")
    # The read model shows the new run, not the first one's end.
    again = wait_for(lambda: (run := wait_for_run(worker.url, run_id))["started_at"]
                     > first["ended_at"] and run, what="the new run in the read model")
    assert again["status"] == "completed" and again["output"] == first["output"]
