"""What ``stepstream.testing.run`` returns: how the run ended and what it did."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from schemas.messages import ErrorInfo, HistoryRecord, RunState
from stepstream.events import TriggerEvent
from stepstream.patching import is_reserved
from stepstream.progress import StepProgress


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """One run of a function under ``stepstream.testing.run``."""

    run_id: str
    status: str
    """``completed``, ``failed`` or ``cancelled``."""
    output: Any
    """What the handler returned (as JSON round-trips it); None unless completed."""
    error: ErrorInfo | None
    """Why the run failed or was cancelled (``type``, ``message``, ``traceback``)."""
    steps: dict[str, Any] = field(default_factory=dict)
    """Step id -> output, in the order the steps completed (a sleep's output is None, a
    wait's is the event or None)."""
    step_errors: dict[str, ErrorInfo] = field(default_factory=dict)
    """Step id -> the error of a step that failed for good."""
    attempts: dict[str, int] = field(default_factory=dict)
    """Step id -> how many times it ran (1 for a sleep, a wait or an invoke)."""
    retry_delays: dict[str, list[timedelta]] = field(default_factory=dict)
    """Step id -> the backoff before each of its retries (skipped, not waited)."""
    slept: list[timedelta] = field(default_factory=list)
    """Each sleep the run began, as long as it was to be (skipped on the virtual clock)."""
    sent: list[TriggerEvent] = field(default_factory=list)
    """The events ``step.send_event`` sent."""
    elapsed: timedelta = timedelta()
    """Virtual time from the start to the end of the run."""
    history: list[HistoryRecord] = field(default_factory=list)
    """The run's history records, as the engine writes them to the history topic."""
    progress: list[StepProgress] = field(default_factory=list)
    """Every ``ctx.progress`` call, in order (a worker publishes only the last few a
    second of each step; here none is left out)."""


def result_of(state: RunState, history: list[HistoryRecord], sent: list[TriggerEvent],
              progress: list[StepProgress] | None = None) -> RunResult:
    """The result of a run that ended in ``state`` after writing ``history``."""
    steps: dict[str, Any] = {}
    errors: dict[str, ErrorInfo] = {}
    attempts: Counter[str] = Counter()
    delays: dict[str, list[timedelta]] = {}
    slept = [timedelta(milliseconds=r.next_attempt_at - r.ts) for r in history
             if r.kind == "step.sleeping" and r.next_attempt_at is not None]
    for record in history:
        step_id = record.step_id
        if step_id is None or is_reserved(step_id) or record.kind not in (
                "step.completed", "step.failed"):
            continue
        attempts[step_id] += 1
        if record.kind == "step.completed":
            steps[step_id] = json.loads(record.output_json or "null")
        elif record.next_attempt_at is not None:
            delays.setdefault(step_id, []).append(
                timedelta(milliseconds=record.next_attempt_at - record.ts))
        elif record.error is not None:
            errors[step_id] = record.error
    return RunResult(run_id=state.run_id, status=state.status,
                     output=json.loads(state.output_json) if state.output_json else None,
                     error=state.error, steps=steps, step_errors=errors,
                     attempts=dict(attempts), retry_delays=delays, slept=slept, sent=sent,
                     elapsed=timedelta(milliseconds=(state.ended_at or state.started_at)
                                       - state.started_at), history=history,
                     progress=list(progress or ()))
