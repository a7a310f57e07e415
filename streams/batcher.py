"""Apply what an agent consumed in batches, then acknowledge it, in order.

An agent that awaits a round trip per message (the trigger waits for the broker to
acknowledge what it decided for an event) is held to one message per round trip. Here
the agent only queues each message; one task applies everything queued since its last
write in one call, and only then acknowledges those messages, oldest first. Under load
the batches grow by themselves; a lone message is written at once (no timer to wait).

A message is acknowledged after its batch is applied, never before, so a crash
redelivers what was not applied (the apply must be idempotent). The queue is bounded:
while the apply is stuck (Redis is down), the agent stops taking messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import faust

T = TypeVar("T")

Apply = Callable[[Sequence[T]], Awaitable[None]]
Ack = Callable[[faust.EventT], Awaitable[None]]


class Batcher(Generic[T]):
    """Queue ``(event, item)`` pairs; a task applies the items in batches, then acks.

    Args:
        apply: applies items in the order given; retried by the caller's own means
            (it must not raise, or the agent surfaces the error on its next message).
        ack: acknowledges one event (the agent's manual ``stream.ack``).
        max_batch: most items per ``apply``, and most queued before ``add`` waits.
    """

    def __init__(self, apply: Apply[T], ack: Ack, *, max_batch: int = 500) -> None:
        self._apply, self._ack, self._max = apply, ack, max_batch
        self._queue: list[tuple[faust.EventT, T | None]] = []
        self._ready = asyncio.Event()  # something is queued
        self._room = asyncio.Event()  # the queue is below its bound
        self._room.set()
        self._task: asyncio.Task[None] | None = None

    async def add(self, event: faust.EventT, item: T | None) -> None:
        """Queue ``item`` (None: nothing to apply, only ack ``event`` in its turn)."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._drain())
        elif self._task.done():  # it died: surface its error instead of acking nothing
            self._task.result()
        while not self._room.is_set():
            await self._room.wait()
        self._queue.append((event, item))
        self._ready.set()
        if len(self._queue) >= self._max:
            self._room.clear()

    def close(self) -> None:
        """Stop the task (the agent is stopping); what was not applied is redelivered."""
        if self._task is not None:
            self._task.cancel()

    async def _drain(self) -> None:
        while True:
            await self._ready.wait()
            batch, self._queue = self._queue[:self._max], self._queue[self._max:]
            if not self._queue:
                self._ready.clear()
            items = [item for _, item in batch if item is not None]
            if items:
                await self._apply(items)
            for event, _ in batch:
                await self._ack(event)
            if len(self._queue) < self._max:
                self._room.set()
