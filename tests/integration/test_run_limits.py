"""Results too large fail their run with an error that names the limit and the step;
the worker and its other runs go on (nothing is retried forever)."""

from __future__ import annotations

from stepstream import Stepstream
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.conftest import WorkerFactory
from tests.integration.helpers import wait_for_run


def test_results_over_their_limits_fail_the_run_and_the_worker_goes_on(
        settings: Settings, start_worker: WorkerFactory) -> None:
    worker = start_worker(STEPSTREAM_RUN_STATE_MAX_BYTES="2000000")
    client = Stepstream("t", settings=settings)
    # Over the broker's record limit (1 MB) and the payload limit.
    huge = run_id_for("bulky", client.send("test/bulky", {"sizes": [1_500_000]}))
    # Each under the limits; the third brings the run past its state budget.
    growing = run_id_for("bulky", client.send("test/bulky", {"sizes": [800_000] * 3}))
    fine = run_id_for("chain", client.send("test/chain", {"steps": 3}))

    huge_run = wait_for_run(worker.url, huge)
    assert huge_run["status"] == "failed"
    assert "SerializationError" in str(huge_run["error"])
    assert "over the limit" in huge_run["error"]["message"]

    growing_run = wait_for_run(worker.url, growing)
    assert growing_run["status"] == "failed"
    assert growing_run["error"]["type"] == "RunStateTooLarge"
    assert "'b2'" in growing_run["error"]["message"]
    assert "STEPSTREAM_RUN_STATE_MAX_BYTES" in growing_run["error"]["message"]
    assert [s["id"] for s in growing_run["steps"] if s["status"] == "completed"] == [
        "b0", "b1"]

    assert wait_for_run(worker.url, fine)["output"] == {"total": 3}
