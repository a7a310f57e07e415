"""The records that flow through stepstream's topics and tables.

Each class mirrors one ``.avsc`` file beside this module (a test pins that they
agree). User payloads — event data, step outputs — travel as JSON text inside
the Avro records, so schemas never depend on what users send. Times are epoch
milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """An exception as it crossed a process boundary."""

    type: str
    message: str
    traceback: str = ""


@dataclass(frozen=True, slots=True)
class Event:
    """The envelope of everything on the events topic."""

    id: str
    name: str
    data_json: str = "{}"
    ts: int = 0


@dataclass(frozen=True, slots=True)
class MemoEntry:
    """The saved result of one step: its output, or the error it failed with for good."""

    output_json: str | None = None
    error: ErrorInfo | None = None


# --- runs topic: everything the orchestrator reacts to ------------------------------


@dataclass(frozen=True, slots=True)
class RunStarted:
    """A function was triggered by an event; ``run_id`` derives from both."""

    run_id: str
    function_id: str
    event: Event
    ts: int


@dataclass(frozen=True, slots=True)
class StepCompleted:
    """An executor ran a step of dispatch ``seq`` and it returned ``output_json``."""

    run_id: str
    seq: int
    step_id: str
    attempt: int
    output_json: str
    started_at: int
    ended_at: int


@dataclass(frozen=True, slots=True)
class StepFailed:
    """An executor ran a step of dispatch ``seq`` and it raised."""

    run_id: str
    seq: int
    step_id: str
    attempt: int
    error: ErrorInfo
    retriable: bool
    started_at: int
    ended_at: int
    retry_after_ms: int | None = None


@dataclass(frozen=True, slots=True)
class FunctionFinished:
    """The handler of dispatch ``seq`` returned (``output_json``) or raised (``error``)."""

    run_id: str
    seq: int
    ts: int
    output_json: str | None = None
    error: ErrorInfo | None = None


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A delay set by the orchestrator ran out (a retry backoff, a sleep, a timeout)."""

    run_id: str
    timer_id: str
    ts: int


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """Someone asked for the run to stop."""

    run_id: str
    reason: str
    ts: int


# --- steps topic ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepRequest:
    """Replay the handler with ``memo`` and run the first step it lacks."""

    run_id: str
    seq: int
    function_id: str
    event: Event
    attempt: int
    memo: dict[str, MemoEntry] = field(default_factory=dict)


# --- delay tiers ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delayed:
    """A message held back until ``due_ms``, then produced to ``topic``."""

    due_ms: int
    topic: str
    key: bytes
    value: bytes


# --- records for people --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """One thing that happened to a run; ``seq`` orders a run's records."""

    run_id: str
    seq: int
    ts: int
    kind: str
    function_id: str
    step_id: str | None = None
    attempt: int = 0
    output_json: str | None = None
    error: ErrorInfo | None = None
    event: Event | None = None
    started_at: int | None = None
    ended_at: int | None = None
    next_attempt_at: int | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A step that exhausted its retries, with what is needed to replay it."""

    run_id: str
    function_id: str
    step_id: str
    attempt: int
    error: ErrorInfo
    event: Event
    ts: int


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A message that could not be decoded, kept as received with the reason."""

    topic: str
    partition: int
    offset: int
    reason: str
    ts: int
    key: bytes | None = None
    value: bytes | None = None


# --- the orchestrator's table --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunState:
    """A run as the orchestrator knows it; the value of the changelog-backed table."""

    run_id: str
    function_id: str
    event: Event
    status: str
    seq: int
    attempt: int
    started_at: int
    memo: dict[str, MemoEntry] = field(default_factory=dict)
    timer_id: str | None = None
    history_seq: int = 0
    ended_at: int | None = None
    output_json: str | None = None
    error: ErrorInfo | None = None


RUN_MESSAGES = (RunStarted, StepCompleted, StepFailed, FunctionFinished, TimerFired,
                CancelRequested)
"""Everything the ``runs`` topic carries."""

RunMessage = (RunStarted | StepCompleted | StepFailed | FunctionFinished | TimerFired
              | CancelRequested)
