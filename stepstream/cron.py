"""``Cron``: a schedule that starts a run at each tick, in a time zone.

Ticks are computed in the schedule's zone (``zoneinfo``, through croniter's time zone
support) and follow Vixie cron's rules on the days the clocks change, the ones most
cron users know:

- **A time the clock skips** (02:30 on the day clocks spring forward): a schedule that
  names its minute and hour (neither field starts with ``*``) fires once, when the
  clock jumps (03:00 new time), so a daily job is not lost that day. A schedule with
  ``*`` in its minute or hour field follows the new time: the skipped times do not
  happen (``"0 * * * *"`` fires at 01:00 and 03:00, an hour apart).
- **A time the clock passes twice** (02:30 on the day clocks fall back): a schedule that
  names its minute and hour fires once, at the first pass; with ``*`` in either field
  it fires at both (an hourly job stays hourly).

A tick is an instant (epoch ms), so a skipped time that lands on a real tick (03:00)
is one run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from stepstream.clock import now_ms
from stepstream.options import parse_duration

MAX_CATCH_UP_TICKS = 100
"""Most missed ticks of a schedule one catch-up starts (the latest ones)."""

_FOREVER_MS = 2**62
_HOURLY = {"@hourly"}  # the macros with a wildcard minute or hour (Vixie's rule)


@dataclass(frozen=True)
class Cron:
    """A cron schedule, in a time zone, with an optional catch-up window.

    Args:
        expression: five fields (minute hour day month weekday), or six with croniter's
            seconds field last; ``@daily`` and the like.
        tz: an IANA zone name (``"Europe/Berlin"``); UTC by default.
        catch_up: ticks missed while no worker was up (or the schedule's partition was
            moving) are started late if they are at most this old (``"1h"``, seconds, a
            ``timedelta``); at most ``MAX_CATCH_UP_TICKS``, the latest. None (default):
            only ticks late by less than a minute, the time a partition takes to move
            from a worker that left to another.

    Raises:
        ValueError: an invalid expression, an unknown zone, a catch-up that is not a
            positive duration.
    """

    expression: str
    tz: str = "UTC"
    catch_up: timedelta | str | float | None = None
    zone: ZoneInfo = field(init=False, repr=False, compare=False)
    fixed: bool = field(init=False, repr=False, compare=False)
    """Names its minute and hour: a skipped time fires at the jump, a repeated one once."""

    def __post_init__(self) -> None:
        if not isinstance(self.expression, str) or not croniter.is_valid(self.expression):
            raise ValueError(f"invalid cron schedule {self.expression!r}")
        try:
            zone = ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.tz!r}") from exc
        object.__setattr__(self, "zone", zone)
        fields = self.expression.split()
        object.__setattr__(self, "fixed", fields[0] not in _HOURLY and not (
            len(fields) > 1 and (fields[0].startswith("*") or fields[1].startswith("*"))))
        if self.catch_up is not None:
            object.__setattr__(self, "catch_up", parse_duration(self.catch_up))
        if self.next_tick(now_ms()) is None:
            raise ValueError(f"cron schedule {self.expression!r} never fires")

    @property
    def catch_up_ms(self) -> int | None:
        """The catch-up window in milliseconds, if any."""
        if not isinstance(self.catch_up, timedelta):
            return None
        return int(self.catch_up.total_seconds() * 1000)

    def ticks(self, after_ms: int, until_ms: int) -> Iterator[int]:
        """The ticks in ``(after_ms, until_ms]``, epoch ms, in order."""
        moments = croniter(self.expression, datetime.fromtimestamp(after_ms / 1000, self.zone))
        last = after_ms
        while (tick := _ms(moments.get_next(datetime))) <= until_ms:
            if tick > last and self._fires(tick):
                last = tick
                yield tick

    def next_tick(self, after_ms: int) -> int | None:
        """The first tick after ``after_ms`` (None: never again)."""
        try:
            return next(self.ticks(after_ms, _FOREVER_MS), None)
        except CroniterBadDateError:  # croniter's search gave up: no such date ahead
            return None

    def latest(self, after_ms: int, until_ms: int, limit: int) -> tuple[list[int], bool]:
        """The last ``limit`` ticks in ``(after_ms, until_ms]``, and whether earlier
        ones were left out. Walks back from ``until_ms`` first, so a long window on a
        frequent schedule costs ``limit`` ticks, not the whole window."""
        moments = croniter(self.expression,
                           datetime.fromtimestamp((until_ms + 1) / 1000, self.zone))
        start = after_ms
        for _ in range(limit + 1):  # one more: the fold rules may drop one of them
            moment = _ms(moments.get_prev(datetime))
            if moment <= after_ms:
                break
            start = moment - 1
        ticks = list(self.ticks(start, until_ms))
        return ticks[-limit:], len(ticks) > limit or (
            start > after_ms and next(self.ticks(after_ms, start), None) is not None)

    def _fires(self, tick: int) -> bool:
        """Whether croniter's ``tick`` is one under the rules of the module docstring."""
        local = datetime.fromtimestamp(tick / 1000, self.zone)
        if not croniter.match(self.expression, local.replace(tzinfo=None)):
            return self.fixed  # croniter moved a skipped time to the jump
        if local.fold and local.replace(fold=0).utcoffset() != local.utcoffset():
            return not self.fixed  # the second pass of a repeated time
        return True

    def describe(self) -> str:
        """The schedule as text: ``"0 9 * * MON-FRI, Europe/Berlin"``."""
        return f"{self.expression}, {self.tz}"


def cron_of(value: Cron | str) -> Cron:
    """``cron=`` as given: a plain string is a UTC schedule without catch-up."""
    return value if isinstance(value, Cron) else Cron(value)


def _ms(moment: datetime) -> int:
    return round(moment.astimezone(UTC).timestamp() * 1000)
