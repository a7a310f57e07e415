"""Delay tiers (DESIGN §4): which tier a delay takes, and the envelope it travels in. A
message waits at most its tier's hold in one tier, then hops on
(``streams.delay_forwarder``)."""

from __future__ import annotations

from datetime import timedelta

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
