"""The runs table's layout (streams.run_records): a run's state without its memo, and a
record per memo entry, so a step writes its result once whatever the run's length."""

from __future__ import annotations

from dataclasses import replace

from schemas.codec import default_codec
from schemas.messages import ErrorInfo, Event, MemoEntry, RunState
from streams.kafka.store import ORDERED, MemoryBackend, StateStore, WholeValues
from streams.run_index import index_keys
from streams.run_records import RunRecords, memo_key

CODEC = default_codec()
KEY = b"run-1"


def state(steps: int, **fields: object) -> RunState:
    memo = {f"s{i}": MemoEntry(output_json=f'"out {i}"') for i in range(steps)}
    return replace(RunState(run_id="run-1", function_id="fn", event=Event(
        id="e", name="n", data_json='{"big": "' + "x" * 500 + '"}', ts=0), status="running",
        seq=steps, started_at=0), memo=memo, **fields)


def runs() -> StateStore[RunState]:
    return StateStore("ns-runs-changelog", 0, MemoryBackend(), RunRecords(CODEC))


def write(store: StateStore[RunState], value: RunState | None) -> dict[bytes, bytes | None]:
    if value is None:
        store.delete(KEY)
    else:
        store.put(KEY, value)
    changes = store.changes()
    store.committed(changes, None)
    return changes


def test_a_state_is_read_back_with_its_memo_from_the_records() -> None:
    store = runs()
    write(store, state(3))
    fresh = StateStore("ns-runs-changelog", 0, store.backend, RunRecords(CODEC))  # no cache
    assert fresh.get(KEY) == state(3)
    assert [key for key, _ in fresh.values(lambda exc: None)] == [KEY]


def test_each_step_writes_its_own_entry_and_the_state_without_the_memo() -> None:
    store = runs()
    sizes = []
    for steps in range(1, 301):
        changes = write(store, state(steps))
        # The state last; the run's first write also indexes it (streams.run_index).
        assert [key for key in changes if key[:1] != ORDERED] == [memo_key(KEY, steps - 1), KEY]
        assert list(changes)[-1] == KEY
        sizes.append(sum(len(v or b"") for v in changes.values()))
    # Step 300 writes what step 10 did, but for its longer step id and counters.
    assert sizes[-1] - sizes[9] <= 8


def test_a_replay_that_forgets_steps_deletes_their_records() -> None:
    store = runs()
    write(store, state(4))
    failed = replace(state(4), memo={**state(4).memo, "s3": MemoEntry(error=ErrorInfo(
        type="E", message="boom"))})
    changes = write(store, failed)
    assert set(changes) == {memo_key(KEY, 3), KEY}
    changes = write(store, state(2))  # replayed from s2
    assert changes[memo_key(KEY, 2)] is None and changes[memo_key(KEY, 3)] is None
    assert StateStore("c", 0, store.backend, RunRecords(CODEC)).get(KEY) == state(2)


def test_a_deleted_run_leaves_no_record() -> None:
    store = runs()
    write(store, state(3))
    changes = write(store, None)
    assert all(value is None for value in changes.values())
    assert len(changes) == 5  # three memo entries, the index record, the state
    assert len(store.backend) == 0


def test_a_state_of_the_older_layout_is_read_as_it_is_and_split_at_its_next_write() -> None:
    backend = MemoryBackend()
    backend.apply({KEY: CODEC.encode(state(2))}, None)  # memo inline
    store = StateStore("c", 0, backend, RunRecords(CODEC))
    assert store.get(KEY) == state(2)
    changes = write(store, state(3))
    assert set(changes) == {memo_key(KEY, 0), memo_key(KEY, 1), memo_key(KEY, 2), KEY,
                            *index_keys(KEY, state(3))}
    assert StateStore("c", 0, backend, RunRecords(CODEC)).get(KEY) == state(3)


def test_a_memo_record_belongs_to_its_run_and_no_run_id_looks_like_one() -> None:
    layout = RunRecords(CODEC)
    assert layout.owner(memo_key(KEY, 7)) == KEY
    assert all(layout.owner(key) == KEY for key in index_keys(KEY, state(1)))
    assert layout.owner("ÿ-odd\x00id".encode()) == "ÿ-odd\x00id".encode()
    assert WholeValues(bytes, bytes).owner(b"\xffx") == b"\xffx"


def test_the_store_counts_runs_not_records() -> None:
    store = runs()
    write(store, state(3))
    assert len(store) == 1 and len(store.backend) == 5  # state, 3 memo entries, index
    assert len(StateStore("c", 0, store.backend, RunRecords(CODEC))) == 1
    write(store, None)
    assert len(store) == 0
