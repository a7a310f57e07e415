"""The time the step toolkit and the run state see: the wall clock, or a virtual one.

``stepstream.testing`` runs a function on a virtual clock so that a three-day sleep
takes no time; the engine never sets one. A context variable (not a module global) so
that a harness run does not move the clock of anything else in the process.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar

Clock = Callable[[], int]
"""Epoch milliseconds."""

_clock: ContextVar[Clock | None] = ContextVar("stepstream_clock", default=None)


def now_ms() -> int:
    """The time in epoch milliseconds: the virtual clock's, inside ``virtual_clock``."""
    clock = _clock.get()
    return time.time_ns() // 1_000_000 if clock is None else clock()


@contextlib.contextmanager
def virtual_clock(clock: Clock) -> Iterator[None]:
    """Within the block (and the tasks it starts), ``now_ms`` asks ``clock``."""
    token = _clock.set(clock)
    try:
        yield
    finally:
        _clock.reset(token)
