"""The waiter matcher: waiting runs (``step.wait_for_event``, ``cancel_on``) and events
re-keyed by name meet here, in the waiters store of the name's task (DESIGN §4)."""

from __future__ import annotations

from typing import Any

from schemas.messages import Event, WaiterChanged, WaiterSet
from stepstream.step import now_ms
from streams import waiters
from streams.kafka.store import StateStore
from streams.kafka.task import Task
from streams.processors.outputs import Outputs

WAITERS = "waiters"
"""The name of the waiters store."""


class Matcher:
    """Processes ``{namespace}.waiters`` and ``{namespace}.events.by-name``."""

    def __init__(self, outputs: Outputs) -> None:
        self.outputs, self.codec = outputs, outputs.codec

    async def process(self, task: Task, message: Any) -> None:
        if not message.key():
            task.send(self.outputs.quarantined(
                message, "no key: waiters and events by name are keyed by name"))
            return
        record = self.outputs.decoded(task, message, (WaiterChanged, Event))
        if record is None:
            return
        store: StateStore[WaiterSet] = task.stores[WAITERS]
        key = message.key()
        current = store.get(key) or WaiterSet()
        if isinstance(record, WaiterChanged):
            updated = waiters.change(current, record.waiter, record.active, now_ms())
        else:
            found = waiters.match(current, record)
            for matched in found.messages:
                task.send(self.outputs.to("runs", matched.run_id, matched))
            updated = found.remaining
        if updated != current:
            store.put(key, updated)
