"""Flow control against the real broker and Redis, with two worker processes.

What is checked comes from records the steps wrote themselves (times, pids, events:
``tests/integration/flow_functions.py``), plus the workers' metrics and the read model.
Timing bounds are generous (the machine is shared): "never more than the limit",
"spread over at least most of the expected span", "never early".
"""

from __future__ import annotations

import itertools
import json
import re
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Producer

from schemas.codec import default_codec
from stepstream import Stepstream
from stepstream.devservices import DevBroker, WorkerProcess
from stepstream.events import make_event, run_id_for
from stepstream.settings import Settings
from stepstream.step import now_ms
from tests.conftest import WorkerFactory, namespace, worker_factory
from tests.integration.flow_functions import log_key
from tests.integration.helpers import get_json, wait_for, wait_for_run

MODULE = "tests.integration.flow_functions"
Pair = tuple[Settings, list[WorkerProcess]]


@pytest.fixture(scope="module")
def pair(broker: DevBroker, redis_url: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Two workers of one namespace, shared by the tests of this module."""
    with (namespace(broker, redis_url) as settings,
          worker_factory(settings, tmp_path_factory.mktemp("flow")) as start):
        workers = [start(MODULE, ready=False, STEPSTREAM_FLOW_POLL_MS="300") for _ in range(2)]
        yield settings, [w.wait_ready() for w in workers]


def records(settings: Settings, function_id: str) -> list[dict[str, Any]]:
    raw = redis.Redis.from_url(settings.redis_url).lrange(
        log_key(settings.namespace, function_id), 0, -1)
    return [json.loads(item) for item in raw]


def wait_records(settings: Settings, function_id: str, count: int,
                 timeout: float = 90) -> list[dict[str, Any]]:
    return wait_for(lambda: (found := records(settings, function_id)) and
                    len(found) >= count and found, timeout, f"{count} {function_id} records")


def send_all(settings: Settings, name: str, datas: list[dict[str, Any]],
             ids: list[str] | None = None) -> list[str]:
    """Produce events in one go (one flush), as a burst from any Kafka client would."""
    producer = Producer({"bootstrap.servers": settings.brokers, "linger.ms": 5})
    codec = default_codec()
    sent = []
    for i, data in enumerate(datas):
        event = make_event(name, data, id=ids[i] if ids else None, ts=now_ms(),
                           limit=settings.max_payload_bytes)
        producer.produce(settings.topic("events"), key=event.id.encode(),
                         value=codec.encode(event))
        sent.append(event.id)
    assert producer.flush(10) == 0
    return sent


def metric(workers: list[WorkerProcess], name: str, **labels: str) -> float:
    """A metric summed over the workers (one sample per worker and label set)."""
    total = 0.0
    pattern = re.compile(rf"^{name}\{{(.*)\}} (\S+)$")
    for worker in workers:
        with urllib.request.urlopen(f"{worker.url}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        for line in text.splitlines():
            found = pattern.match(line)
            if found and all(f'{k}="{v}"' in found.group(1) for k, v in labels.items()):
                total += float(found.group(2))
    return total


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant (an end and a start at the same time: no overlap)."""
    edges = sorted([(end, -1) for _, end in intervals] + [(start, 1) for start, _ in intervals])
    open_now = peak = 0
    for _, change in edges:
        open_now += change
        peak = max(peak, open_now)
    return peak


def test_concurrency_limits_steps_per_function_and_per_key_across_workers(pair: Pair) -> None:
    settings, workers = pair
    tenants = ["acme", "globex", "initech"]
    send_all(settings, "flow/limited", [{"tenant": tenants[i % 3]} for i in range(12)])

    steps = wait_records(settings, "limited", 24, timeout=120)

    intervals = [(r["start"], r["end"]) for r in steps]
    by_tenant: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in steps:
        by_tenant[r["tenant"]].append((r["start"], r["end"]))
    assert len({(r["run"], r["step"]) for r in steps}) == 24  # every step of every run
    assert max_overlap(intervals) <= 2
    assert all(max_overlap(spans) <= 1 for spans in by_tenant.values())
    assert max_overlap(intervals) == 2  # the limit was used, not just respected
    assert len({r["pid"] for r in steps}) == 2  # both workers ran steps
    assert metric(workers, "stepstream_flow_deferred_total", function="limited",
                  reason="concurrency") > 0
    assert metric(workers, "stepstream_concurrency_in_use", function="limited") == 0
    print(f"\nconcurrency: 24 steps of 0.4 s, peak {max_overlap(intervals)} at once "
          f"(limit 2), per tenant {[max_overlap(s) for s in by_tenant.values()]} (limit 1), "
          f"took {max(e for _, e in intervals) - min(s for s, _ in intervals):.1f} s")


def test_throttle_spreads_run_starts_and_drops_none(pair: Pair) -> None:
    settings, workers = pair
    send_all(settings, "flow/throttled", [{"n": i} for i in range(6)])

    starts = sorted(r["start"] for r in wait_records(settings, "throttled", 6, timeout=90))

    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # One start per second at most: 5 gaps of >= 1 s (half of it, for scheduling noise).
    assert min(gaps) >= 0.5, gaps
    assert starts[-1] - starts[0] >= 4.0, gaps
    assert len(records(settings, "throttled")) == 6  # queued, not dropped
    assert metric(workers, "stepstream_runs_throttled_total", function="throttled") >= 5
    print(f"\nthrottle 2/2s: 6 starts over {starts[-1] - starts[0]:.1f} s, gaps "
          f"{[round(g, 2) for g in gaps]}")


def test_rate_limit_drops_events_over_the_limit_and_shows_them(pair: Pair) -> None:
    settings, workers = pair
    datas = [{"user": "u1"}] * 5 + [{"user": "u2"}] * 3 + [{"user": "u1"}]
    ids = [f"rl-u1-{i}" for i in range(5)] + [f"rl-u2-{i}" for i in range(3)] + ["rl-u1-0"]
    send_all(settings, "flow/rate-limited", datas, ids)  # the last one is a redelivery

    ran = wait_records(settings, "rate-limited", 4)

    def dropped() -> list[dict[str, Any]]:
        runs = [get_json(f"{workers[0].url}/v1/runs/{run_id_for('rate-limited', i)}")
                for i in sorted(set(ids))]
        return [r for r in runs if r and r["status"] == "cancelled"]

    shown = wait_for(lambda: len(found := dropped()) >= 4 and found, 60, "4 dropped runs")
    time.sleep(2)  # anything still to come would show up now
    ran = records(settings, "rate-limited")
    assert Counter(r["user"] for r in ran) == {"u1": 2, "u2": 2}
    assert len({r["event"] for r in ran}) == 4
    assert len(dropped()) == 4
    assert {r["error"]["type"] for r in shown} == {"RateLimited"}
    assert all(r["steps"] == [] for r in shown)
    assert metric(workers, "stepstream_runs_rate_limited_total", function="rate-limited") == 4


def test_debounce_starts_one_run_with_the_last_event_after_the_quiet_period(
        pair: Pair) -> None:
    settings, workers = pair
    ss = Stepstream("t", settings=settings)
    sent_at: dict[str, float] = {}
    for i in range(3):
        event_id = ss.send("flow/debounced", {"user": "a", "i": i}, id=f"db-a-{i}")
        sent_at[event_id] = time.time()
        time.sleep(0.5)
    ss.send("flow/debounced", {"user": "b"}, id="db-b-0")
    sent_at["db-b-0"] = time.time()

    # Debounce is about runs: at-least-once lets a step execute again (a redelivered
    # request), so executions are grouped by run, and each run's first one is timed.
    def runs_started() -> set[str]:
        return {r["run"] for r in records(settings, "debounced")}

    wait_for(lambda: len(runs_started()) >= 2, 90, "2 debounced runs")
    time.sleep(3)  # longer than the period: a run for an earlier event would show up

    assert len(runs_started()) == 2
    ran: dict[str, dict[str, Any]] = {}
    for execution in sorted(records(settings, "debounced"), key=lambda r: r["start"]):
        ran.setdefault(execution["user"], execution)
    assert ran["a"]["event"] == "db-a-2" and ran["b"]["event"] == "db-b-0"
    for user, event_id in (("a", "db-a-2"), ("b", "db-b-0")):
        waited = ran[user]["start"] - sent_at[event_id]
        assert 1.9 <= waited < 20, (user, waited)  # never before the 2 s quiet period
    assert metric(workers, "stepstream_runs_debounced_total", function="debounced") == 2


def test_batches_are_full_or_closed_by_their_timeout(pair: Pair) -> None:
    settings, _ = pair
    sent = send_all(settings, "flow/batched", [{"n": i} for i in range(12)])
    sent_at = time.time()

    def batches() -> list[dict[str, Any]] | None:
        found = records(settings, "batched")
        return found if sum(len(r["events"]) for r in found) >= 12 else None

    found = wait_for(batches, 60, "12 events in batches")
    time.sleep(1)

    found = records(settings, "batched")
    assert sorted(len(r["events"]) for r in found) == [2, 5, 5]
    assert sorted(e for r in found for e in r["events"]) == sorted(sent)  # each once
    assert all(r["first"] == r["events"][0] for r in found)
    (partial,) = [r for r in found if len(r["events"]) == 2]
    assert partial["start"] - sent_at >= 2.5  # it waited for its 3 s timeout
    print(f"\nbatches: sizes {sorted(len(r['events']) for r in found)}; the partial one "
          f"started {partial['start'] - sent_at:.1f} s after the burst")


def test_priority_starts_higher_priority_runs_first_behind_a_limit(pair: Pair) -> None:
    settings, _ = pair
    ss = Stepstream("t", settings=settings)
    ss.send("flow/prioritized", {"name": "blocker", "prio": 0, "hold": 4})
    wait_records(settings, "prioritized:started", 1, timeout=30)  # the blocker holds the slot
    names = [("low", 0), ("high", 300)] * 3
    send_all(settings, "flow/prioritized",
             [{"name": f"{n}-{i // 2}", "prio": p, "hold": 0.2}
              for i, (n, p) in enumerate(names)])

    order = [r["name"] for r in sorted(wait_records(settings, "prioritized", 7),
                                       key=lambda r: r["start"])]

    assert order[0] == "blocker"
    assert {n.split("-")[0] for n in order[1:4]} == {"high"}, order
    assert {n.split("-")[0] for n in order[4:]} == {"low"}, order
    print(f"\npriority: start order {order}")


def test_a_killed_workers_slot_comes_back_when_its_lease_lapses(
        settings: Settings, start_worker: WorkerFactory, tmp_path: Path) -> None:
    env = {"STEPSTREAM_CONCURRENCY_LEASE_MS": "2000", "STEPSTREAM_FLOW_POLL_MS": "300"}
    workers = [start_worker(MODULE, ready=False, **env) for _ in range(2)]
    for worker in workers:
        worker.wait_ready()
    ss = Stepstream("t", settings=settings)
    first = run_id_for("hog", ss.send("flow/hog", {"hold": 60}))
    holding = wait_records(settings, "hog", 1)[0]
    victim = next(w for w in workers if w.process and w.process.pid == holding["pid"])
    survivor = next(w for w in workers if w is not victim)
    second = run_id_for("hog", ss.send("flow/hog", {"hold": 0.2}))
    time.sleep(4)  # the first run's chain lease (3 s) lapses: its re-dispatch must wait
    assert [r for r in records(settings, "hog") if r["end"] is not None] == []

    victim.kill()
    killed_at = time.time()

    for run_id in (first, second):
        assert wait_for_run(survivor.url, run_id, timeout=90)["status"] == "completed"
    holds = [r for r in records(settings, "hog") if r["end"] is not None]
    assert {r["run"] for r in holds} == {first, second}
    retried = next(r for r in holds if r["run"] == first)
    assert retried["attempt"] >= 2 and retried["start"] >= killed_at  # only after the kill
    assert retried["start"] - killed_at < 30
    print(f"\nslot back {retried['start'] - killed_at:.1f} s after SIGKILL (lease 2 s)")
