"""The runs table's indexes, kept in the table itself: what a worker needs to know of all
its runs without holding them in memory or decoding them.

A worker used to learn its runs by decoding every run state of a partition when it was
assigned, and to keep per run, in memory, what the finished-run sweep, the gauges and
the run intake needed. Both grew with the runs kept (200,000 sleeping runs: seconds of
decoding at each assignment, ~0.7 KB of memory each). Instead the runs table's layout
(``streams.run_records``) writes, beside each run state and in the same transaction,
empty records under ordered keys (``streams.kafka.store.ORDERED``)::

    0xFE "F" <ended_at, 8 bytes> <run key>    a finished run, by end (the sweep)
    0xFE "R" <started_at, 8 bytes> <run key>  a run in flight, by start (gauges)
    0xFE "A" <run key>                        a run waiting for a step's answer

They reach the changelog and the backend with the state, so they are restored with
it. A sweep, the oldest run in flight, or the runs to arm leases for after an assignment
are then range scans of keys; only the active runs (a bounded number, see
``streams.intake``) are decoded.

A partition written before these indexes has none: ``IndexBuild`` writes them once, a
bounded number of runs per transaction, then puts ``INDEXED``. A release without the
indexes that runs again (a rollback) leaves records that stand for nothing: the sweep
repairs those it meets (``repair``), so none can hold up the sweep or the oldest run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from schemas.messages import RunState
from streams.kafka.store import ORDERED, Raw, StateStore
from streams.machine import FINAL_STATUSES, RUNNING

FINISHED, IN_FLIGHT, ACTIVE = ORDERED + b"F", ORDERED + b"R", ORDERED + b"A"
_TIME_BYTES = 8
_END = b"\xff"  # past every key of a kind: kinds are one byte, then anything
INDEXED = Raw(ORDERED + b"\x00indexed:1")
"""Marks a partition whose runs are all indexed."""
BUILD_BATCH = 1000
"""Runs ``IndexBuild`` indexes per transaction."""


def is_active(state: RunState | None) -> bool:
    """Whether a run waits for a step request it made to be answered."""
    return state is not None and state.status == RUNNING and bool(state.dispatched)


def index_keys(key: bytes, state: RunState | None) -> frozenset[bytes]:
    """The index records of the run ``key`` in ``state`` (none once deleted)."""
    if state is None:
        return frozenset()
    if state.status in FINAL_STATUSES:
        return frozenset({_timed(FINISHED, state.ended_at or 0, key)})
    timed = _timed(IN_FLIGHT, state.started_at, key)
    return frozenset({timed, ACTIVE + key}) if is_active(state) else frozenset({timed})


def index_records(key: bytes, before: RunState | None, value: RunState | None,
                  read: Callable[[bytes], bytes | None]) -> dict[bytes, bytes | None]:
    """The index records that change from ``before`` to ``value``. Each is checked in
    the backend, so a record is put only where missing and deleted only where present:
    counting them (``InFlight``) is exact, and a state indexed by ``IndexBuild`` is left
    as it is."""
    old, new = index_keys(key, before), index_keys(key, value)
    out: dict[bytes, bytes | None] = {k: None for k in old - new if read(k) is not None}
    out.update({k: b"" for k in new if read(k) is None})
    return out


def run_key(index_key: bytes) -> bytes:
    """The run key an index record belongs to (``b""`` for ``INDEXED``)."""
    if index_key[:2] == ACTIVE:
        return index_key[2:]
    if index_key[:2] in (FINISHED, IN_FLIGHT):
        return index_key[2 + _TIME_BYTES:]
    return b""


def time_of(index_key: bytes) -> int:
    """The end (``FINISHED``) or start (``IN_FLIGHT``) an index key holds, in ms."""
    return int.from_bytes(index_key[2:2 + _TIME_BYTES], "big")


def _timed(kind: bytes, ms: int, key: bytes) -> bytes:
    return kind + max(0, ms).to_bytes(_TIME_BYTES, "big") + key


def finished_by(store: StateStore[RunState], cutoff_ms: int) -> Iterator[bytes]:
    """Index keys of the finished runs that ended at or before ``cutoff_ms``, oldest
    first (``run_key`` gives the run's)."""
    return store.range(FINISHED, FINISHED + (cutoff_ms + 1).to_bytes(_TIME_BYTES, "big"))


def is_stale(store: StateStore[RunState], index_key: bytes) -> bool:
    """Whether ``index_key`` no longer stands for its run's state (with this transaction's
    writes). Only a version that did not keep the index leaves such records: a worker
    rolled back to a release before it, then forward again."""
    key = run_key(index_key)
    return index_key not in index_keys(key, store.get(key))


def repair(store: StateStore[RunState], index_key: bytes) -> None:
    """Delete the stale ``index_key`` in the open transaction, and index its run as it is
    (its layout writes the records that are missing)."""
    store.unmark(index_key)
    key = run_key(index_key)
    state = store.get(key)
    if state is not None:
        store.put(key, state)


def repair_in_flight(store: StateStore[RunState], limit: int) -> int:
    """Repair the stale records at the head of the in-flight index (at most ``limit``),
    so the oldest run in flight is a real one; returns how many. Stale records further
    in come to the head as older runs end."""
    repaired = 0
    for index_key in store.range(IN_FLIGHT, IN_FLIGHT + _END):
        if repaired == limit or not is_stale(store, index_key):
            break
        repair(store, index_key)
        repaired += 1
    return repaired


def oldest_start(store: StateStore[RunState]) -> int | None:
    """When the oldest run in flight of ``store`` started (ms), if any is."""
    first = next(store.range(IN_FLIGHT, IN_FLIGHT + _END), None)
    return None if first is None else time_of(first)


def count_in_flight(store: StateStore[RunState]) -> int:
    """Runs in flight in ``store`` (a scan of keys, nothing decoded)."""
    return sum(1 for _ in store.range(IN_FLIGHT, IN_FLIGHT + _END))


def active_runs(store: StateStore[RunState]) -> list[tuple[bytes, RunState]]:
    """The active runs of ``store``, decoded (a partition holds few: ``streams.intake``)."""
    found = []
    for index_key in store.range(ACTIVE, ACTIVE + _END):
        state = store.get(run_key(index_key))
        if state is not None:
            found.append((run_key(index_key), state))
    return found


class InFlight:
    """Counts the runs in flight of each runs-store partition of this worker: from its
    index once restored, then from the index records each transaction commits."""

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}

    def __len__(self) -> int:
        return sum(self._counts.values())

    def restored(self, partition: int, store: StateStore[RunState]) -> None:
        self._counts[partition] = count_in_flight(store)

    def committed(self, partition: int, changes: dict[bytes, bytes | None]) -> None:
        delta = 0
        for key, value in changes.items():
            if key[:2] == IN_FLIGHT:
                delta += 1 if value is not None else -1
        if delta:
            self._counts[partition] = self._counts.get(partition, 0) + delta

    def forget(self, partition: int) -> None:
        self._counts.pop(partition, None)


class IndexBuild:
    """Indexes the runs of a partition written before the indexes existed, in the task's
    transactions, ``BUILD_BATCH`` runs at a time; then marks it ``INDEXED``."""

    def __init__(self, store: StateStore[RunState]) -> None:
        self.store = store
        self._keys = (key for key, _ in store.backend.items() if store.layout.owner(key) == key)

    def step(self) -> bool:
        """Index the next batch in the open transaction; True once the partition is done."""
        store, done = self.store, 0
        for key in self._keys:
            state = store.get(key)  # as it is now, not as it was when the scan began
            if state is None or all(store.backend.get(k) is not None
                                    for k in index_keys(key, state)):
                continue
            store.put(key, state)  # its layout writes the index records that are missing
            done += 1
            if done == BUILD_BATCH:
                return False
        store.mark(INDEXED)
        return True
