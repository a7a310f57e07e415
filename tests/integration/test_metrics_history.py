"""``/metrics`` of a real worker after a few runs: counts per function and step, durations,
retries, dead letters, quarantine, per-partition lag, table sizes and worker info.
"""

from __future__ import annotations

import urllib.request

import pytest

from stepstream import Stepstream
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.conftest import WorkerFactory
from tests.integration.helpers import (
    get_json,
    produce_raw,
    sample,
    scrape,
    wait_for,
    wait_for_run,
)

pytestmark = pytest.mark.integration


def post(url: str) -> int:
    request = urllib.request.Request(url, data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as reply:
        return reply.status


def test_metrics_after_a_few_runs(settings: Settings, start_worker: WorkerFactory) -> None:
    worker = start_worker("tests.integration.history_functions",
                          STEPSTREAM_MONITOR_INTERVAL_S="0.2")
    client = Stepstream("t", settings=settings)
    narrated = [run_id_for("narrated", client.send("test/narrated", {})) for _ in range(2)]
    failed = run_id_for("fixable", client.send("test/fixable", {}))
    napping = run_id_for("napper", client.send("test/napper", {"seconds": 120}))
    produce_raw(settings.brokers, settings.topic("events"), b"\x00 not an event")
    for run_id in [*narrated, failed]:
        wait_for_run(worker.url, run_id)
    wait_for(lambda: (get_json(f"{worker.url}/v1/runs/{napping}") or {}).get("steps"), 30,
             "the napper asleep")
    assert post(f"{worker.url}/v1/runs/{napping}/cancel") == 202
    assert wait_for_run(worker.url, napping)["status"] == "cancelled"

    def settled() -> dict[str, float] | None:
        found = scrape(worker.url)
        ready = (sample(found, "stepstream_dlq_size") == 1
                 and sample(found, "stepstream_table_keys", table="runs") == 4
                 and sample(found, "stepstream_quarantined_total") == 1)
        return found if ready else None

    m = wait_for(settled, 30, "the monitor's gauges")

    def count(name: str, **labels: str) -> float | None:
        return sample(m, name, **labels)

    for function, status, n in (("narrated", "completed", 2), ("fixable", "failed", 1),
                                ("napper", "cancelled", 1)):
        assert count("stepstream_runs_started_total", function=function) == n
        assert count("stepstream_runs_finished_total", function=function, status=status) == n
        assert count("stepstream_run_duration_seconds_count", function=function,
                     status=status) == n
    assert count("stepstream_step_attempts_total", function="fixable", step="fragile",
                 outcome="failed") == 2  # its first attempt and its one retry
    assert count("stepstream_step_attempts_total", function="fixable", step="prepare",
                 outcome="completed") == 1
    assert count("stepstream_step_attempts_total", function="narrated", step="second",
                 outcome="completed") == 2
    assert count("stepstream_step_duration_seconds_count", function="fixable",
                 step="fragile") == 2
    assert count("stepstream_step_duration_seconds_bucket", function="narrated", step="first",
                 le="+Inf") == 2
    assert (count("stepstream_retries_scheduled_total", tier="1s") or 0) >= 1
    assert count("stepstream_dead_letters_total", function="fixable") == 1
    assert count("stepstream_quarantined_total", topic=settings.topic("events")) == 1
    assert count("stepstream_dlq_size") == 1
    assert count("stepstream_table_keys", table="runs") == 4
    assert count("stepstream_table_keys", table="waiters") is not None
    for partition in range(settings.partitions):  # one worker owns every partition
        lag = count("stepstream_consumer_partition_lag_messages",
                    topic=settings.topic("runs"), partition=str(partition))
        assert lag is not None and lag >= 0
    info = [series for series in m if series.startswith("stepstream_worker_info{")]
    assert len(info) == 1
    assert f'namespace="{settings.namespace}"' in info[0]
    assert 'app="history-tests"' in info[0]
