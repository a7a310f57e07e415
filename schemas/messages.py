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


@dataclass(frozen=True, slots=True)
class MemoItem:
    """One step's saved result in the runs table, stored beside its run's state (its
    position in the memo is in the record's key)."""

    step_id: str
    entry: MemoEntry


@dataclass(frozen=True, slots=True)
class LogLine:
    """One log line a run emitted, as it is kept in the run's history."""

    ts: int
    level: str
    message: str
    step_id: str | None = None
    """The step it was emitted in; None: by the handler around the steps."""


# --- runs topic: everything the orchestrator reacts to ------------------------------


@dataclass(frozen=True, slots=True)
class RunStarted:
    """A function was triggered by an event; ``run_id`` derives from both."""

    run_id: str
    function_id: str
    event: Event
    ts: int
    parent_run_id: str | None = None
    parent_step_id: str | None = None
    batch: list[Event] = field(default_factory=list)
    """``batch_events``: every event of the batch (``event`` is the first); else empty."""
    singleton_key: str | None = None
    """The singleton key the run holds (``streams.singletons``): released when it ends."""
    backfill: str | None = None
    """The backfill (its consumer group) that started the run; None: the live path."""


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
    chain: int = 0
    """Position in an eager chain of steps run by one dispatch (0 = first)."""
    more: bool = False
    """More of the chain follows: the dispatch is still running."""
    logs: list[LogLine] = field(default_factory=list)
    """Log lines the dispatch emitted (``ctx.logger`` and Python logging), capped."""


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
    retries: int | None = None
    """The step's own retry count, when it overrides the function's."""
    chain: int = 0
    logs: list[LogLine] = field(default_factory=list)
    """Log lines the dispatch emitted (``ctx.logger`` and Python logging), capped."""


@dataclass(frozen=True, slots=True)
class PlannedStep:
    """A step the handler reached that the orchestrator must carry out or schedule.

    ``kind`` is ``run`` (execute it, alongside its siblings), ``sleep`` (until
    ``until_ms``), ``wait`` (for ``event`` matching ``condition``, until ``until_ms``)
    or ``invoke`` (start ``function_id`` with ``data_json`` as a child run).
    """

    step_id: str
    kind: str
    until_ms: int | None = None
    event: str | None = None
    condition: str | None = None
    function_id: str | None = None
    data_json: str | None = None
    on_parent_cancel: str | None = None
    """``invoke``: ``abandon`` leaves the child running when the parent stops waiting for
    it (the parent ends, or the invoke times out); else the child is cancelled then."""
    timeout_ms: int | None = None
    """``invoke``: the step fails (``InvokeTimeout``) if the child has not ended by then."""


@dataclass(frozen=True, slots=True)
class StepPlanned:
    """Dispatch ``seq`` found steps the orchestrator must run in parallel or schedule."""

    run_id: str
    seq: int
    ts: int
    steps: list[PlannedStep] = field(default_factory=list)
    chain: int = 0
    logs: list[LogLine] = field(default_factory=list)
    """Log lines the dispatch emitted (``ctx.logger`` and Python logging), capped."""


@dataclass(frozen=True, slots=True)
class EventMatched:
    """An event matched the run's ``wait_for_event`` step ``step_id``."""

    run_id: str
    step_id: str
    event: Event
    ts: int


@dataclass(frozen=True, slots=True)
class ChildFinished:
    """The child run a ``step.invoke`` started has ended."""

    run_id: str
    step_id: str
    child_run_id: str
    ts: int
    output_json: str | None = None
    error: ErrorInfo | None = None


@dataclass(frozen=True, slots=True)
class FunctionFinished:
    """The handler of dispatch ``seq`` returned (``output_json``) or raised (``error``)."""

    run_id: str
    seq: int
    ts: int
    output_json: str | None = None
    error: ErrorInfo | None = None
    chain: int = 0
    logs: list[LogLine] = field(default_factory=list)
    """Log lines the dispatch emitted (``ctx.logger`` and Python logging), capped."""


@dataclass(frozen=True, slots=True)
class StepDeferred:
    """Flow control (a concurrency limit or a throttle) held dispatch ``seq`` back:
    dispatch it again at ``retry_at``."""

    run_id: str
    seq: int
    ts: int
    retry_at: int
    reason: str
    """What held it back, for people: ``concurrency``, ``throttle``, ..."""


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A delay set by the orchestrator ran out (a retry backoff, a sleep, a timeout)."""

    run_id: str
    timer_id: str
    ts: int


@dataclass(frozen=True, slots=True)
class ChainAlive:
    """An executor still runs dispatch ``seq``'s eager chain, at position ``chain``.

    Sent every third of the chain lease while a chained step runs, so that a slow step
    does not look like a dead worker and the lease can be short.
    """

    run_id: str
    seq: int
    chain: int
    ts: int


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """Someone asked for the run to stop."""

    run_id: str
    reason: str
    ts: int

@dataclass(frozen=True, slots=True)
class FunctionControl:
    """An operator paused (or resumed) a function: one copy on every partition of the
    runs topic (no key), so each orchestrator task applies it in order with its runs'
    messages; also the value of the functions table, by function id."""

    function_id: str
    paused: bool
    ts: int
    """When it was asked: of two requests, the later one holds (``streams.pauses``)."""


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """Where a cron function's schedule stands (``streams.schedules``): a value of the
    functions table, on the partition of the function id, whose task starts its ticks."""

    function_id: str
    done_until: int
    """Epoch ms: every tick at or before it was started or skipped."""


@dataclass(frozen=True, slots=True)
class SingletonClaim:
    """A run of a singleton function asks for its key (``streams.singletons``); on the
    runs topic, keyed by ``key``, so one task decides for each key."""

    key: str
    mode: str
    """``skip`` the new run while the key is held, or ``cancel`` the holder first."""
    start: RunStarted


@dataclass(frozen=True, slots=True)
class SingletonReleased:
    """A run that held a singleton key ended; keyed by ``key`` on the runs topic."""

    key: str
    run_id: str
    ts: int


@dataclass(frozen=True, slots=True)
class SingletonHolder:
    """The run holding a singleton key; the value of the singletons table, by key."""

    run_id: str
    waiting: RunStarted | None = None
    """``cancel`` mode: the run to start once the cancelled holder has ended."""


@dataclass(frozen=True, slots=True)
class ReplayRequested:
    """Someone asked for a failed or cancelled run to run again.

    Completed steps stay memoized; the failed steps (or ``from_step`` and every step
    memoized after it) are forgotten, so they run again.
    """

    run_id: str
    ts: int
    from_step: str | None = None


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
    target: str | None = None
    """Run exactly this step (a parallel or retried one); None: run the first new step."""
    batch: list[Event] = field(default_factory=list)
    """The run's batch of events (``batch_events``); empty for a run of one event."""


# --- waiters (wait_for_event and cancel_on) -------------------------------------------


@dataclass(frozen=True, slots=True)
class Waiter:
    """A run waiting for an event: a ``wait_for_event`` step, or a ``cancel_on`` rule."""

    run_id: str
    step_id: str
    kind: str
    """``step`` (resume the step with the event) or ``cancel`` (cancel the run)."""
    event_name: str
    trigger: Event
    """The run's triggering event: ``event`` in the condition."""
    expires_at: int
    condition: str | None = None


@dataclass(frozen=True, slots=True)
class WaiterChanged:
    """Add (``active``) or remove a waiter; keyed by event name on the waiters topic."""

    waiter: Waiter
    active: bool


@dataclass(frozen=True, slots=True)
class WaiterSet:
    """Every live waiter for one event name; the value of the waiters table."""

    waiters: list[Waiter] = field(default_factory=list)


# --- delay tiers ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delayed:
    """A message held back until ``due_ms``, then produced to ``topic``."""

    due_ms: int
    topic: str
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class FlowTimer:
    """A debounce or a batch to settle at ``due_ms``; back on the events topic through
    the delay tiers, where the trigger agent settles it (``streams.flow``)."""

    kind: str
    """``debounce`` or ``batch``."""
    function_id: str
    key: str
    """The value of the option's key expression."""
    token: str
    """Debounce: the id of the event that set the timer; batch: the batch's first event id."""
    due_ms: int
    event: Event | None = None
    """Debounce: the event that set the timer."""


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
    logs: list[LogLine] = field(default_factory=list)
    """Log lines the dispatch emitted (``ctx.logger`` and Python logging), capped."""
    event_id: str | None = None
    """The id of the event that started the run, on each of its records (None: written
    before stepstream recorded it), so a reader of one record knows the event."""
    backfill: str | None = None
    """On ``run.started``: the backfill that started the run (``RunStarted.backfill``)."""


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
class Dispatched:
    """A step request the orchestrator awaits an answer to (keyed by its ``seq``)."""

    step_id: str
    """The targeted step; empty for a dispatch that runs the first new step."""
    attempt: int
    chain: int = 0
    """Eager chain position expected next from this dispatch."""
    lease_due: int | None = None
    """When the running chain lease's timer fires (epoch ms); None: no lease yet."""
    alive_at: int | None = None
    """When the chain last showed life (a step applied, a ``ChainAlive``): its lease runs
    out one lease after this."""
    deferred: bool = False
    """This request re-sends one that flow control held back (``StepDeferred``)."""


@dataclass(frozen=True, slots=True)
class Pending:
    """A step that waits on something other than an executor."""

    kind: str
    """``retry`` (backoff), ``sleep``, ``event`` (wait_for_event), ``invoke``, ``deferred``
    (flow control) or ``paused`` (its function is paused)."""
    attempt: int = 0
    timer_id: str | None = None
    event: str | None = None
    condition: str | None = None
    child_run_id: str | None = None
    abandon: bool = False
    """``invoke``: the child keeps running when the run stops waiting for it."""


@dataclass(frozen=True, slots=True)
class RunState:
    """A run as the orchestrator knows it; the value of the changelog-backed table."""

    run_id: str
    function_id: str
    event: Event
    status: str
    seq: int
    """Number of the last dispatch; every step request gets the next one."""
    started_at: int
    memo: dict[str, MemoEntry] = field(default_factory=dict)
    dispatched: dict[str, Dispatched] = field(default_factory=dict)
    """Step requests awaiting an answer, by ``seq`` (as text: Avro map keys)."""
    pending: dict[str, Pending] = field(default_factory=dict)
    """Steps waiting on a timer, an event or a child run, by step id."""
    history_seq: int = 0
    ended_at: int | None = None
    output_json: str | None = None
    error: ErrorInfo | None = None
    parent_run_id: str | None = None
    parent_step_id: str | None = None
    answered: bool = False
    """Whether an executor has answered yet: the run has started (``timeouts.start``)."""
    batch: list[Event] = field(default_factory=list)
    """The run's batch of events (``batch_events``); empty for a run of one event."""
    singleton_key: str | None = None
    """The singleton key the run holds (``streams.singletons``): released when it ends."""


RUN_MESSAGES = (RunStarted, StepCompleted, StepFailed, StepPlanned, FunctionFinished,
                TimerFired, CancelRequested, EventMatched, ChildFinished,
                ReplayRequested, StepDeferred, ChainAlive)
"""Everything the ``runs`` topic carries."""

RunMessage = (RunStarted | StepCompleted | StepFailed | StepPlanned | FunctionFinished
              | TimerFired | CancelRequested | EventMatched | ChildFinished
              | ReplayRequested | StepDeferred | ChainAlive)
