"""Matching events against waiting runs (``wait_for_event``, ``cancel_on``); pure.

A condition sees the run's triggering event as ``event`` and the incoming one as
``async``. Each waiting (run, step) is one entry of the waiters table; ``WaiterIndex``
finds the entries an event may match without looking at the others: the common shape
``async.data.X == event.data.Y`` (alone or in a conjunction ``&&``) is indexed by the
value ``event.data.Y`` has for the waiting run, so the event is compared with the
waiters expecting its own ``data.X`` only. Other conditions (and waiters without one)
are scanned, but only those of the event's name. The index only narrows: every
candidate's full condition is evaluated, so an index can never make an event match.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.messages import CancelRequested, Event, EventMatched, Waiter
from stepstream.events import run_id_for
from stepstream.expressions import matches, size_of
from stepstream.function import FunctionDef

_FIELD = r"(async|event)\.data((?:\.[A-Za-z_][A-Za-z0-9_]*)+)"
_EQUALITY = re.compile(rf"^\s*{_FIELD}\s*==\s*{_FIELD}\s*$")
_NOT_A_CONJUNCTION = re.compile(r"\|\||[?!\"'`()\[\]{}]")
"""Anything that could make ``&&`` other than the top-level operator: then scanned."""

UNKNOWN_FUNCTION = "_unknown"

Path = tuple[str, ...]
"""Keys from ``data`` down to a value, e.g. ``("order", "id")``."""
Slot = tuple[str, Path, Any]
"""Where an entry is indexed: (event name, incoming path, expected value's key)."""


def event_context(event: Event) -> dict[str, Any]:
    """An event as CEL sees it."""
    return {"id": event.id, "name": event.name, "data": json.loads(event.data_json),
            "ts": event.ts}


def function_of(waiter: Waiter, functions: Mapping[str, FunctionDef]) -> str:
    """The id of the function whose run waits (for metrics): the one whose run of the
    triggering event has the waiter's run id, else the only one of that trigger (a batch
    or child run), else ``UNKNOWN_FUNCTION``."""
    for function_id in functions:
        if run_id_for(function_id, waiter.trigger.id) == waiter.run_id:
            return function_id
    same = [f.id for f in functions.values() if f.event_name == waiter.trigger.name]
    return same[0] if len(same) == 1 else UNKNOWN_FUNCTION


def entry_key(waiter: Waiter) -> bytes:
    """The waiters table key of one waiting (run, step)."""
    return "\x00".join((waiter.event_name, waiter.run_id, waiter.step_id)).encode()


def fires(waiter: Waiter, event: Event, incoming: dict[str, Any] | None = None
          ) -> EventMatched | CancelRequested | None:
    """What ``event`` does to ``waiter``'s run, if it matches. A waiter that expired
    before the event happened does not match (its timeout fired). Raises
    ``ExpressionError`` if the condition fails."""
    if waiter.expires_at <= event.ts:
        return None
    context = {"event": event_context(waiter.trigger),
               "async": event_context(event) if incoming is None else incoming}
    if not matches(waiter.condition, context,
                   size_of(waiter.trigger.data_json, event.data_json)):
        return None
    if waiter.kind == "cancel":
        return CancelRequested(run_id=waiter.run_id, ts=event.ts,
                               reason=f"cancelled by event {event.name} ({event.id})")
    return EventMatched(run_id=waiter.run_id, step_id=waiter.step_id, event=event, ts=event.ts)


def indexed_equality(condition: str | None) -> tuple[Path, Path] | None:
    """(incoming path, trigger path) of the first ``async.data.X == event.data.Y`` that
    the condition requires, if it is a conjunction of which one is such."""
    if condition is None or _NOT_A_CONJUNCTION.search(condition):
        return None
    for clause in condition.split("&&"):
        found = _EQUALITY.match(clause)
        if found is None:
            continue
        left, left_path, right, right_path = found.groups()
        if {left, right} == {"async", "event"}:
            incoming, trigger = (left_path, right_path) if left == "async" else (
                right_path, left_path)
            return _path(incoming), _path(trigger)
    return None


def _path(dotted: str) -> Path:
    return tuple(dotted.strip(".").split("."))


_MISSING = object()


def value_key(data: Any, path: Path) -> Any:
    """The key of the scalar at ``path`` in ``data``; ``_MISSING`` if there is none (then
    an equality on it cannot hold). CEL's ``==`` holds between 1 and 1.0, not between
    true and 1: keys are tagged by kind, and whole floats are ints."""
    for name in path:
        if not isinstance(data, dict) or name not in data:
            return _MISSING
        data = data[name]
    if isinstance(data, bool):
        return ("bool", data)
    if isinstance(data, float) and data.is_integer():
        return ("num", int(data))
    if isinstance(data, int | float):
        return ("num", data)
    if isinstance(data, str):
        return ("str", data)
    if data is None:
        return ("null", None)
    return _MISSING  # a list or a map: compared by a scan


def slot_of(waiter: Waiter) -> Slot | None:
    """Where ``waiter`` is indexed; None: it is scanned."""
    paths = indexed_equality(waiter.condition)
    if paths is None:
        return None
    incoming, trigger = paths
    expected = value_key(json.loads(waiter.trigger.data_json), trigger)
    return None if expected is _MISSING else (waiter.event_name, incoming, expected)


@dataclass
class WaiterIndex:
    """The waiters of one table partition, by what they can match (keys only: the
    waiters themselves stay in the table)."""

    _slots: dict[Slot, set[bytes]] = field(default_factory=dict)
    _paths: dict[str, dict[Path, int]] = field(default_factory=dict)
    """event name -> incoming paths indexed under it -> entries."""
    _scanned: dict[str, set[bytes]] = field(default_factory=dict)
    _where: dict[bytes, Slot | str] = field(default_factory=dict)
    """entry key -> its slot, or its event name if it is scanned."""

    def __len__(self) -> int:
        return len(self._where)

    def sync(self, key: bytes, waiter: Waiter | None) -> None:
        """The entry ``key`` is ``waiter`` now (None: it is gone)."""
        self._remove(key)
        if waiter is None:
            return
        slot = slot_of(waiter)
        if slot is None:
            self._scanned.setdefault(waiter.event_name, set()).add(key)
            self._where[key] = waiter.event_name
            return
        self._slots.setdefault(slot, set()).add(key)
        paths = self._paths.setdefault(slot[0], {})
        paths[slot[1]] = paths.get(slot[1], 0) + 1
        self._where[key] = slot

    def _remove(self, key: bytes) -> None:
        where = self._where.pop(key, None)
        if isinstance(where, str):
            _discard(self._scanned, where, key)
        elif where is not None:
            _discard(self._slots, where, key)
            name, path, _ = where
            paths = self._paths[name]
            paths[path] -= 1
            if not paths[path]:
                del paths[path]
                if not paths:
                    del self._paths[name]

    def candidates(self, event: Event, data: Any) -> Iterator[bytes]:
        """Keys of the entries ``event`` (whose decoded data is ``data``) may match."""
        for path in list(self._paths.get(event.name, ())):
            value = value_key(data, path)
            if value is not _MISSING:
                yield from list(self._slots.get((event.name, path, value), ()))
        yield from list(self._scanned.get(event.name, ()))


def _discard(sets: dict[Any, set[bytes]], at: Any, key: bytes) -> None:
    keys = sets.get(at)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del sets[at]
