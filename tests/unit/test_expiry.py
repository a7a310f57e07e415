"""Finished runs leave the runs table after the retention window (streams.expiry): the
sweep deletes due markers in the task's transaction, leaves recent and replayed runs,
bounds its transaction, and tries again after an abort."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError

from schemas.codec import default_codec
from schemas.messages import Event, RunState
from stepstream.step import now_ms
from streams.expiry import SWEEP_LIMIT, FinishedRuns
from streams.kafka.store import ORDERED, MemoryBackend, StateStore
from streams.kafka.task import Outcome
from streams.machine import COMPLETED, FAILED, RUNNING
from streams.processors.orchestrator import RUNS
from streams.run_index import IN_FLIGHT, finished_by, run_key
from streams.run_records import RunRecords
from tests.fakes import fake_task

HOUR_MS = 3600 * 1000
IN_FLIGHT_RANGE = (IN_FLIGHT, IN_FLIGHT + b"\xff")
CODEC = default_codec()


def state(run_id: str, status: str, ended_ago_ms: int | None) -> RunState:
    ended = None if ended_ago_ms is None else now_ms() - ended_ago_ms
    return RunState(run_id=run_id, function_id="fn", event=Event(
        id=f"evt-{run_id}", name="test/e", data_json="{}", ts=0), status=status, seq=1,
        started_at=0, ended_at=ended)


async def runs_task(*states: RunState) -> tuple[Any, Any, StateStore[RunState], FinishedRuns]:
    """A task whose runs store holds ``states``, written (with their index) in a
    transaction that committed."""
    store: StateStore[RunState] = StateStore("ns-runs-changelog", 0, MemoryBackend(),
                                             RunRecords(CODEC))
    task, producer = fake_task(**{RUNS: store})
    for s in states:
        store.put(s.run_id.encode(), s)
    assert await task.commit() is Outcome.COMMITTED
    producer.transactions.clear()
    return task, producer, store, FinishedRuns(retention_s=3600)


def tombstones(producer: Any) -> list[bytes]:
    """The run states deleted (their index records go with them)."""
    return [key for records, _ in producer.transactions
            for topic, _, key, value in records
            if topic == "ns-runs-changelog" and value is None and key[:1] != ORDERED]


async def test_markers_past_the_window_are_deleted_in_the_transaction() -> None:
    task, producer, store, finished = await runs_task(
        state("old", COMPLETED, 2 * HOUR_MS), state("old-failed", FAILED, 2 * HOUR_MS),
        state("recent", COMPLETED, 60_000), state("running", RUNNING, None))
    assert finished.sweep(task) == 2
    assert await task.commit() is Outcome.COMMITTED
    assert sorted(tombstones(producer)) == [b"old", b"old-failed"]
    assert store.get(b"old") is None and store.get(b"recent") is not None
    assert store.get(b"running") is not None
    assert finished.sweep(task) == 0  # "recent" waits its turn
    assert [run_key(k) for k in finished_by(store, now_ms())] == [b"recent"]


async def test_a_run_that_ends_is_deleted_once_its_window_is_over() -> None:
    task, producer, store, finished = await runs_task(state("r", RUNNING, None))
    store.put(b"r", state("r", COMPLETED, 2 * HOUR_MS))  # ended (in the past, for the test)
    await task.commit()
    assert finished.sweep(task) == 1
    await task.commit()
    assert tombstones(producer) == [b"r"] and len(store) == 0


async def test_a_run_replayed_after_it_ended_is_left_alone() -> None:
    task, _, store, finished = await runs_task(state("r", FAILED, 2 * HOUR_MS))
    store.put(b"r", state("r", RUNNING, None))  # replayed: running again
    await task.commit()
    assert finished.sweep(task) == 0
    store.put(b"r", state("r", FAILED, 60_000))  # failed again, a minute ago
    await task.commit()
    assert finished.sweep(task) == 0 and store.get(b"r") is not None


async def test_one_sweep_deletes_a_bounded_number_the_next_the_rest() -> None:
    task, producer, store, finished = await runs_task(
        *(state(f"r{i}", COMPLETED, 2 * HOUR_MS) for i in range(SWEEP_LIMIT + 5)))
    assert finished.sweep(task) == SWEEP_LIMIT
    await task.commit()
    assert finished.sweep(task) == 5
    await task.commit()
    assert len(store) == 0 and len(tombstones(producer)) == SWEEP_LIMIT + 5


async def test_deletions_of_an_aborted_transaction_are_swept_again() -> None:
    task, producer, store, finished = await runs_task(state("r", COMPLETED, 2 * HOUR_MS))
    assert finished.sweep(task) == 1
    producer.fail_next = KafkaError._STATE  # an abortable error
    assert await task.commit() is Outcome.ABORTED
    assert store.get(b"r") is not None
    assert finished.sweep(task) == 1
    assert await task.commit() is Outcome.COMMITTED
    assert tombstones(producer) == [b"r"] and store.get(b"r") is None


async def test_index_records_a_release_without_the_index_left_are_deleted() -> None:
    task, producer, store, finished = await runs_task(
        state("gone", COMPLETED, 2 * HOUR_MS), state("old", COMPLETED, 2 * HOUR_MS),
        state("asleep", RUNNING, None), state("later", RUNNING, None))
    # Rolled back, a release without the index deleted "gone" and ended "asleep", then
    # the rollout went forward again: their records in the index stand for nothing.
    store.restored({b"gone": None, b"asleep": CODEC.encode(state("asleep", FAILED, 0))}, 9)
    assert finished.sweep(task) == 1
    assert await task.commit() is Outcome.COMMITTED
    assert tombstones(producer) == [b"old"]
    assert list(finished_by(store, now_ms() - HOUR_MS)) == []
    assert [run_key(k) for k in store.range(*IN_FLIGHT_RANGE)] == [b"later"]
    # "asleep" ended under that release: indexed as finished now, swept in its turn.
    assert [run_key(k) for k in finished_by(store, now_ms())] == [b"asleep"]
