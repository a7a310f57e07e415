"""Backpressure on run starts: a worker takes no new events while many of its runs wait
for a step to run.

Under a backlog (a million events produced at once) the trigger would start runs as fast
as it reads events, far faster than their steps run; each started run keeps its state,
its lease and its bookkeeping in the worker until it ends, so the worker's memory would
follow the backlog, and stay at its peak after it (the allocators keep what they once
held). Kafka keeps a backlog for free. So once ``max_active_runs`` runs of this worker's
partitions have a step requested and not yet answered, what starts runs is paused (the
events topic, the source topics of ``TopicTrigger`` functions); it is resumed when they
are down to half (a band, so intake does not flap at every run).

Runs that sleep, or wait for an event or a child, hold no dispatch and do not count: a
run waiting for an event must never keep that event out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from schemas.messages import RunState
from streams.run_index import is_active

log = logging.getLogger("stepstream.intake")

Throttle = Callable[[bool], None]
"""Pause (True) or resume (False) what starts runs."""


class RunIntake:
    """Counts the active runs of this worker's runs-store partitions (from each committed
    write, and from each partition once restored) and throttles run starts by them."""

    def __init__(self, max_active_runs: int, throttle: Throttle) -> None:
        self.max_active_runs, self.throttle = max_active_runs, throttle
        self._active: dict[int, set[bytes]] = {}
        self._count = 0
        self.paused = False

    def __len__(self) -> int:
        """Active runs now."""
        return self._count

    def written(self, partition: int, key: bytes, state: RunState | None) -> None:
        """A committed write of the runs store (``StateStore.observers``)."""
        active = self._active.setdefault(partition, set())
        if is_active(state):
            if key not in active:
                active.add(key)
                self._count += 1
        elif key in active:
            active.discard(key)
            self._count -= 1
        self._check()

    def rebuild(self, partition: int, states: Iterable[tuple[bytes, RunState]]) -> None:
        """A restored partition: its active runs."""
        self._forget(partition)
        self._active[partition] = {key for key, state in states if is_active(state)}
        self._count += len(self._active[partition])
        self._check()

    def forget(self, partition: int) -> None:
        """The partition moved to another worker."""
        self._forget(partition)
        self._check()

    def _forget(self, partition: int) -> None:
        self._count -= len(self._active.pop(partition, ()))

    def _check(self) -> None:
        if self.paused:
            if self._count <= self.max_active_runs // 2:
                self.paused = False
                log.info("%d runs active: taking events again", self._count)
                self.throttle(False)
        elif self._count >= self.max_active_runs:
            self.paused = True
            log.info("%d runs active (STEPSTREAM_MAX_ACTIVE_RUNS): new events wait in "
                     "Kafka until half of them have moved on", self._count)
            self.throttle(True)
