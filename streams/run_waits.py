"""Waiting for runs to end without polling: one Redis subscription per process.

The projector announces every run that reaches a final status on the read model's
``ended`` channel, in the transaction that writes it (``streams.readmodel``). A waiter
registers first and reads the read model next (``streams.announcements``): a run that
ended before is in the document it reads, one that ends after wakes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from streams.announcements import Announcements
from streams.readmodel import ENDED_CHANNEL, RunStore
from streams.timeline import FINAL

log = logging.getLogger("stepstream.waits")

T = TypeVar("T")


def run_ended(doc: dict[str, Any] | None) -> bool:
    return doc is not None and doc["status"] in FINAL


def all_ended(docs: list[dict[str, Any]]) -> bool:
    """An event's runs have all ended (and it started at least one)."""
    return bool(docs) and all(run_ended(doc) for doc in docs)


def _ended_keys(data: bytes | str) -> list[str]:
    try:
        run_id, event_id = json.loads(data)
    except (ValueError, TypeError):
        log.warning("run waits: unexpected announcement %r", data)
        return []
    return [f"run:{run_id}", f"event:{event_id}"]


class RunWaits:
    """Answers "tell me when this run (or every run of this event) has ended".

    Args:
        store: the read model.
    """

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.announcements = Announcements(store, ENDED_CHANNEL, _ended_keys)

    async def run(self, run_id: str, timeout_s: float) -> dict[str, Any] | None:
        """The run's document once it has ended, or as it stands at the timeout (None:
        the read model has not seen the run yet)."""
        return await self._wait(f"run:{run_id}", lambda: self.store.get_run(run_id),
                                run_ended, timeout_s)

    async def event_runs(self, event_id: str, timeout_s: float) -> list[dict[str, Any]]:
        """The documents of the runs the event started, once each has ended, or as they
        stand at the timeout."""
        return await self._wait(f"event:{event_id}",
                                lambda: self.store.runs_for_event(event_id),
                                all_ended, timeout_s)

    async def close(self) -> None:
        """Answer every waiter now (with what it would read) and stop listening: the
        server is shutting down and should not hold its requests to their timeouts."""
        await self.announcements.close()

    async def _wait(self, key: str, read: Callable[[], Awaitable[T]],
                    done: Callable[[T], bool], timeout_s: float) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        announcements = self.announcements
        await announcements.subscribed(deadline - loop.time())
        with announcements.watching(key) as wake:
            while True:
                wake.clear()
                value = await read()
                left = deadline - loop.time()
                if done(value) or left <= 0 or announcements.closing:
                    return value
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), left)
