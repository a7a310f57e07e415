"""kill -9 of a worker in the middle of runs loses no run and applies no step twice."""

from __future__ import annotations

import collections
import time

import redis

from schemas.codec import default_codec
from schemas.messages import HistoryRecord
from stepstream import Stepstream
from stepstream.events import run_id_for
from stepstream.settings import Settings
from tests.conftest import WorkerFactory
from tests.integration.functions import executions, executions_key
from tests.integration.helpers import read_all, wait_for, wait_for_run

RUNS, STEPS = 24, 6


def test_sigkill_of_a_worker_mid_run_loses_nothing(settings: Settings,
                                                   start_worker: WorkerFactory) -> None:
    victim = start_worker()
    survivor = start_worker()
    client = Stepstream("t", settings=settings)
    run_ids = [run_id_for("chain", client.send("test/chain", {"steps": STEPS, "pause": 0.05}))
               for _ in range(RUNS)]
    store = redis.Redis.from_url(settings.redis_url)

    def executed() -> int:
        return executions(store, settings.namespace, run_ids, STEPS)

    # Kill while runs are in flight: some steps done, most not.
    wait_for(lambda: executed() >= RUNS, what="a first wave of steps")
    victim.kill()
    killed_at = time.monotonic()
    start_worker()  # a replacement joins while the survivor takes over

    runs = [wait_for_run(survivor.url, run_id, timeout=120) for run_id in run_ids]
    recovered_in = time.monotonic() - killed_at

    assert [r["status"] for r in runs] == ["completed"] * RUNS
    assert [r["output"] for r in runs] == [{"total": STEPS}] * RUNS
    # Independent record 1: every step really ran, at least once.
    counts = [int(store.get(executions_key(settings.namespace, r, f"s{i}")) or 0)
              for r in run_ids for i in range(STEPS)]
    assert min(counts) >= 1
    # Independent record 2: the history topic. A step's result is applied once per run:
    # one step.completed transition (distinct seq) per step, whatever was redelivered.
    records = read_all(settings.brokers, settings.topic("history"))
    applied: dict[tuple[str, str], set[int]] = collections.defaultdict(set)
    codec = default_codec()
    for message in records:
        record = codec.decode_as(message.value(), HistoryRecord)
        if record.kind == "step.completed":
            applied[(record.run_id, record.step_id or "")].add(record.seq)
    missing = {(r, f"s{i}") for r in run_ids for i in range(STEPS)} - set(applied)
    assert not missing, f"no step.completed for (run, step): {sorted(missing)}"
    assert len(applied) == RUNS * STEPS
    twice = {key: sorted(seqs) for key, seqs in applied.items() if len(seqs) != 1}
    assert not twice, f"step.completed at several seqs (run, step): {twice}"
    print(f"\nre-executed steps after SIGKILL: {sum(counts) - len(counts)} of {len(counts)}; "
          f"all runs done {recovered_in:.1f}s after the kill")
