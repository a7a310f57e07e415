"""Cron schedules with real workers (``streams.schedules``): ticks missed while no worker
was up are started when one is back, within the catch-up window and once each, however
many workers; a paused schedule does not tick, and its pause's ticks are not caught up."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import redis

from stepstream.settings import Settings
from tests.conftest import worker_factory
from tests.integration.helpers import get_json, post, wait_for

MODULE = "tests.integration.schedule_functions"
EVERY_MS = 2000


def runs(settings: Settings, function_id: str) -> list[dict[str, Any]]:
    """The function's runs in the read model, by tick."""
    store = redis.Redis.from_url(settings.redis_url)
    ids = [r.decode() for r in store.zrange(f"{settings.namespace}:runs", 0, -1)]
    docs = [json.loads(raw) for raw in store.mget([f"{settings.namespace}:run:{r}"
                                                    for r in ids]) if raw is not None]
    return sorted((d for d in docs if d["function_id"] == function_id),
                  key=lambda d: d["event"]["data"]["tick"])


def ticks(settings: Settings, function_id: str) -> list[int]:
    found = [int(r["event"]["data"]["tick"]) for r in runs(settings, function_id)]
    assert len(found) == len(set(found)), found  # one run per tick
    return found


def gaps(found: list[int]) -> list[tuple[int, int]]:
    return [(a, b) for a, b in itertools.pairwise(found) if b - a != EVERY_MS]


def passed(ms: int) -> bool:
    return time.time_ns() // 1_000_000 > ms


def test_missed_ticks_are_caught_up_within_the_window_once_each(
        settings: Settings, tmp_path: Path) -> None:
    with worker_factory(settings, tmp_path) as start:
        first = [start(MODULE, ready=False) for _ in range(2)]
        for worker in first:
            worker.wait_ready()
        wait_for(lambda: len(ticks(settings, "caught-up")) >= 2, timeout=60,
                 what="two ticks")
        for worker in first:
            worker.kill()  # (after a SIGTERM of every worker, the dev broker can take
            # minutes to form the group again; a crash is the outage that matters anyway)
        stopped = time.time_ns() // 1_000_000
        # Longer than the 10 s window: the oldest missed ticks are out of it.
        wait_for(lambda: passed(stopped + 20_000), timeout=30, what="the outage")
        for worker in [start(MODULE, ready=False) for _ in range(2)]:
            worker.wait_ready()

        def back_on_time() -> list[int] | None:
            found = ticks(settings, "caught-up")
            late = [t for t in found if t > stopped]
            # Runs reach the read model in any order: wait for the gaps to fill, up to
            # a tick started on time after the restart.
            return found if len(gaps(found)) == 1 and len(late) >= 8 else None

        found = wait_for(back_on_time, timeout=90, what="ticks after the restart")

    (before, after), = gaps(found)
    caught = next(r for r in runs(settings, "caught-up")
                  if r["event"]["data"]["tick"] == after)
    caught_at = caught["started_at"]  # when the worker that came back started it
    # Every tick at most 10 s old then started, each once; the older ones did not.
    assert after - EVERY_MS < caught_at - 10_000 <= after, (before, after, caught_at)
    assert before < stopped < after and after < caught_at
    caught_up = [t for t in found if after <= t < caught_at]
    assert len(caught_up) >= 5
    assert all(r["event"]["ts"] == r["event"]["data"]["tick"]
               for r in runs(settings, "caught-up"))


def test_a_paused_schedule_does_not_tick_and_skips_its_pause(
        settings: Settings, tmp_path: Path) -> None:
    with worker_factory(settings, tmp_path) as start:
        worker = start(MODULE)
        base = f"{worker.url}/v1/functions"
        wait_for(lambda: len(ticks(settings, "pausable")) >= 2, timeout=60, what="two ticks")
        assert post(f"{base}/pausable/pause")[0] == 202
        paused_at = time.time_ns() // 1_000_000
        listed = {f["function_id"]: f for f in get_json(base)["functions"]}
        assert listed["pausable"]["paused"] and listed["pausable"]["schedule"] == {
            "cron": "* * * * * */2", "tz": "Europe/Berlin", "catch_up_s": 60.0,
            "next_tick": None}
        assert listed["caught-up"]["schedule"]["next_tick"] > paused_at

        # The other schedule goes on: five of its ticks after the pause, none of this one
        # (but one that was being started as the pause came).
        wait_for(lambda: len([t for t in ticks(settings, "caught-up") if t > paused_at]) >= 5,
                 timeout=60, what="five ticks of the other schedule")
        during = [t for t in ticks(settings, "pausable") if t > paused_at]
        assert len(during) <= 1, during

        assert post(f"{base}/pausable/resume")[0] == 202
        resumed_at = time.time_ns() // 1_000_000
        wait_for(lambda: [t for t in ticks(settings, "pausable") if t > resumed_at],
                 timeout=60, what="a tick after the resume")
    # Within its one-minute catch-up window, yet the pause's ticks were not started.
    found = ticks(settings, "pausable")
    assert not [t for t in found if paused_at + EVERY_MS < t <= resumed_at], found
