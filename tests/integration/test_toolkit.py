"""The step toolkit and function options against the real broker (one worker, one namespace).

Timing assertions are generous bounds ("never early", "within seconds"), never tight.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from stepstream import Stepstream
from stepstream.devservices import DevBroker, WorkerProcess
from stepstream.events import FUNCTION_FAILED, run_id_for
from stepstream.settings import Settings
from streams.machine import child_run_id
from tests.conftest import namespace, worker_factory
from tests.integration.helpers import get_json, wait_for, wait_for_run

MODULE = "tests.integration.toolkit_functions"


@pytest.fixture(scope="module")
def kit(broker: DevBroker, redis_url: str,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, WorkerProcess]]:
    with (namespace(broker, redis_url) as settings,
          worker_factory(settings, tmp_path_factory.mktemp("kit")) as start):
        yield settings, start(MODULE)


def send(kit: tuple[Settings, WorkerProcess], name: str, data: dict[str, Any],
         id: str | None = None) -> str:
    return Stepstream("t", settings=kit[0]).send(name, data, id=id)


def run_of(kit: tuple[Settings, WorkerProcess], function: str, event_id: str,
           timeout: float = 60) -> dict[str, Any]:
    return wait_for_run(kit[1].url, run_id_for(function, event_id), timeout)


def notes(settings: Settings, run_id: str) -> list[dict[str, Any]]:
    raw = redis.Redis.from_url(settings.redis_url).lrange(
        f"{settings.namespace}:log:{run_id}", 0, -1)
    return [json.loads(item) for item in raw]


def test_sleep_wakes_after_its_time_and_never_early(kit: Any) -> None:
    run = run_of(kit, "sleeper", send(kit, "kit/sleep", {"seconds": 1.5}))
    assert run["status"] == "completed"
    assert 1.5 <= run["output"]["slept"] < 6.0
    assert [s["id"] for s in run["steps"]] == ["before", "nap", "after"]


def test_sleep_until_a_datetime(kit: Any) -> None:
    run = run_of(kit, "sleeper", send(kit, "kit/sleep", {"seconds": 0, "until_offset": 2}))
    assert run["status"] == "completed"
    assert 2.0 <= run["output"]["slept"] < 7.0


def test_wait_for_event_returns_the_matching_event(kit: Any) -> None:
    _, worker = kit
    event_id = send(kit, "kit/invoice.created", {"invoice_id": "inv-1"})
    run_id = run_id_for("approver", event_id)
    wait_for(lambda: (get_json(f"{worker.url}/v1/runs/{run_id}") or {}).get("steps"),
             what="the wait registered")
    send(kit, "kit/invoice.approved", {"invoice_id": "inv-other", "by": "mallory"})
    send(kit, "kit/invoice.approved", {"invoice_id": "inv-1", "by": "alice"})
    run = wait_for_run(worker.url, run_id)
    assert run["output"] == {"approved": True, "by": "alice"}


def test_wait_for_event_times_out_with_none(kit: Any) -> None:
    run = run_of(kit, "approver", send(kit, "kit/invoice.created",
                                       {"invoice_id": "inv-2", "timeout": 1}))
    assert run["output"] == {"approved": False}


def test_invoke_returns_the_child_output_and_a_failed_child_raises(kit: Any) -> None:
    ok = send(kit, "kit/parent", {"n": 21})
    run = run_of(kit, "parent", ok)
    assert run["output"] == {"doubled": 42}
    child = get_json(f"{kit[1].url}/v1/runs/{child_run_id(run['run_id'], 'call-child')}")
    assert child["function_id"] == "doubler" and child["status"] == "completed"

    failing = run_of(kit, "parent", send(kit, "kit/parent", {"n": 1, "fail": True}))
    assert failing["status"] == "completed"
    assert failing["output"] == {"child_failed": "StepError"}


def test_parallel_steps_run_at_once_and_resume_when_all_are_done(kit: Any) -> None:
    settings, _ = kit
    run = run_of(kit, "fan-out", send(kit, "kit/fan-out", {}))
    assert run["output"] == {"joined": "ABC"}
    log = {n["what"]: n["at"] for n in notes(settings, run["run_id"])}
    # All three started before any of them ended: they overlapped.
    assert max(log[f"start-{x}"] for x in "abc") < min(log[f"end-{x}"] for x in "abc")
    join = next(s for s in run["steps"] if s["id"] == "join")
    assert join["started_at"] / 1000 >= max(log[f"end-{x}"] for x in "abc")


def test_send_event_sends_once_and_the_events_start_runs(kit: Any) -> None:
    run = run_of(kit, "announcer", send(kit, "kit/announce", {}))
    first, second = run["output"]
    assert run_of(kit, "doubler", first)["output"] == 42
    assert run_of(kit, "doubler", second)["output"] == 10


def test_cancel_on_event_cancels_a_running_run(kit: Any) -> None:
    settings, worker = kit
    event_id = send(kit, "kit/order.placed", {"order_id": "o-1"})
    run_id = run_id_for("cancellable", event_id)
    wait_for(lambda: notes(settings, run_id), what="first step ran")
    send(kit, "kit/order.cancelled", {"order_id": "o-2"})  # another order: no effect
    send(kit, "kit/order.cancelled", {"order_id": "o-1"})
    run = wait_for_run(worker.url, run_id, timeout=15)
    assert run["status"] == "cancelled"
    assert "kit/order.cancelled" in run["error"]["message"]
    assert [n["what"] for n in notes(settings, run_id)] == ["first"]


def test_finish_timeout_cancels_with_a_reason(kit: Any) -> None:
    run = run_of(kit, "slowpoke", send(kit, "kit/slow", {}), timeout=20)
    assert run["status"] == "cancelled"
    assert run["error"]["type"] == "Timeout"
    assert "finish" in run["error"]["message"]


def test_on_failure_handler_runs_with_the_failed_run_and_error(kit: Any) -> None:
    settings, worker = kit
    run = run_of(kit, "fragile", send(kit, "kit/fragile", {}))
    assert run["status"] == "failed"
    handler = wait_for_run(worker.url, run_id_for("fragile.on-failure",
                                                  f"failed:{run['run_id']}"))
    assert handler["status"] == "completed"
    assert handler["event"]["name"] == FUNCTION_FAILED
    assert handler["output"] == {"handled": run["run_id"]}
    [noted] = notes(settings, run["run_id"])
    assert noted["error"]["type"] == "StepError"


def test_idempotency_key_starts_one_run_per_key(kit: Any) -> None:
    _, worker = kit
    first = send(kit, "kit/charge", {"payment_id": "pay-9"})
    second = send(kit, "kit/charge", {"payment_id": "pay-9"})
    other = send(kit, "kit/charge", {"payment_id": "pay-10"})
    assert run_of(kit, "charge", first)["status"] == "completed"
    assert run_of(kit, "charge", other)["status"] == "completed"
    assert get_json(f"{worker.url}/v1/events/{second}/runs")["runs"] == []


def test_a_step_retry_override_beats_the_function_policy(kit: Any) -> None:
    settings, _ = kit
    run = run_of(kit, "stubborn", send(kit, "kit/stubborn", {}))
    assert run["status"] == "failed"
    assert run["steps"][0]["attempts"] == 2
    assert len(notes(settings, run["run_id"])) == 2


def test_cron_starts_one_run_per_tick_with_two_workers(
        settings: Settings, tmp_path: Path) -> None:
    store = redis.Redis.from_url(settings.redis_url)

    def ticks() -> list[int]:
        run_ids = [r.decode() for r in store.zrange(f"{settings.namespace}:runs", 0, -1)]
        runs = [json.loads(store.get(f"{settings.namespace}:run:{r}")) for r in run_ids]
        return sorted(r["event"]["data"]["tick"] for r in runs)

    def three_ticks_in_a_row() -> bool:
        # Runs reach the read model in any order across partitions: wait for the gaps to
        # fill. A tick never started leaves its gap open and the wait times out.
        seen = ticks()
        assert len(seen) == len(set(seen)), seen  # one run per tick, not one per worker
        return len(seen) >= 3 and all(b - a == 2000 for a, b in itertools.pairwise(seen))

    with worker_factory(settings, tmp_path) as start:
        for _ in range(2):
            start("tests.integration.cron_functions")
        wait_for(three_ticks_in_a_row, timeout=30, what="three cron ticks in a row")
