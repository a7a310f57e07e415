"""A rolling upgrade of stepstream itself: runs in flight on a worker of the previous
version (its schemas one field behind, ``tests.schema_evolution``), a worker of this
version joins, the previous one stops; every run completes and nothing is quarantined.

While both run, the previous version's worker meets this version's records (on its
events and runs partitions, in the history) and waits at them instead of setting them
aside. This version reads the previous one's records, and its run states and waiters
from the changelogs, with schema resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from schemas.codec import AvroCodec
from schemas.versions import SCHEMA_DIR
from stepstream import Stepstream
from stepstream.events import make_event, run_id_for
from stepstream.settings import Settings
from stepstream.step import now_ms
from tests.conftest import WorkerFactory
from tests.integration.helpers import get_json, produce_raw, read_all, wait_for, wait_for_run
from tests.schema_evolution import previous_version, this_version_released

RUNS = 6
WORKER = "tests.integration.version_functions"


def test_a_rolling_upgrade_completes_every_run_and_quarantines_nothing(
        settings: Settings, start_worker: WorkerFactory, tmp_path: Path) -> None:
    previous_schemas, previous_released = previous_version(tmp_path / "previous")
    previous = start_worker(WORKER, STEPSTREAM_TEST_SCHEMA_DIR=str(previous_schemas),
                            STEPSTREAM_TEST_RELEASED_DIR=str(previous_released))
    # Runs started by an app of the previous version, waiting for an event when the
    # upgrade begins: their states and waiters are in the changelogs in its schemas.
    previous_codec = AvroCodec(previous_schemas, previous_released)
    waiting = []
    for i in range(RUNS):
        event = make_event("kit/invoice.created", {"invoice_id": f"inv-{i}", "timeout": 300},
                           id=None, ts=now_ms(), limit=settings.max_payload_bytes)
        produce_raw(settings.brokers, settings.topic("events"), previous_codec.encode(event),
                    key=event.id.encode())
        waiting.append(run_id_for("approver", event.id))
    for run_id in waiting:
        wait_for(lambda run_id=run_id: (get_json(f"{previous.url}/v1/runs/{run_id}")
                                        or {}).get("steps"), what="the wait registered")

    this = start_worker(WORKER, STEPSTREAM_TEST_SCHEMA_DIR=str(SCHEMA_DIR),
                        STEPSTREAM_TEST_RELEASED_DIR=str(this_version_released(
                            tmp_path / "this", previous_released)))
    # Runs started by an app of this version while both workers share the partitions.
    client = Stepstream("t", settings=settings)
    doubled = {run_id_for("doubler", client.send("kit/double", {"n": i})): 2 * i
               for i in range(RUNS)}
    assert previous.log_path is not None
    wait_for(lambda: "written by a newer stepstream" in previous.log_path.read_text(),
             what="the previous version waiting at a record of this one")
    previous.stop()  # the rollout replaces it
    for i in range(RUNS):
        client.send("kit/invoice.approved", {"invoice_id": f"inv-{i}", "by": f"user-{i}"})

    def output(run_id: str) -> Any:
        run = wait_for_run(this.url, run_id, timeout=120)
        return run["status"], run["output"]

    assert [output(run_id) for run_id in waiting] == [
        ("completed", {"approved": True, "by": f"user-{i}"}) for i in range(RUNS)]
    assert {run_id: output(run_id) for run_id in doubled} == {
        run_id: ("completed", n) for run_id, n in doubled.items()}
    assert read_all(settings.brokers, settings.topic("quarantine")) == []
