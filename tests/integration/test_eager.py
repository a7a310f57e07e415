"""Eager step execution: chains of steps in one dispatch, each result still durable."""

from __future__ import annotations

import collections
import time

import pytest
import redis

from schemas.codec import default_codec
from schemas.messages import HistoryRecord, StepRequest
from stepstream import Stepstream
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.conftest import WorkerFactory
from tests.integration.functions import executions_key
from tests.integration.helpers import read_all, wait_for, wait_for_run


def history_of(settings: Settings, run_id: str) -> list[HistoryRecord]:
    codec = default_codec()
    records = [codec.decode_as(m.value(), HistoryRecord)
               for m in read_all(settings.brokers, settings.topic("history"))]
    unique = {r.seq: r for r in records if r.run_id == run_id}  # redeliveries share a seq
    return [unique[seq] for seq in sorted(unique)]


def dispatches_of(settings: Settings, run_id: str) -> list[StepRequest]:
    codec = default_codec()
    return [r for m in read_all(settings.brokers, settings.topic("steps"))
            if (r := codec.decode_as(m.value(), StepRequest)).run_id == run_id]


def test_a_chain_applies_every_step_once_and_in_order_within_its_budget(
        settings: Settings, start_worker: WorkerFactory) -> None:
    worker = start_worker(STEPSTREAM_CHAIN_MAX_STEPS="5")
    event_id = Stepstream("t", settings=settings).send("test/chain", {"steps": 12})
    run = wait_for_run(worker.url, run_id_for("chain", event_id))
    assert run["output"] == {"total": 12}

    completed = [r.step_id for r in history_of(settings, run["run_id"])
                 if r.kind == "step.completed"]
    assert completed == [f"s{i}" for i in range(12)]
    # 12 steps, at most 5 per dispatch: three dispatches, not twelve.
    assert [d.seq for d in dispatches_of(settings, run["run_id"])] == [1, 2, 3]


@pytest.mark.parametrize("takeover", ["false", "true"], ids=["lease", "takeover"])
def test_a_worker_killed_mid_chain_leads_to_a_completed_run_with_each_step_applied_once(
        settings: Settings, start_worker: WorkerFactory, takeover: str) -> None:
    victim = start_worker(STEPSTREAM_CHAIN_TAKEOVER=takeover)
    run_id = run_id_for("chain", Stepstream("t", settings=settings).send(
        "test/chain", {"steps": 30, "pause": 0.1}))
    store = redis.Redis.from_url(settings.redis_url)

    def executed(step: int) -> int:
        return int(store.get(executions_key(settings.namespace, run_id, f"s{step}")) or 0)

    wait_for(lambda: executed(5) >= 1, what="the chain under way")
    victim.kill()
    killed_at = time.monotonic()
    survivor = start_worker(STEPSTREAM_CHAIN_TAKEOVER=takeover)
    run = wait_for_run(survivor.url, run_id, timeout=90)
    assert run["output"] == {"total": 30}

    applied: dict[str, int] = collections.Counter(
        r.step_id for r in history_of(settings, run_id) if r.kind == "step.completed")
    assert sorted(applied) == sorted(f"s{i}" for i in range(30))
    assert set(applied.values()) == {1}
    counts = [executed(i) for i in range(30)]
    assert min(counts) == 1
    print(f"\nchain of 30 killed at step ~5: {sum(counts) - 30} steps re-executed, "
          f"done {time.monotonic() - killed_at:.1f}s after the kill")


def test_a_chained_step_slower_than_the_lease_runs_once(
        settings: Settings, start_worker: WorkerFactory) -> None:
    lease_s = 3.0  # STEPSTREAM_CHAIN_LEASE_MS of the test workers (tests/conftest.py)
    worker = start_worker()
    run_id = run_id_for("chain", Stepstream("t", settings=settings).send(
        "test/chain", {"steps": 3, "pauses": {"s1": 2.5 * lease_s}}))
    run = wait_for_run(worker.url, run_id, timeout=60)
    assert run["output"] == {"total": 3}

    # The executor's heartbeats kept the lease: the slow step ran once, in one chain.
    store = redis.Redis.from_url(settings.redis_url)
    assert [int(store.get(executions_key(settings.namespace, run_id, f"s{i}")) or 0)
            for i in range(3)] == [1, 1, 1]
    kinds = [r.kind for r in history_of(settings, run_id)]
    assert "chain.expired" not in kinds
    # s0 and s1 in the first dispatch; the chain's time budget (2 s) ended it after s1.
    assert [d.seq for d in dispatches_of(settings, run_id)] == [1, 2]
