"""The live stream of a run (``GET /v1/runs/{id}/stream``) and ``stepstream runs watch``,
against real workers: steps arrive in order as they complete, progress shows while a step
runs, a reconnect with ``Last-Event-ID`` misses and repeats nothing, the stream limit
answers 503 and a closed stream gives its slot back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from stepstream import Stepstream
from stepstream.api import ApiClient
from stepstream.errors import ApiError
from stepstream.events import run_id_for
from stepstream.settings import Settings
from stepstream.sse import ServerEvent
from tests.conftest import ROOT, WorkerFactory, settings_env
from tests.integration.helpers import get_json, sample, scrape, wait_for
from tests.integration.live_functions import STEPS, gate_key

pytestmark = pytest.mark.integration
MODULE = "tests.integration.live_functions"


def started(settings: Settings, url: str, name: str) -> str:
    """Send an event; the id of its run, once the read model has it."""
    function = name.removeprefix("test/")
    run_id = run_id_for(function, Stepstream("t", settings=settings).send(name, {}))
    wait_for(lambda: get_json(f"{url}/v1/runs/{run_id}"), what=f"run {run_id} in the read model")
    return run_id


def open_gate(settings: Settings, run_id: str, step: int) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        client.set(gate_key(settings.namespace, run_id, step), 1)
    finally:
        client.close()


def next_of(events: Iterator[ServerEvent], kind: str, **data: object) -> ServerEvent:
    """The next event of ``kind`` whose data has ``data``; other kinds are skipped (the
    progress of a step may come any number of times), steps and ends are not."""
    for event in events:
        if event.event == kind and all(event.data.get(k) == v for k, v in data.items()):
            return event
        assert event.event in ("progress", "run"), f"expected {kind} {data}, got {event}"
    raise AssertionError(f"the stream ended before {kind} {data}")


def test_the_stream_gives_each_step_in_order_progress_and_the_end_across_a_reconnect(
        settings: Settings, start_worker: WorkerFactory) -> None:
    worker = start_worker(MODULE)
    api = ApiClient(worker.url)
    run_id = started(settings, worker.url, "test/gated")
    received: list[ServerEvent] = []

    first = api.stream_run(run_id)
    assert next(first).event == "run"
    # The step waits at its gate, saying so: its progress arrives while it runs.
    progress = next_of(first, "progress", step_id="s0")
    assert progress.data["fraction"] == 0.5 and "waiting at gate 0" in progress.data["message"]
    for step in (0, 1):
        open_gate(settings, run_id, step)
        received.append(next_of(first, "step", step_id=f"s{step}"))
    first.close()  # the client goes away after s1

    open_gate(settings, run_id, 2)  # s2 completes, and the run ends, while nobody listens
    again = api.stream_run(run_id, int(received[-1].id or 0))
    assert next(again).event == "run"
    received += [event for event in again if event.event in ("step", "end")]

    assert [(e.event, e.data.get("step_id")) for e in received] == [
        ("step", "s0"), ("step", "s1"), ("step", "s2"), ("end", None)]
    assert [e.data["status"] for e in received] == ["completed"] * 3 + ["completed"]
    assert [e.data["output"] for e in received] == [0, 1, 2, {"total": 3}]
    ids = [int(e.id or 0) for e in received]
    assert ids == sorted(set(ids)), f"ids must grow: {ids}"
    # A stream that ended is over: asking again after its last id gives nothing.
    assert list(api.stream_run(run_id, ids[-1])) == []


def test_the_stream_limit_answers_503_and_a_closed_stream_frees_its_slot(
        settings: Settings, start_worker: WorkerFactory) -> None:
    worker = start_worker(MODULE, STEPSTREAM_HTTP_MAX_STREAMS="2")
    api = ApiClient(worker.url)
    run_id = started(settings, worker.url, "test/gated")

    streams = [api.stream_run(run_id) for _ in range(2)]
    for stream in streams:
        assert next(stream).event == "run"
    with pytest.raises(ApiError) as refused:
        next(api.stream_run(run_id))
    assert refused.value.status == 503
    assert "STEPSTREAM_HTTP_MAX_STREAMS" in str(refused.value)

    streams[0].close()  # the worker notices the closed socket and frees the slot
    wait_for(lambda: sample(scrape(worker.url), "stepstream_http_streams_open") == 1,
             what="the closed stream's slot back")
    third = api.stream_run(run_id)
    assert next(third).event == "run"
    for stream in (streams[1], third):
        stream.close()
    for step in range(STEPS):
        open_gate(settings, run_id, step)


def watch(settings: Settings, url: str, run_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "stepstream.cli", "runs", "watch", run_id, "--json",
         "--url", url], cwd=ROOT, env={**os.environ, **settings_env(settings)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_runs_watch_prints_each_step_as_it_completes_and_exits_with_the_run_status(
        settings: Settings, start_worker: WorkerFactory) -> None:
    worker = start_worker(MODULE)
    run_id = started(settings, worker.url, "test/gated")
    watcher = watch(settings, worker.url, run_id)
    assert watcher.stdout is not None
    lines = iter(watcher.stdout)
    assert json.loads(next(lines))["event"] == "run"
    for step in range(STEPS):  # each step is printed before the next one may finish
        open_gate(settings, run_id, step)
        # Progress goes straight to Redis, outcomes through the history topic: the next
        # step's first progress may come before this step's outcome.
        while (line := json.loads(next(lines)))["event"] == "progress":
            assert line["data"]["step_id"] in (f"s{step}", f"s{step + 1}")
        assert (line["event"], line["data"]["step_id"]) == ("step", f"s{step}")
    assert json.loads(next(lines))["data"]["status"] == "completed"
    assert watcher.wait(timeout=60) == 0

    doomed = started(settings, worker.url, "test/doomed")
    failed = watch(settings, worker.url, doomed)
    out, err = failed.communicate(timeout=60)
    assert failed.returncode == 1, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["event"], e["data"].get("step_id"), e["data"]["status"]) for e in events
            if e["event"] != "run"] == [("step", "fine", "completed"),
                                        ("step", "broken", "failed"),
                                        ("end", None, "failed")]
