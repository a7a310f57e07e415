"""``ctx.patched`` across a deploy: a run in flight on the old code keeps its path."""

from __future__ import annotations

from stepstream import Stepstream
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.conftest import WorkerFactory
from tests.integration.helpers import wait_for, wait_for_run
from tests.integration.test_durable_waits import step_status


def test_a_run_waiting_on_the_old_code_finishes_on_the_old_path_new_runs_take_the_new(
        settings: Settings, start_worker: WorkerFactory) -> None:
    client = Stepstream("t", settings=settings)
    old_code = start_worker("tests.integration.patch_functions_v1")
    before = run_id_for("order", client.send("patch/order.placed", {"order": "o1"}))
    wait_for(lambda: step_status(old_code.url, before, "confirm") == "waiting",
             what="o1 waiting for its confirmation")

    old_code.stop()  # the deploy
    new_code = start_worker("tests.integration.patch_functions_v2")
    client.send("patch/order.confirmed", {"order": "o1"})
    after = run_id_for("order", client.send("patch/order.placed", {"order": "o2"}))
    wait_for(lambda: step_status(new_code.url, after, "confirm") == "waiting",
             what="o2 waiting for its confirmation")
    client.send("patch/order.confirmed", {"order": "o2"})

    old_run, new_run = wait_for_run(new_code.url, before), wait_for_run(new_code.url, after)
    assert old_run["output"] == {"charged": 100, "path": "old"}
    assert [s["id"] for s in old_run["steps"]] == ["price", "confirm", "charge"]
    assert new_run["output"] == {"charged": 120, "path": "new"}
    assert [s["id"] for s in new_run["steps"]] == ["price", "$patch:tax", "add-tax", "confirm",
                                                   "charge"]
