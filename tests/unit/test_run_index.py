"""The runs table's own indexes (streams.run_index): written with each state in its
transaction, exact under rewrites and aborts, restored with the table on both backends,
and built once for a partition written before them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError

from schemas.codec import default_codec
from schemas.messages import Dispatched, Event, RunState
from streams.kafka.store import Backend, MemoryBackend, RocksBackend, StateStore
from streams.kafka.task import Outcome, Task
from streams.machine import COMPLETED, RUNNING
from streams.processors.orchestrator import RUNS
from streams.run_index import (
    BUILD_BATCH,
    INDEXED,
    IndexBuild,
    InFlight,
    active_runs,
    count_in_flight,
    finished_by,
    oldest_start,
    run_key,
)
from streams.run_records import RunRecords
from tests.fakes import fake_task

CODEC = default_codec()


def run(run_id: str, status: str = RUNNING, *, started: int = 1000, ended: int | None = None,
        dispatched: bool = False) -> RunState:
    return RunState(
        run_id=run_id, function_id="fn", event=Event(id=f"e-{run_id}", name="t/e",
                                                     data_json="{}", ts=0),
        status=status, seq=1, started_at=started, ended_at=ended,
        dispatched={"1": Dispatched(step_id="s", attempt=1)} if dispatched else {})


def runs_store(backend: Backend | None = None) -> StateStore[RunState]:
    return StateStore("ns-runs-changelog", 0, MemoryBackend() if backend is None else backend,
                      RunRecords(CODEC))


async def write(task: Task, store: StateStore[RunState], *states: RunState) -> None:
    for state in states:
        store.put(state.run_id.encode(), state)
    assert await task.commit() is Outcome.COMMITTED


def finished(store: StateStore[RunState], cutoff_ms: int) -> list[bytes]:
    return [run_key(k) for k in finished_by(store, cutoff_ms)]


def counted(store: StateStore[RunState]) -> InFlight:
    in_flight = InFlight()
    in_flight.restored(0, store)
    store.record_observers.append(lambda changes: in_flight.committed(0, changes))
    return in_flight


@pytest.fixture(params=["memory", "rocksdb"])
def backend(request: Any, tmp_path: Path) -> Backend:
    return MemoryBackend() if request.param == "memory" else RocksBackend(tmp_path / "runs")


async def test_a_run_moves_through_the_index_as_its_status_changes(backend: Backend) -> None:
    store = runs_store(backend)
    task, _ = fake_task(**{RUNS: store})
    in_flight = counted(store)
    await write(task, store, run("a", started=300, dispatched=True), run("b", started=200))
    assert len(in_flight) == 2 and oldest_start(store) == 200
    assert [key for key, _ in active_runs(store)] == [b"a"]
    await write(task, store, run("a", started=300))  # asleep: no longer active
    assert active_runs(store) == [] and len(in_flight) == 2
    await write(task, store, run("b", COMPLETED, started=200, ended=5000))
    assert len(in_flight) == 1 and oldest_start(store) == 300
    assert finished(store, 4999) == [] and finished(store, 5000) == [b"b"]
    await write(task, store, run("b", RUNNING, started=200))  # replayed
    assert finished(store, 10**12) == [] and len(in_flight) == 2
    store.delete(b"a")
    await task.commit()
    assert len(in_flight) == 1 == count_in_flight(store) and len(store) == 1


async def test_finished_runs_come_in_order_of_their_end() -> None:
    store = runs_store()
    task, _ = fake_task(**{RUNS: store})
    await write(task, store, *(run(f"r{i}", COMPLETED, ended=end)
                               for i, end in enumerate([30, 10, 20, 10])))
    assert finished(store, 25) == [b"r1", b"r3", b"r2"]


async def test_an_aborted_transaction_leaves_the_index_and_the_count() -> None:
    store = runs_store()
    task, producer = fake_task(**{RUNS: store})
    in_flight = counted(store)
    store.put(b"a", run("a"))
    producer.fail_next = KafkaError._STATE  # an abortable error
    assert await task.commit() is Outcome.ABORTED
    assert len(in_flight) == 0 == count_in_flight(store) and oldest_start(store) is None
    await write(task, store, run("a"))
    await write(task, store, run("a"))  # written again: its index record is not
    assert len(in_flight) == 1 == count_in_flight(store)


async def test_the_index_is_restored_with_the_table(tmp_path: Path) -> None:
    store = runs_store(RocksBackend(tmp_path / "runs"))
    task, producer = fake_task(**{RUNS: store})
    await write(task, store, run("a", dispatched=True), run("b", COMPLETED, ended=7))
    store.close()
    reopened = runs_store(RocksBackend(tmp_path / "runs"))
    assert [key for key, _ in active_runs(reopened)] == [b"a"]
    assert finished(reopened, 7) == [b"b"] and count_in_flight(reopened) == 1
    # Another worker reads the changelog into memory: the same index.
    records = {key: value for batch, _ in producer.transactions
               for _, _, key, value in batch}
    restored = runs_store()
    restored.restored(records, len(records))
    assert [key for key, _ in active_runs(restored)] == [b"a"]
    assert finished(restored, 7) == [b"b"] and len(restored) == 2


async def test_a_partition_written_before_the_index_is_indexed_in_bounded_batches() -> None:
    store = runs_store()
    count = BUILD_BATCH + 2
    # As a worker of the previous version left it: states only.
    store.restored({f"r{i}".encode(): CODEC.encode(run(f"r{i}", started=i)) for i in range(count)}
                   | {b"done": CODEC.encode(run("done", COMPLETED, ended=5))}, count + 1)
    task, producer = fake_task(**{RUNS: store})
    in_flight = counted(store)
    assert not store.marked(INDEXED) and len(in_flight) == 0
    build = IndexBuild(store)
    assert build.step() is False
    await task.commit()
    assert len(producer.transactions[-1][0]) == 2 * BUILD_BATCH  # a state and its index each
    store.put(b"r1", run("r1", COMPLETED, started=1, ended=9))  # meanwhile, a run ends
    await task.commit()
    assert build.step() is True
    await task.commit()
    assert store.marked(INDEXED) and len(in_flight) == count - 1 == count_in_flight(store)
    assert len(store) == count + 1  # runs: the marker is none
    assert finished(store, 10) == [b"done", b"r1"] and oldest_start(store) == 0
    assert store.get(b"r1") == run("r1", COMPLETED, started=1, ended=9)  # not rewound
