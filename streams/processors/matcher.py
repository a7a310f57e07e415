"""The waiter matcher: waiting runs (``step.wait_for_event``, ``cancel_on``) and events
re-keyed by name meet here, in the waiters store of the name's task (DESIGN §4).

The store holds one entry per waiting (run, step) (``streams.waiters.entry_key``); each
task keeps a ``WaiterIndex`` of its entries beside it, rebuilt when the task starts and
kept in step with the store's writes (and with an abort, which takes them back). An
entry leaves when its event comes or when its run stops waiting (the step's timeout,
the run's end): both send a ``WaiterChanged`` that removes it; nothing is scanned.

Tables written before the index held a ``WaiterSet`` per event name: a task that finds
one turns it into entries in its first transaction.

A store that holds a waiter of a newer stepstream (its changelog written by a newer
worker, in a rolling upgrade) cannot be indexed whole: an event could miss it. The
task's records then wait for a newer worker (``streams.kafka.newer``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

from schemas.codec import NewerSchemaError
from schemas.messages import Event, Waiter, WaiterChanged, WaiterSet
from stepstream.errors import ExpressionError
from stepstream.function import FunctionDef
from streams.expression_failures import report
from streams.kafka.store import StateStore
from streams.kafka.task import Task
from streams.processors.outputs import Outputs
from streams.waiters import WaiterIndex, entry_key, event_context, fires, function_of

log = logging.getLogger("stepstream.matcher")

WAITERS = "waiters"
"""The name of the waiters store."""


class Matcher:
    """Processes ``{namespace}.waiters`` and ``{namespace}.events.by-name``."""

    def __init__(self, outputs: Outputs, functions: Mapping[str, FunctionDef] | None = None
                 ) -> None:
        self.outputs, self.codec = outputs, outputs.codec
        self.functions = functions or {}
        """The app's functions, to label the failures of their conditions."""
        self.indexes: dict[int, WaiterIndex] = {}
        self.newer: dict[int, bytes] = {}
        """Tasks whose store holds a waiter of a newer stepstream: its fingerprint."""

    def task_started(self, task: Task) -> None:
        """Index the task's waiters (and convert a table of the older layout)."""
        store: StateStore[Waiter | WaiterSet] = task.stores[WAITERS]
        index = self.indexes[task.partition] = WaiterIndex()

        def skipped(exc: Exception) -> None:
            if isinstance(exc, NewerSchemaError):
                self.newer[task.partition] = exc.fingerprint
            else:
                log.warning("undecodable waiter in the store: %s", exc)

        for key, value in store.values(skipped):
            if isinstance(value, WaiterSet):
                store.delete(key)
                for waiter in value.waiters:
                    self._put(store, index, waiter)
            else:
                index.sync(key, value)
        store.observers.append(functools.partial(self._committed, index))

    def task_ended(self, task: Task) -> None:
        self.indexes.pop(task.partition, None)
        self.newer.pop(task.partition, None)

    @staticmethod
    def _committed(index: WaiterIndex, key: bytes, value: Waiter | WaiterSet | None) -> None:
        index.sync(key, value if isinstance(value, Waiter) else None)

    async def process(self, task: Task, message: Any) -> None:
        if task.partition in self.newer:
            raise NewerSchemaError(self.newer[task.partition])
        if not message.key():
            task.send(self.outputs.quarantined(
                message, "no key: waiters and events by name are keyed by name"))
            return
        record = self.outputs.decoded(task, message, (WaiterChanged, Event))
        if record is None:
            return
        store: StateStore[Waiter | WaiterSet] = task.stores[WAITERS]
        index = self.indexes[task.partition]
        if isinstance(record, WaiterChanged):
            if record.active:
                self._put(store, index, record.waiter)
            else:
                self._delete(store, index, entry_key(record.waiter))
            return
        incoming = event_context(record)
        for key in index.candidates(record, incoming["data"]):
            waiter = store.get(key)
            if not isinstance(waiter, Waiter):
                continue
            try:
                fired = fires(waiter, record, incoming)
            except ExpressionError as error:  # no match: the run waits on, as for a miss
                report(self.outputs.metrics, function_of(waiter, self.functions), "wait",
                       error)
                continue
            if fired is not None:
                task.send(self.outputs.to("runs", fired.run_id, fired))
                self._delete(store, index, key)

    @staticmethod
    def _put(store: StateStore[Waiter | WaiterSet], index: WaiterIndex, waiter: Waiter) -> None:
        key = entry_key(waiter)
        store.put(key, waiter)
        index.sync(key, waiter)

    @staticmethod
    def _delete(store: StateStore[Waiter | WaiterSet], index: WaiterIndex, key: bytes) -> None:
        if store.get(key) is not None:
            store.delete(key)
        index.sync(key, None)
