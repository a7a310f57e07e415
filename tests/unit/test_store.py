"""State stores: writes wait in the overlay until their transaction commits; RocksDB keeps
the committed values with the changelog position they reach, across a restart."""

from __future__ import annotations

from pathlib import Path

from streams.kafka.store import (
    MemoryBackend,
    RocksBackend,
    StateStore,
    WholeValues,
    open_backend,
)


def store(backend: MemoryBackend | RocksBackend | None = None) -> StateStore[str]:
    return StateStore("ns-runs-changelog", 2, MemoryBackend() if backend is None else backend,
                      WholeValues(lambda value: value.encode(), lambda raw: raw.decode()))


def test_writes_are_read_back_at_once_and_reach_the_backend_only_when_committed() -> None:
    runs = store()
    runs.put(b"r1", "first")
    runs.put(b"r1", "second")
    runs.delete(b"r2")
    assert runs.get(b"r1") == "second" and runs.get(b"r2") is None
    assert runs.backend.get(b"r1") is None
    changes = runs.changes()
    assert changes == {b"r1": b"second", b"r2": None}  # one record per key
    seen: list[tuple[bytes, str | None]] = []
    runs.observers.append(lambda key, value: seen.append((key, value)))
    runs.committed(changes, position=17)
    assert runs.backend.get(b"r1") == b"second" and runs.backend.position() == 17
    assert seen == [(b"r1", "second"), (b"r2", None)]
    assert runs.changes() == {}


def test_a_rolled_back_transaction_leaves_the_committed_values() -> None:
    runs = store()
    runs.put(b"r1", "kept")
    runs.committed(runs.changes(), position=None)
    runs.put(b"r1", "lost")
    runs.rolled_back()
    assert runs.get(b"r1") == "kept" and runs.changes() == {}


def test_a_scan_in_a_transaction_sees_its_writes() -> None:
    runs = store()
    runs.put(b"r1", "one")
    runs.put(b"r2", "two")
    runs.committed(runs.changes(), None)
    runs.put(b"r2", "two again")
    runs.delete(b"r1")
    runs.put(b"r3", "three")
    assert sorted(runs.current_values(lambda exc: None)) == [(b"r2", "two again"),
                                                            (b"r3", "three")]
    assert sorted(runs.values(lambda exc: None)) == [(b"r1", "one"), (b"r2", "two")]


def test_restored_records_replace_what_was_decoded() -> None:
    runs = store()
    runs.put(b"r1", "ours")
    runs.committed(runs.changes(), position=5)
    assert runs.get(b"r1") == "ours"
    runs.restored({b"r1": b"theirs", b"r3": b"new"}, position=9)
    assert runs.get(b"r1") == "theirs" and runs.get(b"r3") == "new"
    assert sorted(runs.values(lambda exc: None)) == [(b"r1", "theirs"), (b"r3", "new")]


def test_rocksdb_keeps_values_and_position_across_a_restart(tmp_path: Path) -> None:
    runs = store(RocksBackend(tmp_path / "runs-2"))
    runs.put(b"r1", "one")
    runs.put(b"r2", "two")
    runs.committed(runs.changes(), position=42)
    runs.delete(b"r2")
    runs.committed(runs.changes(), position=43)
    runs.close()
    again = store(RocksBackend(tmp_path / "runs-2"))
    assert again.backend.position() == 43 and len(again) == 1
    assert again.get(b"r1") == "one" and again.get(b"r2") is None
    assert list(again.backend.items()) == [(b"r1", b"one")]
    again.close()


def test_a_rocksdb_store_held_by_another_process_is_kept_in_memory(tmp_path: Path) -> None:
    held = open_backend("rocksdb://", str(tmp_path), "ns/runs-0")
    assert isinstance(held, RocksBackend)
    fallback = open_backend("rocksdb://", str(tmp_path), "ns/runs-0")  # locked
    assert isinstance(fallback, MemoryBackend)
    held.close()
    assert isinstance(open_backend("memory://", str(tmp_path), "ns/runs-0"), MemoryBackend)


def test_rocksdb_stores_keep_their_memtables_within_the_shared_budget(tmp_path: Path) -> None:
    # RocksDB's default memtable (64 MB) would hold these 12 MB in memory; within a
    # budget of 8 MB (streams.kafka.rocks_memory) the store flushes them to disk.
    backend = open_backend("rocksdb://", str(tmp_path), "ns/runs-0", memory_mb=8)
    value = bytes(1024)
    for batch in range(12):
        backend.apply({f"{batch}-{i}".encode(): value for i in range(1024)}, batch)
    flushed = list((tmp_path / "ns" / "runs-0").glob("*.sst"))
    backend.close()
    assert flushed
