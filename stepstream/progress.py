"""``ctx.progress(fraction, message)``: what a running step says of how far it is.

Advisory and not part of the run: it is no step result, nothing replays or memoizes it,
and a handler's path never depends on it, so it cannot break determinism. A worker
publishes the last value of each step a few times a second at most
(``streams.progress``); ``stepstream.testing.run`` records every call in its result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from stepstream.logs import clip

MAX_MESSAGE_BYTES = 512
"""Longest progress message kept, in bytes of UTF-8; longer ones are cut."""


@dataclass(frozen=True, slots=True)
class StepProgress:
    """One ``ctx.progress`` call."""

    run_id: str
    step_id: str | None
    """The step running where it was called; None: handler code outside any step."""
    attempt: int
    fraction: float
    """From 0.0 to 1.0."""
    message: str
    ts: int
    """Epoch ms."""


ReportProgress = Callable[[StepProgress], None]
"""Takes a progress report; must not block (a step may call it in a tight loop, from its
event loop or from a thread)."""


def checked(fraction: float, message: str) -> tuple[float, str]:
    """``fraction`` and ``message`` as kept.

    Raises:
        ValueError: ``fraction`` is not a number from 0 to 1.
        TypeError: ``message`` is not text.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) \
            or math.isnan(fraction) or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"ctx.progress: fraction must be a number from 0 to 1, "
                         f"got {fraction!r}")
    if not isinstance(message, str):
        raise TypeError(f"ctx.progress: message must be text, got {type(message).__name__}")
    return float(fraction), clip(message, MAX_MESSAGE_BYTES)
