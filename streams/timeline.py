"""A run's timeline: the JSON document the read model keeps per run (pure; no I/O).

``apply_record(doc, record)`` folds one history record into the document. Records
of a run arrive in ``seq`` order (the history topic is keyed by run id); one at or
below the document's ``seq`` was applied already and changes nothing, so a
redelivered topic projects into the same document.

The document::

    run_id, function_id, status, event, started_at, ended_at, duration_ms,
    output, error, replays, seq, end_seq,
    steps: [{id, status, attempts, output, error, started_at, ended_at,
             duration_ms, next_attempt_at, attempts_before_replay,
             history: [{attempt, replay, outcome, ts, started_at, ended_at,
                        duration_ms, error, next_attempt_at, seq}]}],
    logs: [{ts, level, message, step_id, attempt}], logs_dropped,
    dead_letters: [step id, ...]   (steps in the dead-letter index, until replayed)

``seq`` of a step's history entry and ``end_seq`` (the record that ended the run) are
the run's history positions, what the live stream numbers its events by
(``streams.run_events``).
"""

from __future__ import annotations

import json
from typing import Any

from schemas.messages import ErrorInfo, HistoryRecord

STATUSES = ("running", "completed", "failed", "cancelled")
FINAL = frozenset(STATUSES[1:])
MAX_RUN_LOGS = 1000
"""Log lines kept in a run's document (the oldest go first); the topic keeps them all."""


def error_doc(error: ErrorInfo | None) -> dict[str, str] | None:
    """An error as the documents show it."""
    if error is None:
        return None
    return {"type": error.type, "message": error.message, "traceback": error.traceback}


def _output(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _took(started: int | None, ended: int | None) -> int | None:
    return None if started is None or ended is None else ended - started


def is_dead_letter(record: HistoryRecord) -> bool:
    """Whether ``record`` is a step failing for good after executor attempts.

    The machine writes a dead letter exactly then: a ``step.failed`` with no next
    attempt, from an executor (it has ``started_at``). A step that fails because
    its child run failed has no ``started_at`` and no dead letter.
    (``tests/unit/test_timeline.py`` pins this against the machine.)
    """
    return (record.kind == "step.failed" and record.next_attempt_at is None
            and record.started_at is not None and record.step_id is not None)


def new_doc(record: HistoryRecord) -> dict[str, Any]:
    """The document of a run the read model has not seen yet."""
    return {"run_id": record.run_id, "function_id": record.function_id, "status": "running",
            "event": None, "started_at": record.ts, "ended_at": None, "duration_ms": None,
            "output": None, "error": None, "replays": 0, "steps": [], "logs": [],
            "logs_dropped": 0, "dead_letters": [], "seq": 0, "end_seq": None,
            "backfill": None}


def starts_again(doc: dict[str, Any] | None, record: HistoryRecord) -> bool:
    """Whether ``record`` starts anew a run that ended before it: a duplicate of its event
    that came after the engine forgot the run (``Settings.finished_run_retention_s``)."""
    return (doc is not None and record.kind == "run.started"
            and doc["ended_at"] is not None and record.ts > doc["ended_at"])


def apply_record(doc: dict[str, Any] | None, record: HistoryRecord) -> dict[str, Any]:
    """The run document after ``record``."""
    if doc is None or starts_again(doc, record):
        doc = new_doc(record)
    if record.seq <= doc["seq"]:
        return doc
    doc["seq"] = record.seq
    kind = record.kind
    if kind == "run.started":
        if record.event is not None:
            doc["event"] = {"id": record.event.id, "name": record.event.name,
                            "data": json.loads(record.event.data_json), "ts": record.event.ts}
        doc["started_at"] = record.ts
        doc["backfill"] = record.backfill
    elif kind == "run.replayed":
        doc.update(status="running", ended_at=None, duration_ms=None, output=None, error=None,
                   replays=doc["replays"] + 1, dead_letters=[], end_seq=None)
        for step in doc["steps"]:
            step["attempts_before_replay"] = step["attempts"]
    elif kind.startswith("run.") and kind.removeprefix("run.") in FINAL:
        doc.update(status=kind.removeprefix("run."), ended_at=record.ts,
                   duration_ms=_took(doc["started_at"], record.ts),
                   output=_output(record.output_json), error=error_doc(record.error),
                   end_seq=record.seq)
    elif kind.startswith("step.") and record.step_id is not None:
        _apply_step(doc, record)
        if is_dead_letter(record) and record.step_id not in doc["dead_letters"]:
            doc["dead_letters"].append(record.step_id)
    # Other kinds ("logs", engine bookkeeping) only bring log lines.
    _add_logs(doc, record)
    return doc


def _apply_step(doc: dict[str, Any], record: HistoryRecord) -> None:
    step = next((s for s in doc["steps"] if s["id"] == record.step_id), None)
    if step is None:
        step = {"id": record.step_id, "status": "running", "attempts": 0, "output": None,
                "error": None, "started_at": record.started_at, "ended_at": None,
                "duration_ms": None, "next_attempt_at": None, "attempts_before_replay": 0,
                "history": []}
        doc["steps"].append(step)
    # Attempts are numbered across replays: a replay's attempts follow the earlier ones.
    attempt = step.get("attempts_before_replay", 0) + record.attempt
    step["attempts"] = max(step["attempts"], attempt + 1)
    step["history"].append({"attempt": attempt, "replay": doc["replays"],
                            "outcome": record.kind.removeprefix("step."), "ts": record.ts,
                            "started_at": record.started_at, "ended_at": record.ended_at,
                            "duration_ms": _took(record.started_at, record.ended_at),
                            "error": error_doc(record.error),
                            "next_attempt_at": record.next_attempt_at, "seq": record.seq})
    if step["started_at"] is None:
        step["started_at"] = record.started_at
    step["ended_at"] = record.ended_at
    step["duration_ms"] = _took(step["started_at"], record.ended_at)
    step["error"] = error_doc(record.error)
    step["next_attempt_at"] = record.next_attempt_at
    if record.kind == "step.completed":
        step["status"], step["output"] = "completed", _output(record.output_json)
    elif record.kind == "step.failed":
        step["status"] = "retrying" if record.next_attempt_at is not None else "failed"
    else:  # step.sleeping, step.waiting, step.invoking
        step["status"] = record.kind.removeprefix("step.")


def _add_logs(doc: dict[str, Any], record: HistoryRecord) -> None:
    if not record.logs:
        return
    logs = doc["logs"]
    step = next((s for s in doc["steps"] if s["id"] == record.step_id), None)
    for line in record.logs:
        attempt = None
        if step is not None and line.step_id == record.step_id:
            attempt = step.get("attempts_before_replay", 0) + record.attempt
        logs.append({"ts": line.ts, "level": line.level, "message": line.message,
                     "step_id": line.step_id, "attempt": attempt})
    if len(logs) > MAX_RUN_LOGS:
        doc["logs_dropped"] += len(logs) - MAX_RUN_LOGS
        del logs[:len(logs) - MAX_RUN_LOGS]


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    """A run as the runs list shows it: no outputs, steps or logs."""
    error = doc.get("error")
    event = doc.get("event") or {}
    failed = next((s["id"] for s in doc["steps"] if s["status"] == "failed"), None)
    return {"run_id": doc["run_id"], "function_id": doc["function_id"],
            "status": doc["status"], "started_at": doc["started_at"],
            "ended_at": doc["ended_at"], "duration_ms": doc.get("duration_ms"),
            "event": {"id": event.get("id"), "name": event.get("name")},
            "error": None if error is None else {"type": error["type"],
                                                 "message": error["message"]},
            "steps": len(doc["steps"]), "failed_step": failed,
            "replays": doc.get("replays", 0)}
