"""CEL expressions that fail or go over their budget, in a real worker: the event that
makes them fail does not hold anything up, key expressions fail their runs with the
error, conditions do not match, and ``stepstream_expression_failures`` counts each."""

from __future__ import annotations

import pytest

from stepstream import Stepstream
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.conftest import WorkerFactory
from tests.integration.helpers import get_json, wait_for, wait_for_run
from tests.integration.test_metrics_history import sample, scrape

pytestmark = pytest.mark.integration

MODULE = "tests.integration.expression_functions"


def test_failing_expressions_are_contained_and_counted(settings: Settings,
                                                       start_worker: WorkerFactory) -> None:
    worker = start_worker(MODULE, STEPSTREAM_MONITOR_INTERVAL_S="0.2")
    client = Stepstream("t", settings=settings)
    waiting = run_id_for("waits", client.send("expr/wait", {}))

    def failures(function: str, kind: str, reason: str) -> float:
        return sample(scrape(worker.url), "stepstream_expression_failures_total",
                      function=function, kind=kind, reason=reason) or 0.0

    # The wait must be in the matcher's table before the event it fails on arrives.
    wait_for(lambda: sample(scrape(worker.url), "stepstream_table_keys", table="waiters"),
             what="the wait registered")
    items = client.send("expr/items", {"xs": list(range(1000)), "n": 1, "zero": 0,
                                       "big": 2**62})
    ping = run_id_for("plain", client.send("expr/ping", {}))

    assert wait_for_run(worker.url, ping)["output"] == "pong"
    wait_for(lambda: failures("nested-filter", "filter", "budget") == 1, what="filter counted")
    dividing = wait_for_run(worker.url, run_id_for("dividing-key", items))
    assert dividing["status"] == "failed"
    assert "event.data.n / event.data.zero" in dividing["error"]["message"]
    overflowing = wait_for_run(worker.url, run_id_for("overflowing-key", items))
    assert overflowing["status"] == "failed"
    assert "event.data.big * 4" in overflowing["error"]["message"]
    # Decided with the two above, from the same event: the filter started no run.
    assert get_json(f"{worker.url}/v1/runs/{run_id_for('nested-filter', items)}") is None
    assert wait_for_run(worker.url, waiting)["output"] is None  # timed out: no match
    assert failures("waits", "wait", "budget") == 1
    assert failures("dividing-key", "key", "error") == 1
    assert failures("overflowing-key", "key", "error") == 1
