"""Delay tiers (DESIGN §4): which tier a delay takes, and the timers that release
held messages. A message waits at most its tier's hold in one tier, then hops on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

from schemas.messages import Delayed
from stepstream.settings import Settings
from stepstream.step import now_ms
from topics.catalog import DELAY_TIERS


class DelayTiers:
    """The namespace's delay tiers, shortest first."""

    def __init__(self, settings: Settings,
                 tiers: tuple[tuple[str, timedelta], ...] = DELAY_TIERS) -> None:
        self.settings = settings
        self.tiers = tiers

    def tier_for(self, delay_ms: int) -> str:
        """The longest tier that does not overshoot ``delay_ms`` (the shortest if none)."""
        chosen = self.tiers[0][0]
        for name, hold in self.tiers:
            if hold.total_seconds() * 1000 <= delay_ms:
                chosen = name
        return chosen

    def wrap(self, topic: str, key: bytes, value: bytes, *, due_ms: int) -> tuple[str, Delayed]:
        """The tier and the envelope that deliver ``value`` to ``topic`` at ``due_ms``."""
        tier = self.tier_for(due_ms - now_ms())
        return tier, Delayed(due_ms=due_ms, topic=topic, key=key, value=value)


class Timers:
    """Coroutines started after a delay, held by reference until they are done."""

    def __init__(self) -> None:
        self._pending: set[asyncio.Task[None]] = set()

    def start(self, delay_s: float, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in ``delay_s`` seconds."""
        task = asyncio.ensure_future(self._later(delay_s, work))
        self._pending.add(task)
        task.add_done_callback(self._done)

    @staticmethod
    async def _later(delay_s: float, work: Coroutine[Any, Any, None]) -> None:
        await asyncio.sleep(delay_s)
        await work

    def _done(self, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logging.getLogger("stepstream.delays").error(
                "forwarding a delayed message failed", exc_info=task.exception())
