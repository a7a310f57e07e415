"""A run's timeline (``streams.timeline``): logs, replays and dead letters in the run document."""

from __future__ import annotations

from typing import Any

from schemas.messages import (
    ChildFinished,
    ErrorInfo,
    Event,
    FunctionFinished,
    HistoryRecord,
    LogLine,
    PlannedStep,
    ReplayRequested,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepPlanned,
)
from stepstream.retry import RetryPolicy
from streams.machine import Record, RunPolicy, Schedule, SendToDlq, advance
from streams.timeline import MAX_RUN_LOGS, is_dead_letter, summary
from tests.projection import project

EVENT = Event(id="evt-1", name="orders/placed", data_json='{"order": 7}', ts=1)
BOOM = ErrorInfo(type="RuntimeError", message="boom", traceback="Traceback ...")


def record(seq: int, kind: str, **fields: Any) -> HistoryRecord:
    return HistoryRecord(run_id="run-1", seq=seq, ts=fields.pop("ts", seq * 100), kind=kind,
                         function_id="fn", **fields)


STARTED = record(1, "run.started", event=EVENT, ts=50)


def test_log_lines_join_the_run_tagged_with_their_step_and_attempt() -> None:
    doc = project(
        STARTED,
        record(2, "step.completed", step_id="a", attempt=1, output_json="1", started_at=60,
               ended_at=70, logs=[LogLine(ts=55, level="INFO", message="start"),
                                  LogLine(ts=65, level="WARNING", message="in a", step_id="a")]),
        record(3, "logs", logs=[LogLine(ts=80, level="INFO", message="fan out")]),
        record(4, "chain.expired"),
        record(5, "run.completed", output_json="1",
               logs=[LogLine(ts=90, level="INFO", message="bye")]),
    )

    assert [(line["message"], line["step_id"], line["attempt"]) for line in doc["logs"]] == [
        ("start", None, None), ("in a", "a", 1), ("fan out", None, None), ("bye", None, None)]
    assert doc["logs"][1] == {"ts": 65, "level": "WARNING", "message": "in a", "step_id": "a",
                              "attempt": 1}
    assert (doc["status"], doc["duration_ms"]) == ("completed", 450)


def test_a_runs_logs_are_capped_oldest_first() -> None:
    lines = [LogLine(ts=i, level="INFO", message=f"line {i}") for i in range(MAX_RUN_LOGS + 5)]

    doc = project(STARTED, record(2, "logs", logs=lines))

    assert len(doc["logs"]) == MAX_RUN_LOGS
    assert doc["logs"][0]["message"] == "line 5"
    assert doc["logs_dropped"] == 5


def test_a_replay_reopens_the_run_and_numbers_new_attempts_after_the_old_ones() -> None:
    failed = [
        STARTED,
        record(2, "step.completed", step_id="a", output_json="1", started_at=60, ended_at=61),
        record(3, "step.failed", step_id="b", attempt=0, error=BOOM, started_at=62,
               ended_at=63, next_attempt_at=100),
        record(4, "step.failed", step_id="b", attempt=1, error=BOOM, started_at=100,
               ended_at=101),
        record(5, "run.failed", error=ErrorInfo(type="StepError", message="b failed"), ts=102),
    ]
    doc = project(*failed)
    assert (doc["status"], doc["dead_letters"], doc["steps"][1]["attempts"]) == (
        "failed", ["b"], 2)

    doc = project(*failed, record(6, "run.replayed", ts=200))
    assert (doc["status"], doc["ended_at"], doc["error"], doc["replays"]) == (
        "running", None, None, 1)
    assert doc["dead_letters"] == []

    doc = project(*failed, record(6, "run.replayed", ts=200),
                  record(7, "step.completed", step_id="b", attempt=0, output_json="2",
                         started_at=210, ended_at=215),
                  record(8, "run.completed", output_json="2", ts=220))
    a, b = doc["steps"]
    assert (a["attempts"], len(a["history"])) == (1, 1)  # memoized: not run again
    assert (b["status"], b["attempts"], b["output"]) == ("completed", 3, 2)
    assert [(h["attempt"], h["replay"], h["outcome"]) for h in b["history"]] == [
        (0, 0, "failed"), (1, 0, "failed"), (2, 1, "completed")]
    assert (doc["status"], doc["output"]) == ("completed", 2)


def test_a_summary_has_no_outputs_or_logs() -> None:
    doc = project(STARTED, record(2, "step.failed", step_id="b", error=BOOM, started_at=60,
                                  ended_at=61, logs=[LogLine(ts=60, level="ERROR", message="x")]),
                  record(3, "run.failed", error=BOOM, ts=70))

    assert summary(doc) == {
        "run_id": "run-1", "function_id": "fn", "status": "failed", "started_at": 50,
        "ended_at": 70, "duration_ms": 20, "event": {"id": "evt-1", "name": "orders/placed"},
        "error": {"type": "RuntimeError", "message": "boom"}, "steps": 1, "failed_step": "b",
        "replays": 0}


def test_dead_letters_are_exactly_the_machines() -> None:
    """The projector indexes a dead letter where the machine writes one, and only there."""
    policy = RunPolicy(retry=RetryPolicy(retries=1, jitter=0.0))
    records: list[HistoryRecord] = []
    letters: list[tuple[str, str]] = []

    def step(state: Any, message: Any) -> Any:
        state, commands = advance(state, message, policy)
        records.extend(c.record for c in commands if isinstance(c, Record))
        letters.extend((c.letter.run_id, c.letter.step_id) for c in commands
                       if isinstance(c, SendToDlq))
        return state, commands

    state, _ = step(None, RunStarted(run_id="r", function_id="fn", event=EVENT, ts=10))
    # x fails, is retried and fails for good; y is not retriable; z invokes a child that fails
    state, _ = step(state, StepPlanned(run_id="r", seq=1, ts=11, steps=[
        PlannedStep(step_id="x", kind="run"), PlannedStep(step_id="y", kind="run"),
        PlannedStep(step_id="z", kind="invoke", function_id="child")]))
    x_seq, y_seq = 2, 3
    state, commands = step(state, StepFailed(run_id="r", seq=x_seq, step_id="x", attempt=0,
                                             error=BOOM, retriable=True, started_at=12,
                                             ended_at=13))
    (retry,) = [c.timer for c in commands if isinstance(c, Schedule)]
    state, _ = step(state, StepFailed(run_id="r", seq=y_seq, step_id="y", attempt=0,
                                      error=BOOM, retriable=False, started_at=12, ended_at=13))
    state, _ = step(state, retry)
    state, _ = step(state, StepFailed(run_id="r", seq=state.seq, step_id="x", attempt=1,
                                      error=BOOM, retriable=True, started_at=14, ended_at=15))
    state, _ = step(state, ChildFinished(run_id="r", step_id="z", child_run_id="r.z", ts=16,
                                         error=ErrorInfo(type="ChildRunFailed", message="no")))
    state, _ = step(state, FunctionFinished(run_id="r", seq=state.seq, ts=17, error=BOOM))
    state, _ = step(state, ReplayRequested(run_id="r", ts=18))
    state, _ = step(state, StepCompleted(run_id="r", seq=state.seq, step_id="x", attempt=0,
                                         output_json="1", started_at=19, ended_at=20))

    indexed = [(r.run_id, r.step_id) for r in records if is_dead_letter(r)]
    assert sorted(letters) == [("r", "x"), ("r", "y")]
    assert sorted(indexed) == sorted(letters)


def test_a_run_started_again_after_it_ended_and_was_forgotten_gets_a_fresh_document() -> None:
    first = [record(0, "run.started", event=EVENT, ts=100),
             record(1, "step.completed", step_id="a", attempt=0, output_json="1", ts=200),
             record(2, "run.completed", output_json='{"n": 1}', ts=300)]
    doc = project(*first, record(0, "run.started", event=EVENT, ts=5000))
    assert (doc["status"], doc["started_at"], doc["steps"], doc["ended_at"]) == (
        "running", 5000, [], None)
    # A redelivered record of the first run changes nothing.
    assert project(*first, first[0])["status"] == "completed"
