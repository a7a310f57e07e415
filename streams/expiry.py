"""Finished runs leave the runs table ``Settings.finished_run_retention_s`` after they ended.

A finished run stays in the table as a small marker (``streams.machine.completed_marker``;
a failed or cancelled run keeps its memo, for a replay) so that a duplicate of its event
starts no second run and a late message of the run changes nothing. Past the window
(by default the events topic's retention) the marker is deleted: a changelog tombstone,
written in its task's transaction like any other change of the table, so the table and
its changelog hold the runs of one window, whatever the number of runs ever processed.

The sweep (``Runtime.every``) reads the task's finished runs in order of their end from
the table's own index (``streams.run_index``): nothing is held in memory per finished
run, however long the window. It deletes those that are due, at most ``SWEEP_LIMIT``
per transaction; a marker's index record goes with it. A run replayed since it ended is
no longer in that index (its state's index records follow its status). Index records a
release without the index left behind (a rollback, then forward again) are deleted as
the sweep meets them.
"""

from __future__ import annotations

from stepstream.step import now_ms
from streams.kafka.task import Task
from streams.processors.orchestrator import RUNS
from streams.run_index import finished_by, is_stale, repair, repair_in_flight, run_key

SWEEP_LIMIT = 1000
"""Most markers one sweep deletes from a task (one transaction); the rest go next time."""
SWEEP_EVERY_S = 1.0
"""How often each task looks for markers that are due."""


class FinishedRuns:
    """Deletes the finished runs of a task's runs store once their window is over."""

    def __init__(self, retention_s: float) -> None:
        self.retention_ms = int(retention_s * 1000)

    def sweep(self, task: Task) -> int:
        """Delete the task's markers that are due, in its open transaction; returns how
        many."""
        store = task.stores[RUNS]
        deleted = 0
        # Markers deleted by a transaction still open are in the index until it commits:
        # they are looked at again (and skipped) but count against the limit.
        for looked, index_key in enumerate(finished_by(store, now_ms() - self.retention_ms)):
            if looked == SWEEP_LIMIT:
                break
            if is_stale(store, index_key):
                # Deleted in this transaction (its record goes anyway), or left behind by
                # a release without the index.
                repair(store, index_key)
            else:  # a finished run that ended then
                store.delete(run_key(index_key))
                deleted += 1
        repair_in_flight(store, SWEEP_LIMIT)
        return deleted
