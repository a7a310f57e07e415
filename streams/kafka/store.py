"""State stores: one partition of a table, backed by a compacted changelog topic.

A store is what a task reads and writes while it processes a batch. Writes go to an
overlay first; the task turns the overlay into changelog records inside its Kafka
transaction (one record per key written, whatever the number of writes), and only
once the transaction has committed does the overlay reach the backend. An aborted
transaction drops the overlay: the store is back where the changelog is, and the
batch is processed again. The backend therefore never holds a write that Kafka
does not, which is what lets the RocksDB backend keep its data across restarts.

Backends hold encoded values (bytes). The newest decoded values are kept beside them,
so a run with many steps is not decoded again at each of its messages.

Keys that begin with ``ORDERED`` (0xFE) are a table's own indexes (``streams.run_index``):
every backend keeps them in order, for range scans (``Backend.range``).
"""

from __future__ import annotations

import bisect
import functools
import logging
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, cast

from streams.kafka.rocks_memory import shared_options

V = TypeVar("V")

log = logging.getLogger("stepstream.store")

_DECODED_KEPT = 512
"""Decoded values remembered per store (about the runs in flight of a partition)."""

_DELETED = object()

ORDERED = b"\xfe"
"""First byte of the keys a backend keeps in order (UTF-8 never holds it: no value's key
begins with it)."""


class Raw(bytes):
    """A record a layout keeps beside the values (a marker), put as it is."""


_UNMARKED = object()
"""In the overlay: a layout's own record (a marker, an index record) deleted."""


def _is_record(written: Any) -> bool:
    """Whether an overlay entry is a layout's own record, not a value."""
    return isinstance(written, Raw) or written is _UNMARKED


class Backend(Protocol):
    """Where a store partition's committed values live."""

    def get(self, key: bytes) -> bytes | None: ...

    def apply(self, changes: dict[bytes, bytes | None], position: int | None) -> None:
        """Write ``changes`` (None deletes) and, if given, the changelog position they
        bring the store to (the next offset to read), atomically."""

    def position(self) -> int | None:
        """The changelog offset to read from to catch up (None: from the start)."""

    def items(self) -> Iterator[tuple[bytes, bytes]]: ...

    def range(self, start: bytes, stop: bytes) -> Iterator[bytes]:
        """The keys in [start, stop), in order; both begin with ``ORDERED``."""

    def __len__(self) -> int: ...

    def close(self) -> None: ...


class MemoryBackend:
    """A dict; restored from the changelog whenever its partition is assigned anew."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._ordered: list[bytes] = []
        """The ``ORDERED`` keys, sorted (mostly appended: index keys begin with a time)."""
        self._position: int | None = None

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def apply(self, changes: dict[bytes, bytes | None], position: int | None) -> None:
        data, ordered = self._data, self._ordered
        for key, value in changes.items():
            if value is None:
                if data.pop(key, None) is not None and key[:1] == ORDERED:
                    del ordered[bisect.bisect_left(ordered, key)]
            else:
                if key[:1] == ORDERED and key not in data:
                    bisect.insort(ordered, key)
                data[key] = value
        if position is not None:
            self._position = position

    def range(self, start: bytes, stop: bytes) -> Iterator[bytes]:
        ordered = self._ordered
        i = bisect.bisect_left(ordered, start)
        while i < len(ordered) and ordered[i] < stop:
            yield ordered[i]
            i += 1

    def position(self) -> int | None:
        return self._position

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(list(self._data.items()))

    def __len__(self) -> int:
        return len(self._data)

    def close(self) -> None:
        pass


_POSITION_KEY = b"\x00stepstream:changelog-position"


class RocksBackend:
    """A RocksDB database per store partition (``rocksdict``), with the changelog
    position it holds written in the same batch as the values: a restarted worker
    reads only the changelog's tail."""

    def __init__(self, path: Path, memory_mb: int = 64) -> None:
        from rocksdict import Rdict

        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(path), shared_options(memory_mb))
        self._count = sum(key != _POSITION_KEY for key in self._db.keys())  # noqa: SIM118

    def get(self, key: bytes) -> bytes | None:
        value = self._db.get(key)
        return None if value is None else bytes(value)

    def apply(self, changes: dict[bytes, bytes | None], position: int | None) -> None:
        from rocksdict import WriteBatch

        batch = WriteBatch()
        for key, value in changes.items():
            had = self._db.get(key) is not None
            if value is None:
                if had:
                    batch.delete(key)
                    self._count -= 1
            else:
                batch.put(key, value)
                self._count += not had
        if position is not None:
            batch.put(_POSITION_KEY, position.to_bytes(8, "big"))
        self._db.write(batch)

    def position(self) -> int | None:
        raw = self._db.get(_POSITION_KEY)
        return None if raw is None else int.from_bytes(raw, "big")

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self._db.items():
            if key != _POSITION_KEY:
                yield cast(bytes, key), cast(bytes, value)

    def range(self, start: bytes, stop: bytes) -> Iterator[bytes]:
        for found in self._db.keys(from_key=start):
            key = cast(bytes, found)
            if key >= stop:
                return
            yield key

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        self._db.close()


def open_backend(url: str, data_dir: str, name: str, *, memory_mb: int = 64) -> Backend:
    """The backend ``url`` names (``memory://`` or ``rocksdb://``) for store ``name``;
    RocksDB stores share ``memory_mb`` (``streams.kafka.rocks_memory``).

    A RocksDB database another process holds open (a frozen worker that lost the
    partition) cannot be shared: that partition is kept in memory instead.
    """
    if not url.startswith("rocksdb://"):
        return MemoryBackend()
    path = Path(data_dir) / name
    try:
        return RocksBackend(path, memory_mb)
    except Exception as exc:  # locked by another process, or damaged
        log.warning("store %s: RocksDB at %s unusable (%s); keeping it in memory", name,
                    path, exc)
        return MemoryBackend()


def wipe_backend(url: str, data_dir: str, name: str) -> None:
    """Remove a RocksDB store's files (its data is no longer ours to trust)."""
    if url.startswith("rocksdb://"):
        shutil.rmtree(Path(data_dir) / name, ignore_errors=True)


class Layout(Protocol[V]):
    """How a store keeps its values as records (key, bytes) in its backend and changelog."""

    def records(self, key: bytes, value: V | None, before: Callable[[], V | None],
                read: Callable[[bytes], bytes | None]) -> dict[bytes, bytes | None]:
        """The records that change when ``key`` goes from its committed value (``before()``,
        decoded only if asked; its records are read with ``read``) to ``value`` (None:
        deleted); None deletes."""

    def value(self, key: bytes, raw: bytes, read: Callable[[bytes], bytes | None]) -> V:
        """The value of ``key``, whose own record is ``raw``; ``read`` reads its others."""

    def owner(self, key: bytes) -> bytes:
        """The key of the value a record belongs to (its own key for a value's record)."""


class WholeValues(Generic[V]):
    """One record per value: its encoding, under its key."""

    def __init__(self, encode: Callable[[V], bytes], decode: Callable[[bytes], V]) -> None:
        self.encode, self.decode = encode, decode

    def records(self, key: bytes, value: V | None, before: Callable[[], V | None],
                read: Callable[[bytes], bytes | None]) -> dict[bytes, bytes | None]:
        return {key: None if value is None else self.encode(value)}

    def value(self, key: bytes, raw: bytes, read: Callable[[bytes], bytes | None]) -> V:
        return self.decode(raw)

    def owner(self, key: bytes) -> bytes:
        return key


class StateStore(Generic[V]):
    """One partition of a table: committed values in a backend, writes of the open
    transaction in an overlay."""

    def __init__(self, changelog: str, partition: int, backend: Backend,
                 layout: Layout[V]) -> None:
        self.changelog, self.partition, self.backend = changelog, partition, backend
        self.layout = layout
        self._overlay: dict[bytes, Any] = {}
        self._decoded: dict[bytes, tuple[bytes, V]] = {}
        self.observers: list[Callable[[bytes, V | None], None]] = []
        """Told the committed value of every key a transaction wrote, once it committed
        or aborted (the run intake, indexes kept beside the store)."""
        self.record_observers: list[Callable[[dict[bytes, bytes | None]], None]] = []
        """Told the records of each transaction that committed (``streams.run_index``
        counts its index keys from them)."""
        self._count = sum(layout.owner(key) == key for key, _ in backend.items())

    def get(self, key: bytes) -> V | None:
        """The value of ``key``, with this transaction's writes."""
        pending = self._overlay.get(key)
        if pending is not None:
            return None if pending is _DELETED or _is_record(pending) else cast(V, pending)
        return self._committed(key)

    def put(self, key: bytes, value: V) -> None:
        self._overlay[key] = value

    def mark(self, key: Raw) -> None:
        """Put a layout's marker record (``key``, empty value) in this transaction."""
        self._overlay[key] = key

    def unmark(self, key: bytes) -> None:
        """Delete a layout's own record (a marker, a stale index record) in this
        transaction."""
        self._overlay[key] = _UNMARKED

    def marked(self, key: Raw) -> bool:
        """Whether the marker ``key`` is committed or put in this transaction."""
        return key in self._overlay or self.backend.get(key) is not None

    def range(self, start: bytes, stop: bytes) -> Iterator[bytes]:
        """Committed ``ORDERED`` keys in [start, stop), in order (``Backend.range``)."""
        return self.backend.range(start, stop)

    def delete(self, key: bytes) -> None:
        self._overlay[key] = _DELETED

    def __len__(self) -> int:
        """Values in the store (a value may take several records, see ``Layout``)."""
        return self._count

    def _counted(self, changes: dict[bytes, bytes | None], keys: Iterable[bytes]) -> None:
        """Count the values ``changes`` (about to be applied) adds or deletes."""
        for key in keys:
            self._count += (changes[key] is not None) - (self.backend.get(key) is not None)

    def _committed(self, key: bytes) -> V | None:
        raw = self.backend.get(key)
        if raw is None:
            return None
        known = self._decoded.get(key)
        if known is not None and known[0] == raw:
            return known[1]
        value = self.layout.value(key, raw, self.backend.get)
        self._remember(key, raw, value)
        return value

    def _remember(self, key: bytes, raw: bytes, value: V) -> None:
        decoded = self._decoded
        decoded.pop(key, None)  # re-inserted last: the oldest go first
        decoded[key] = (raw, value)
        if len(decoded) > _DECODED_KEPT:
            del decoded[next(iter(decoded))]

    # --- the transaction --------------------------------------------------------

    @property
    def written(self) -> bool:
        """Whether the open transaction wrote anything here."""
        return bool(self._overlay)

    def changes(self) -> dict[bytes, bytes | None]:
        """The overlay as records: the changelog records of this transaction."""
        records: dict[bytes, bytes | None] = {}
        for key, value in self._overlay.items():
            if _is_record(value):
                records[key] = None if value is _UNMARKED else b""
                continue
            records.update(self.layout.records(
                key, None if value is _DELETED else value,
                functools.partial(self._committed, key), self.backend.get))
        return records

    def committed(self, changes: dict[bytes, bytes | None], position: int | None) -> None:
        """The transaction that carried ``changes`` committed: they are the store's now."""
        overlay, self._overlay = self._overlay, {}
        self._counted(changes, (key for key, value in overlay.items()
                                if not _is_record(value)))
        self.backend.apply(changes, position)
        for told in self.record_observers:
            told(changes)
        for key, value in overlay.items():
            if _is_record(value):
                continue
            raw = changes.get(key)
            if raw is None or value is _DELETED:
                self._decoded.pop(key, None)
                decoded: V | None = None
            else:
                self._remember(key, raw, value)
                decoded = value
            for observer in self.observers:
                observer(key, decoded)

    def rolled_back(self) -> None:
        """The transaction aborted: its writes never happened."""
        overlay, self._overlay = self._overlay, {}
        if self.observers:
            for key in overlay:
                if _is_record(overlay[key]):
                    continue
                value = self._committed(key)
                for observer in self.observers:
                    observer(key, value)

    # --- restoration and scans --------------------------------------------------

    def restored(self, changes: dict[bytes, bytes | None], position: int) -> None:
        """Records read back from the changelog (another owner's writes, or ours)."""
        for key in changes:
            self._decoded.pop(self.layout.owner(key), None)
        self._counted(changes, (key for key in changes if self.layout.owner(key) == key))
        self.backend.apply(changes, position)

    def values(self, skip: Callable[[Exception], None]) -> Iterator[tuple[bytes, V]]:
        """Every committed value; one that cannot be decoded goes to ``skip``."""
        layout = self.layout
        for key, raw in self.backend.items():
            if layout.owner(key) != key:
                continue  # a part of a value
            try:
                yield key, layout.value(key, raw, self.backend.get)
            except Exception as exc:
                skip(exc)

    def current_values(self, skip: Callable[[Exception], None]
                       ) -> Iterator[tuple[bytes, V]]:
        """Every value with this transaction's writes (a scan in the middle of a batch)."""
        overlay = dict(self._overlay)
        for key, value in self.values(skip):
            if key not in overlay:
                yield key, value
        for key, written in overlay.items():
            if written is not _DELETED and not _is_record(written):
                yield key, cast(V, written)

    def close(self) -> None:
        self.backend.close()
