"""Catch a handler that replays differently from how it ran (``NondeterminismError``).

The memo alone cannot tell a nondeterministic handler (steps in another order on
every replay) from a deploy that changed the code between two dispatches, which
docs/production.md allows. A worker process runs one version of the code, though: if
two dispatches of a run on the same process ask for their steps in different orders,
the handler itself is nondeterministic. So each process remembers, per run, the step
ids the last dispatch asked for, in order; the next dispatch must ask for the same ids
first. Dispatches of a run on another worker (after a takeover) start afresh.

A replay of a finished run forgets memo entries (``ReplayRequested``) and may then take
another path legitimately: an expectation is only used while the run's memo still holds
every entry it held when the path was recorded (within a run the memo only grows).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any


class ReplayPaths:
    """Per run: the step ids of its last dispatch on this process, bounded (LRU).

    About twice the runs a worker keeps active (``STEPSTREAM_MAX_ACTIVE_RUNS``, 1,000):
    the check matters between a run's dispatches in quick succession; a run that slept
    a week is checked afresh (an entry holds ~0.4 KB, and sleeping runs are many).

    An entry also holds the handler that ran, so that the same run id under another
    handler (tests reuse ids) is not taken for the same code.
    """

    def __init__(self, capacity: int = 2048) -> None:
        self.capacity = capacity
        self._paths: OrderedDict[str, tuple[Any, tuple[str, ...], frozenset[str]]] = (
            OrderedDict())

    def expected(self, run_id: str, handler: Any, memo: Iterable[str]) -> tuple[str, ...]:
        """The ids a dispatch of ``run_id`` with this memo must ask for first."""
        found = self._paths.get(run_id)
        if found is None or found[0] is not handler:
            return ()
        _, path, memo_then = found
        return path if memo_then <= set(memo) else ()

    def record(self, run_id: str, handler: Any, path: Sequence[str],
               memo: Iterable[str]) -> None:
        """Remember the ids a dispatch asked for (a longer path of the same run wins)."""
        old = self._paths.get(run_id)
        if (old is not None and old[0] is handler and len(old[1]) > len(path)
                and old[1][:len(path)] == tuple(path)):
            self._paths.move_to_end(run_id)
            return  # a shorter, consistent path (a parallel dispatch): keep the longer one
        self._paths[run_id] = (handler, tuple(path), frozenset(memo))
        self._paths.move_to_end(run_id)
        while len(self._paths) > self.capacity:
            self._paths.popitem(last=False)

    def forget(self, run_id: str) -> None:
        """The run ended: a later replay of it starts afresh."""
        self._paths.pop(run_id, None)
