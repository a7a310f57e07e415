"""``Cron`` ticks in a time zone (``stepstream.cron``), across both DST switches of
Europe/Berlin and America/New_York: checked against the documented rules minute by
minute, and on the cases people ask about."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from stepstream import ConfigError, Cron, Settings, Stepstream
from stepstream.cron import MAX_CATCH_UP_TICKS

MINUTE_MS = 60_000
BERLIN, NEW_YORK = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")
# The days the clocks change in 2026 (local midnight to midnight, with margins).
SWITCHES = {
    "Europe/Berlin": [datetime(2026, 3, 29, tzinfo=UTC), datetime(2026, 10, 25, tzinfo=UTC)],
    "America/New_York": [datetime(2026, 3, 8, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)],
}
FIXED = ["30 2 * * *", "0 9 * * MON-FRI", "15,45 2 * * *", "0 1-3 * * *", "0 2,3 * * *",
         "30 1 * * *", "@daily"]
WILDCARD = ["0 * * * *", "*/15 * * * *", "*/30 2 * * *", "30 * * * *", "@hourly",
            "5 */2 * * *"]


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def utc(*args: int) -> int:
    return ms(datetime(*args, tzinfo=UTC))  # type: ignore[misc]


def ticks(cron: Cron, start: datetime, hours: int) -> list[int]:
    return list(cron.ticks(ms(start), ms(start + timedelta(hours=hours))))


def expected(expression: str, zone: ZoneInfo, start: datetime, hours: int) -> list[int]:
    """The rules, minute by minute: a wall time that matches fires; of a repeated one,
    a fixed schedule fires the first pass only; a fixed schedule whose times fall in the
    skipped hour fires once at the jump."""
    fixed = Cron(expression).fixed
    out: list[int] = []
    skipped_match = False
    previous_offset = None
    for minute in range(1, hours * 60 + 1):
        instant = start + timedelta(minutes=minute)
        local = instant.astimezone(zone)
        offset = local.utcoffset()
        if previous_offset is not None and offset is not None and offset > previous_offset:
            # The clock jumped just now: the wall times it skipped.
            gap = local.replace(tzinfo=None) - (offset - previous_offset)
            skipped_match = any(croniter.match(expression, gap + timedelta(minutes=m))
                                for m in range(int((offset - previous_offset).seconds / 60)))
        previous_offset = offset
        repeated = local.fold == 1 and local.replace(fold=0).utcoffset() != offset
        matches = croniter.match(expression, local.replace(tzinfo=None))
        if (matches and not (repeated and fixed)) or (skipped_match and fixed):
            out.append(ms(instant))
        skipped_match = False
    return out


@pytest.mark.parametrize("expression", FIXED + WILDCARD)
@pytest.mark.parametrize("tz", sorted(SWITCHES))
def test_ticks_follow_the_rules_across_both_switches(expression: str, tz: str) -> None:
    cron = Cron(expression, tz=tz)
    for day in SWITCHES[tz]:
        start = day - timedelta(hours=6)
        assert ticks(cron, start, 30) == expected(expression, ZoneInfo(tz), start, 30), day


def test_nine_in_berlin_is_eight_utc_in_winter_and_seven_in_summer() -> None:
    cron = Cron("0 9 * * *", tz="Europe/Berlin")
    assert ticks(cron, datetime(2026, 3, 27, 12, tzinfo=UTC), 72) == [
        utc(2026, 3, 28, 8), utc(2026, 3, 29, 7), utc(2026, 3, 30, 7)]
    assert ticks(cron, datetime(2026, 10, 24, 0, tzinfo=UTC), 72) == [
        utc(2026, 10, 24, 7), utc(2026, 10, 25, 8), utc(2026, 10, 26, 8)]


def test_a_skipped_time_fires_once_at_the_jump() -> None:
    berlin = Cron("30 2 * * *", tz="Europe/Berlin")  # 02:00 -> 03:00 on 29 March
    assert ticks(berlin, datetime(2026, 3, 28, 12, tzinfo=UTC), 36) == [utc(2026, 3, 29, 1)]
    new_york = Cron("30 2 * * *", tz="America/New_York")  # 02:00 -> 03:00 on 8 March
    assert ticks(new_york, datetime(2026, 3, 7, 12, tzinfo=UTC), 36) == [utc(2026, 3, 8, 7)]
    # Several skipped times are one run; a wildcard schedule follows the new time.
    assert ticks(Cron("15,45 2 * * *", tz="Europe/Berlin"),
                 datetime(2026, 3, 29, tzinfo=UTC), 4) == [utc(2026, 3, 29, 1)]
    assert ticks(Cron("*/30 2 * * *", tz="Europe/Berlin"),
                 datetime(2026, 3, 29, tzinfo=UTC), 4) == []


def test_a_repeated_time_fires_once_unless_the_schedule_has_a_wildcard() -> None:
    berlin = Cron("30 2 * * *", tz="Europe/Berlin")  # 03:00 -> 02:00 on 25 October
    assert ticks(berlin, datetime(2026, 10, 24, 12, tzinfo=UTC), 24) == [utc(2026, 10, 25, 0, 30)]
    new_york = Cron("30 1 * * *", tz="America/New_York")  # 02:00 -> 01:00 on 1 November
    assert ticks(new_york, datetime(2026, 11, 1, tzinfo=UTC), 24) == [utc(2026, 11, 1, 5, 30)]
    hourly = Cron("0 * * * *", tz="Europe/Berlin")
    assert ticks(hourly, datetime(2026, 10, 24, 22, 30, tzinfo=UTC), 4) == [
        utc(2026, 10, 24, 23), utc(2026, 10, 25, 0), utc(2026, 10, 25, 1),
        utc(2026, 10, 25, 2)]  # 01:00, 02:00 CEST, 02:00 CET, 03:00 CET: an hour apart


def test_the_last_pass_of_a_repeated_time_is_not_a_new_tick_when_starting_inside_it() -> None:
    berlin = Cron("30 2 * * *", tz="Europe/Berlin")
    inside = utc(2026, 10, 25, 1, 10)  # 02:10 CET, the second pass
    assert list(berlin.ticks(inside, inside + 3 * 3600_000)) == []
    assert berlin.next_tick(inside) == utc(2026, 10, 26, 1, 30)


def test_a_plain_schedule_is_utc() -> None:
    cron = Cron("0 9 * * *")
    assert ticks(cron, datetime(2026, 3, 28, 12, tzinfo=UTC), 48) == [
        utc(2026, 3, 29, 9), utc(2026, 3, 30, 9)]


def test_consecutive_windows_give_every_tick_once() -> None:
    cron = Cron("*/15 * * * *", tz="Europe/Berlin")
    lo = utc(2026, 10, 24, 22)
    bounds = [lo, lo + 7 * MINUTE_MS, lo + 150 * MINUTE_MS, lo + 151 * MINUTE_MS,
              lo + 300 * MINUTE_MS]
    pieces = [t for a, b in pairwise(bounds) for t in cron.ticks(a, b)]
    assert pieces == list(cron.ticks(lo, bounds[-1])) and len(pieces) == 20


def test_latest_keeps_the_last_ticks_of_a_long_window() -> None:
    cron = Cron("* * * * *")
    now = utc(2026, 5, 1, 12)
    ticks_, capped = cron.latest(now - 24 * 3600_000, now, MAX_CATCH_UP_TICKS)
    assert capped and len(ticks_) == MAX_CATCH_UP_TICKS
    assert ticks_[-1] == now and ticks_[0] == now - (MAX_CATCH_UP_TICKS - 1) * MINUTE_MS
    assert cron.latest(now - 10 * MINUTE_MS, now, MAX_CATCH_UP_TICKS) == (
        [now - m * MINUTE_MS for m in range(9, -1, -1)], False)


def test_latest_across_a_switch_is_the_tail_of_the_ticks() -> None:
    cron = Cron("*/15 * * * *", tz="Europe/Berlin")
    lo, hi = utc(2026, 10, 24, 20), utc(2026, 10, 25, 4)
    assert cron.latest(lo, hi, 10) == (list(cron.ticks(lo, hi))[-10:], True)


@pytest.mark.parametrize(("options", "message"), [
    ({"expression": "61 * * * *"}, "invalid cron schedule"),
    ({"expression": "0 9 * * *", "tz": "Europe/Nowhere"}, "unknown time zone"),
    ({"expression": "0 9 * * *", "catch_up": "soon"}, "not a duration"),
    ({"expression": "0 9 * * *", "catch_up": "-1h"}, "not a duration|positive"),
    ({"expression": "0 0 30 2 *"}, "never fires"),
])
def test_a_bad_schedule_is_refused(options: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Cron(**options)
    if len(options) == 1:  # as a plain string, when the function is registered
        ss = Stepstream(app_id="tests", settings=Settings())
        with pytest.raises(ConfigError, match=f"function 'f': .*{message}"):
            ss.function(id="f", cron=options["expression"])


def test_a_catch_up_window_is_a_duration() -> None:
    assert Cron("0 9 * * *", catch_up="1h").catch_up_ms == 3600_000
    assert Cron("0 9 * * *", catch_up=timedelta(minutes=5)).catch_up_ms == 300_000
    assert Cron("0 9 * * *").catch_up_ms is None
