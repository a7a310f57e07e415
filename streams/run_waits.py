"""Waiting for runs to end without polling: one Redis subscription per process.

The projector announces every run that reaches a final status on the read model's
``ended`` channel, in the transaction that writes it (``streams.readmodel``). A waiter
registers first and reads the read model next: a run that ended before is in the
document it reads, one that ends after wakes it. When the subscription is lost (Redis
restarted), every waiter is woken once it is back, to read again: an announcement made
meanwhile is not lost to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from streams.readmodel import ENDED_CHANNEL, RunStore
from streams.redis_client import STORE_ERRORS
from streams.timeline import FINAL

log = logging.getLogger("stepstream.waits")

T = TypeVar("T")
_RESUBSCRIBE_S = (0.1, 2.0)


def run_ended(doc: dict[str, Any] | None) -> bool:
    return doc is not None and doc["status"] in FINAL


def all_ended(docs: list[dict[str, Any]]) -> bool:
    """An event's runs have all ended (and it started at least one)."""
    return bool(docs) and all(run_ended(doc) for doc in docs)


class RunWaits:
    """Answers "tell me when this run (or every run of this event) has ended".

    Args:
        store: the read model.
    """

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._subscribed = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self._closing = False

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
        self._closing = True
        self._wake_all()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None

    async def _wait(self, key: str, read: Callable[[], Awaitable[T]],
                    done: Callable[[T], bool], timeout_s: float) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if self._listener is None and not self._closing:
            self._listener = asyncio.create_task(self._listen(), name="stepstream-run-waits")
        with contextlib.suppress(TimeoutError):  # Redis away: read (and fail) below
            await asyncio.wait_for(self._subscribed.wait(), max(0.0, deadline - loop.time()))
        wake = asyncio.Event()
        self._waiters.setdefault(key, set()).add(wake)
        try:
            while True:
                wake.clear()
                value = await read()
                left = deadline - loop.time()
                if done(value) or left <= 0 or self._closing:
                    return value
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), left)
        finally:
            waiting = self._waiters[key]
            waiting.discard(wake)
            if not waiting:
                del self._waiters[key]

    async def _listen(self) -> None:
        delay = _RESUBSCRIBE_S[0]
        while True:
            pubsub = self.store.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.store.key(ENDED_CHANNEL))
                self._subscribed.set()
                self._wake_all()  # what ended while the subscription was away
                delay = _RESUBSCRIBE_S[0]
                async for message in pubsub.listen():
                    self._announced(message["data"])
            except STORE_ERRORS as exc:
                log.warning("run waits: subscription lost (%s); subscribing again", exc)
            finally:
                self._subscribed.clear()
                with contextlib.suppress(*STORE_ERRORS):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RESUBSCRIBE_S[1])

    def _announced(self, data: bytes | str) -> None:
        try:
            run_id, event_id = json.loads(data)
        except (ValueError, TypeError):
            log.warning("run waits: unexpected announcement %r", data)
            return
        for key in (f"run:{run_id}", f"event:{event_id}"):
            for wake in self._waiters.get(key, ()):
                wake.set()

    def _wake_all(self) -> None:
        for waiting in self._waiters.values():
            for wake in waiting:
                wake.set()
