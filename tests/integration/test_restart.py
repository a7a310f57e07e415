"""Every worker of a namespace stopped cleanly, as a deploy does, and new ones take over.

On the dev broker this needs its gate: a member that leaves a group while it rebalances
can stay its leader in Tansu 0.6, and then no member ever gets partitions
(``stepstream.tansu_gate``)."""

from __future__ import annotations

from stepstream import Stepstream
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.conftest import WorkerFactory
from tests.integration.helpers import wait_for_run

READY_TIMEOUT = 120.0
"""Generous: readiness takes a session timeout (6 s) and a rebalance or two."""


def test_new_workers_take_over_from_workers_all_stopped_by_sigterm(
        settings: Settings, start_worker: WorkerFactory) -> None:
    old = [start_worker(), start_worker()]
    client = Stepstream("t", settings=settings)
    first = run_id_for("chain", client.send("test/chain", {"steps": 2}))
    assert wait_for_run(old[0].url, first)["status"] == "completed"

    for worker in old:  # the second leaves while the first one's leave rebalances its groups
        worker.stop()

    new = [start_worker(ready=False), start_worker(ready=False)]
    for worker in new:
        worker.wait_ready(READY_TIMEOUT)
    after = run_id_for("chain", client.send("test/chain", {"steps": 2}))
    run = wait_for_run(new[1].url, after, timeout=READY_TIMEOUT)
    assert (run["status"], run["output"]) == ("completed", {"total": 2})
