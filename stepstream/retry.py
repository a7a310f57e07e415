"""Retry policy: how many attempts a step gets and how long to wait between them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with jitter, as Inngest and Temporal apply it to steps.

    The delay before retry ``n`` (0-based) is ``min(initial * factor**n, maximum)``,
    then reduced by up to ``jitter`` of itself so that many runs failing together
    do not retry in lockstep.
    """

    retries: int = 3
    """Attempts after the first one; a step runs at most ``retries + 1`` times."""
    initial: timedelta = timedelta(seconds=1)
    """Delay before the first retry."""
    factor: float = 2.0
    """Multiplier applied to the delay for each further retry."""
    maximum: timedelta = timedelta(minutes=10)
    """Longest delay between two attempts."""
    jitter: float = 0.2
    """Fraction of the delay that is randomised away (0 = exact delays)."""

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError("retries must be >= 0")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be within [0, 1]")
        if self.factor < 1.0:
            raise ValueError("factor must be >= 1")

    def delay_ms(self, retry: int, seed: str) -> int:
        """Delay before retry number ``retry`` (0-based), in milliseconds.

        The jitter is drawn from a hash of ``seed`` so that the same failure always
        computes the same delay: the state machine stays a pure function.
        """
        base = min(self.initial.total_seconds() * self.factor**retry,
                   self.maximum.total_seconds()) * 1000.0
        digest = hashlib.blake2b(f"{seed}:{retry}".encode(), digest_size=8).digest()
        fraction = int.from_bytes(digest, "big") / 2**64
        return max(0, round(base * (1.0 - self.jitter * fraction)))
