"""The run read model: ``streams.readmodel.apply_record`` projects history into a run page."""

from __future__ import annotations

import copy
from typing import Any

from schemas.messages import (
    ErrorInfo,
    Event,
    FunctionFinished,
    HistoryRecord,
    PlannedStep,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepPlanned,
    TimerFired,
)
from stepstream.retry import RetryPolicy
from streams.machine import Record, RunPolicy, Schedule, advance
from streams.readmodel import apply_record
from tests.projection import project

EVENT = Event(id="evt-1", name="orders/placed", data_json='{"order": 7}', ts=1)
BOOM = ErrorInfo(type="RuntimeError", message="boom", traceback="tb")


def record(seq: int, kind: str, **fields: Any) -> HistoryRecord:
    return HistoryRecord(run_id="run-1", seq=seq, ts=fields.pop("ts", seq * 100), kind=kind,
                         function_id="fn", **fields)


STARTED = record(1, "run.started", event=EVENT, ts=50)


def test_a_started_run() -> None:
    doc = project(STARTED)

    assert doc == {"run_id": "run-1", "function_id": "fn", "status": "running",
                   "event": {"id": "evt-1", "name": "orders/placed", "data": {"order": 7},
                             "ts": 1},
                   "started_at": 50, "ended_at": None, "duration_ms": None, "output": None,
                   "error": None, "replays": 0, "steps": [], "logs": [], "logs_dropped": 0,
                   "dead_letters": [], "seq": 1, "end_seq": None, "backfill": None}


def test_the_run_document_builds_up_from_its_records() -> None:
    doc = project(
        STARTED,
        record(2, "step.completed", step_id="a", output_json='{"n":1}', started_at=110,
               ended_at=120),
        record(3, "step.completed", step_id="b", output_json="[1,2]", started_at=210,
               ended_at=220),
        record(4, "run.completed", output_json='"done"', ts=400),
    )

    assert (doc["status"], doc["output"], doc["error"], doc["ended_at"], doc["seq"]) == (
        "completed", "done", None, 400, 4)
    assert [(s["id"], s["status"], s["attempts"], s["output"]) for s in doc["steps"]] == [
        ("a", "completed", 1, {"n": 1}), ("b", "completed", 1, [1, 2])]
    a = doc["steps"][0]
    assert (a["started_at"], a["ended_at"], a["error"]) == (110, 120, None)
    assert a["history"] == [{"attempt": 0, "replay": 0, "ts": 200, "started_at": 110,
                             "ended_at": 120, "duration_ms": 10, "outcome": "completed",
                             "error": None, "next_attempt_at": None, "seq": 2}]


def test_a_retrying_step_shows_its_attempts_and_status() -> None:
    doc = project(
        STARTED,
        record(2, "step.failed", step_id="a", attempt=0, error=BOOM, started_at=100,
               ended_at=110, next_attempt_at=1_110),
    )

    (step,) = doc["steps"]
    assert (step["status"], step["attempts"], step["next_attempt_at"]) == (
        "retrying", 1, 1_110)
    assert step["error"] == {"type": "RuntimeError", "message": "boom", "traceback": "tb"}
    assert doc["status"] == "running"

    doc = apply_record(doc, record(3, "step.failed", step_id="a", attempt=1, error=BOOM,
                                   started_at=1_120, ended_at=1_130, next_attempt_at=3_130))
    doc = apply_record(doc, record(4, "step.completed", step_id="a", attempt=2,
                                   output_json="42", started_at=3_140, ended_at=3_150))

    (step,) = doc["steps"]
    assert (step["status"], step["attempts"], step["output"], step["error"]) == (
        "completed", 3, 42, None)
    assert (step["started_at"], step["ended_at"]) == (100, 3_150)
    assert [(h["attempt"], h["outcome"], h["next_attempt_at"]) for h in step["history"]] == [
        (0, "failed", 1_110), (1, "failed", 3_130), (2, "completed", None)]


def test_a_step_that_failed_for_good() -> None:
    doc = project(
        STARTED,
        record(2, "step.failed", step_id="a", attempt=0, error=BOOM, started_at=1, ended_at=2),
        record(3, "run.failed", error=ErrorInfo(type="StepError", message="step 'a' failed")),
    )

    (step,) = doc["steps"]
    assert (step["status"], step["attempts"]) == ("failed", 1)
    assert doc["status"] == "failed"
    assert doc["error"] == {"type": "StepError", "message": "step 'a' failed", "traceback": ""}
    assert doc["output"] is None


def test_a_cancelled_run() -> None:
    doc = project(STARTED, record(2, "run.cancelled",
                                  error=ErrorInfo(type="Cancelled", message="by ops"), ts=9))

    assert (doc["status"], doc["ended_at"], doc["error"]["message"]) == ("cancelled", 9, "by ops")


def test_a_record_at_or_below_the_stored_seq_is_ignored() -> None:
    doc = project(STARTED, record(2, "step.completed", step_id="a", output_json="1",
                                  started_at=1, ended_at=2))
    before = copy.deepcopy(doc)

    for stale in (
        record(2, "step.completed", step_id="a", output_json="1", started_at=1, ended_at=2),
        record(1, "run.started", event=EVENT, ts=999),
        record(2, "run.completed", output_json='"other"'),
        record(0, "step.failed", step_id="a", error=BOOM),
    ):
        doc = apply_record(doc, stale)

    assert doc == before


def test_a_record_after_a_gap_is_still_applied() -> None:
    doc = project(STARTED, record(5, "run.completed", output_json="1"))

    assert (doc["status"], doc["seq"]) == ("completed", 5)


def test_the_machines_history_projects_into_the_run_page() -> None:
    policy = RunPolicy(retry=RetryPolicy(retries=2, jitter=0.0))
    records: list[HistoryRecord] = []

    def step(state: Any, message: Any) -> Any:
        state, commands = advance(state, message, policy)
        records.extend(c.record for c in commands if isinstance(c, Record))
        return state, commands

    state, _ = step(None, RunStarted(run_id="run-1", function_id="fn", event=EVENT, ts=10))
    state, commands = step(state, StepFailed(run_id="run-1", seq=1, step_id="fetch", attempt=0,
                                             error=BOOM, retriable=True, started_at=11,
                                             ended_at=12))
    (timer,) = [c.timer for c in commands if isinstance(c, Schedule)]
    state, _ = step(state, timer)
    state, _ = step(state, StepCompleted(run_id="run-1", seq=2, step_id="fetch", attempt=1,
                                         output_json='{"rows":3}', started_at=1_020,
                                         ended_at=1_030))
    state, _ = step(state, FunctionFinished(run_id="run-1", seq=3, ts=1_040,
                                            output_json='{"ok":true}'))

    doc = project(*records, *records)  # the topic redelivered everything once

    assert (doc["status"], doc["output"], doc["started_at"], doc["ended_at"]) == (
        "completed", {"ok": True}, 10, 1_040)
    (fetch,) = doc["steps"]
    assert (fetch["id"], fetch["status"], fetch["attempts"], fetch["output"]) == (
        "fetch", "completed", 2, {"rows": 3})
    assert [(h["attempt"], h["outcome"]) for h in fetch["history"]] == [
        (0, "failed"), (1, "completed")]
    assert fetch["history"][0]["next_attempt_at"] == 1_012


def test_sleeping_waiting_and_invoking_steps_show_what_they_wait_for() -> None:
    policy = RunPolicy()
    records: list[HistoryRecord] = []

    def step(state: Any, message: Any) -> Any:
        state, commands = advance(state, message, policy)
        records.extend(c.record for c in commands if isinstance(c, Record))
        return state

    state = step(None, RunStarted(run_id="run-1", function_id="fn", event=EVENT, ts=10))
    state = step(state, StepPlanned(run_id="run-1", seq=1, ts=20, steps=[
        PlannedStep(step_id="nap", kind="sleep", until_ms=5_000),
        PlannedStep(step_id="paid", kind="wait", event="orders/paid", until_ms=9_000),
        PlannedStep(step_id="child", kind="invoke", function_id="other")]))

    doc = project(*records)

    assert [(s["id"], s["status"], s["next_attempt_at"]) for s in doc["steps"]] == [
        ("nap", "sleeping", 5_000), ("paid", "waiting", 9_000), ("child", "invoking", None)]

    state = step(state, TimerFired(run_id="run-1", timer_id="sleep:nap", ts=5_001))
    doc = project(*records)

    nap = doc["steps"][0]
    assert (nap["status"], nap["output"]) == ("completed", None)
    assert [h["outcome"] for h in nap["history"]] == ["sleeping", "completed"]
