"""Function options, as frozen dataclasses with ``timedelta`` durations."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, kw_only=True)
class CancelOn:
    """Cancel a running run when a matching event arrives.

    In ``if_``, ``event`` is the run's triggering event and ``async`` the incoming one,
    e.g. ``"async.data.order_id == event.data.order_id"``.
    """

    event: str
    """Name of the event that cancels."""
    if_: str | None = None
    """CEL condition; None matches every event of that name."""
    timeout: timedelta = timedelta(days=7)
    """How long the rule stays armed."""


@dataclass(frozen=True, kw_only=True)
class Timeouts:
    """Deadlines after which a run ends ``cancelled`` with the reason."""

    start: timedelta | None = None
    """From the triggering event until an executor first picks the run up."""
    finish: timedelta | None = None
    """From the run's start until its end."""


def to_ms(duration: timedelta | float | int) -> int:
    """A duration (``timedelta`` or seconds) in whole milliseconds."""
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
    if seconds < 0:
        raise ValueError("durations must not be negative")
    return round(seconds * 1000)
