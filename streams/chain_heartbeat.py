"""Heartbeats of a running eager chain, so its lease can be short and its steps slow.

Once the first step of a chain is on the broker the executor acknowledges the request,
and from then on only the chain lease (``streams.machine``) would notice its worker
dying. Without a sign of life between steps, a chained step slower than the lease would
be taken for a dead chain and run a second time; with one every third of the lease, the
lease bounds recovery after a crash instead of the length of a step.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from schemas.messages import ChainAlive
from stepstream.step import now_ms

Send = Callable[[ChainAlive], Awaitable[Awaitable[Any]]]
"""Queues a record for the runs topic; returns the future of its acknowledgement."""


class ChainHeartbeat:
    """Sends ``ChainAlive`` every ``every_s`` from the first link until the chain ends."""

    def __init__(self, send: Send, run_id: str, seq: int, every_s: float) -> None:
        self._send, self._run_id, self._seq, self._every_s = send, run_id, seq, every_s
        self._position = 0
        self._task: asyncio.Task[None] | None = None

    def advanced(self, position: int) -> None:
        """The chain position the executor works on now (the link before it is sent)."""
        self._position = position
        if self._task is None:
            self._task = asyncio.ensure_future(self._beat())

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            ack = await self._send(ChainAlive(run_id=self._run_id, seq=self._seq,
                                              chain=self._position, ts=now_ms()))
            await ack  # one heartbeat in flight at a time, even while the broker is away

    async def __aenter__(self) -> ChainHeartbeat:
        return self

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None
                        ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
