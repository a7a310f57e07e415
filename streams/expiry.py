"""Finished runs leave the runs table ``Settings.finished_run_retention_s`` after they ended.

A finished run stays in the table as a small marker (``streams.machine.completed_marker``;
a failed or cancelled run keeps its memo, for a replay) so that a duplicate of its event
starts no second run and a late message of the run changes nothing. Past the window
(by default the events topic's retention) the marker is deleted: a changelog tombstone,
written in its task's transaction like any other change of the table, so the table and
its changelog hold the runs of one window, whatever the number of runs ever processed.

Each task keeps its finished runs in a heap by end time, rebuilt when the task's store
is restored and fed by the store's committed writes; a sweep (``Runtime.every``) deletes
those that are due, at most ``SWEEP_LIMIT`` per transaction. A run replayed since it
ended is found running (or ended later) when its entry comes up, and is left alone.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from schemas.messages import RunState
from stepstream.step import now_ms
from streams.kafka.task import Task
from streams.machine import FINAL_STATUSES
from streams.processors.orchestrator import RUNS

SWEEP_LIMIT = 1000
"""Most markers one sweep deletes from a task (one transaction); the rest go next time."""
SWEEP_EVERY_S = 1.0
"""How often each task looks for markers that are due."""


class FinishedRuns:
    """The finished runs of this worker's runs-store partitions, by end time."""

    def __init__(self, retention_s: float) -> None:
        self.retention_ms = int(retention_s * 1000)
        self._heaps: dict[int, list[tuple[int, bytes]]] = {}
        """partition -> heap of (ended_at ms, run key)."""
        self._deleting: dict[int, dict[bytes, int]] = {}
        """partition -> keys deleted in the open transaction -> their end."""

    def __len__(self) -> int:
        return sum(len(heap) for heap in self._heaps.values())

    def rebuild(self, task: Task, states: Sequence[tuple[bytes, RunState]]) -> None:
        """The task's store is restored: its finished runs, as they are there."""
        heap = [(state.ended_at or 0, key) for key, state in states
                if state.status in FINAL_STATUSES]
        heapq.heapify(heap)
        self._heaps[task.partition] = heap
        self._deleting[task.partition] = {}

    def written(self, partition: int, key: bytes, state: RunState | None) -> None:
        """A committed write of the store (``StateStore.observers``)."""
        if state is None:
            self._deleting.get(partition, {}).pop(key, None)
        elif state.status in FINAL_STATUSES:
            heapq.heappush(self._heaps.setdefault(partition, []), (state.ended_at or 0, key))

    def forget(self, task: Task) -> None:
        """The task ended: its next owner rebuilds the heap from the store."""
        self._heaps.pop(task.partition, None)
        self._deleting.pop(task.partition, None)

    def sweep(self, task: Task) -> int:
        """Delete the task's markers that are due, in its open transaction; returns how
        many."""
        heap = self._heaps.get(task.partition)
        if heap is None:
            return 0
        store = task.stores[RUNS]
        deleting = self._deleting.setdefault(task.partition, {})
        for key, ended_at in list(deleting.items()):  # their transaction aborted
            if store.get(key) is not None:
                heapq.heappush(heap, (ended_at, key))
            del deleting[key]
        cutoff, deleted = now_ms() - self.retention_ms, 0
        while heap and heap[0][0] <= cutoff and deleted < SWEEP_LIMIT:
            ended_at, key = heapq.heappop(heap)
            state: RunState | None = store.get(key)
            # Replayed since (running, or ended later: a newer entry stands for it).
            if state is None or state.status not in FINAL_STATUSES or (
                    state.ended_at or 0) > cutoff:
                continue
            store.delete(key)
            deleting[key] = ended_at
            deleted += 1
        return deleted
