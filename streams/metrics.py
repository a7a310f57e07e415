"""Prometheus metrics of a worker, on their own registry with small fixed label sets.

Label values are bounded by the user's code (function and step ids; a step id repeated
in a loop is counted under its base id, see ``step_label``, and a function's step labels
are capped at ``MAX_STEP_LABELS``), by the topic catalog, or by the partitions this
worker owns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
                 60, 300)
_RUN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_REPEAT = re.compile(r":\d+$")


MAX_STEP_LABELS = 200
"""Distinct ``step`` label values per function; later step ids count as ``OTHER_STEPS``
(step ids made from data, ``f"fetch-{user_id}"``, would grow the series without end)."""
OTHER_STEPS = "_other"

MAX_FAILED_EXPRESSIONS = 1024
"""Failed expressions remembered so that each is logged once (the oldest is forgotten)."""


def step_label(step_id: str) -> str:
    """A step id as a metric label: ``send:3`` (the 4th ``send`` of a loop) counts as ``send``."""
    return _REPEAT.sub("", step_id)


@dataclass
class Metrics:
    """Every metric a worker exports; one instance per worker process."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self._step_labels: dict[str, set[str]] = {}
        self._failed: dict[tuple[str, str, str], None] = {}  # insertion-ordered
        r = self.registry
        self.events_received = Counter(
            "stepstream_events_received",
            "Events read from the events topic and from source topics (TopicTrigger)",
            ["outcome"], registry=r)
        self.runs_started = Counter(
            "stepstream_runs_started", "Runs started", ["function"], registry=r)
        self.cron_ticks = Counter(
            "stepstream_cron_ticks", "Cron ticks started, on time (within a second) or late "
            "(caught up after an outage or a partition's move)",
            ["function", "outcome"], registry=r)
        self.runs_finished = Counter(
            "stepstream_runs_finished", "Runs that reached a final status",
            ["function", "status"], registry=r)
        self.run_duration = Histogram(
            "stepstream_run_duration_seconds", "From run start to final status",
            ["function", "status"], buckets=_RUN_BUCKETS, registry=r)
        self.step_attempts = Counter(
            "stepstream_step_attempts", "Step attempts executed, by outcome (completed, failed)",
            ["function", "step", "outcome"], registry=r)
        self.step_duration = Histogram(
            "stepstream_step_duration_seconds", "Time spent in a step's code",
            ["function", "step"], buckets=_STEP_BUCKETS, registry=r)
        self.retries_scheduled = Counter(
            "stepstream_retries_scheduled", "Delayed messages sent, by delay tier", ["tier"],
            registry=r)
        self.dead_letters = Counter(
            "stepstream_dead_letters", "Steps sent to the dead-letter topic", ["function"],
            registry=r)
        self.quarantined = Counter(
            "stepstream_quarantined", "Messages quarantined as undecodable", ["topic"],
            registry=r)
        self.dlq_size = Gauge(
            "stepstream_dlq_size",
            "Dead letters not replayed yet, in the namespace's read model (same on every worker)",
            registry=r)
        self.table_keys = Gauge(
            "stepstream_table_keys", "Keys in this worker's partitions of a table", ["table"],
            registry=r)
        self.consumer_partition_lag = Gauge(
            "stepstream_consumer_partition_lag_messages",
            "Messages behind the high watermark, per partition this worker owns",
            ["topic", "partition"], registry=r)
        # Health of the worker itself, kept by streams.monitor (read by the alert rules).
        self.worker_info = Gauge(
            "stepstream_worker_info", "Always 1; labels say what this worker runs",
            ["namespace", "app", "version"], registry=r)
        self.heartbeat = Gauge(
            "stepstream_worker_heartbeat_timestamp_seconds",
            "Unix time of the worker's last monitor tick (its event loop is alive)", registry=r)
        self.consumer_lag = Gauge(
            "stepstream_consumer_lag_messages",
            "Messages behind the high watermark, summed over this worker's partitions",
            ["topic"], registry=r)
        self.source_lag = Gauge(
            "stepstream_source_lag_messages",
            "Records of a source topic (TopicTrigger) behind its end for one source group, "
            "summed over this worker's partitions", ["group", "topic"], registry=r)
        self.consumer_lag_seconds = Gauge(
            "stepstream_consumer_lag_seconds",
            "Age of the last message taken in from a partition that is behind (max)",
            ["topic"], registry=r)
        self.newer_schema_waiting = Gauge(
            "stepstream_newer_schema_waiting",
            "Partitions this worker stopped at a record of a newer stepstream, waiting for a "
            "worker of that version (a rolling upgrade under way; streams.kafka.newer)",
            ["topic"], registry=r)
        self.runs_in_flight = Gauge(
            "stepstream_runs_in_flight", "Runs not yet final in this worker's partitions",
            registry=r)
        self.runs_active = Gauge(
            "stepstream_runs_active", "Runs of this worker's partitions waiting for a step "
            "to run (streams.intake)", registry=r)
        self.run_intake_paused = Gauge(
            "stepstream_run_intake_paused", "1 while this worker reads no new events: "
            "STEPSTREAM_MAX_ACTIVE_RUNS runs are active", registry=r)
        self.http_streams = Gauge(
            "stepstream_http_streams_open", "Live run streams (GET /v1/runs/{id}/stream) "
            "this worker serves (STEPSTREAM_HTTP_MAX_STREAMS at most)", registry=r)
        self.oldest_run_age = Gauge(
            "stepstream_oldest_run_age_seconds",
            "Age of the oldest run not yet final in this worker's partitions", registry=r)
        # Flow control (streams.flow); the gauge is this worker's share: sum it over workers.
        self.runs_throttled = Counter(
            "stepstream_runs_throttled", "Runs queued behind their throttle (once per wait)",
            ["function"], registry=r)
        self.runs_rate_limited = Counter(
            "stepstream_runs_rate_limited", "Events dropped by a rate limit (no run started)",
            ["function"], registry=r)
        self.runs_debounced = Counter(
            "stepstream_runs_debounced", "Events superseded by a later one within the debounce "
            "period (no run started)", ["function"], registry=r)
        self.flow_deferred = Counter(
            "stepstream_flow_deferred", "Dispatches held back by flow control, by reason "
            "(concurrency, throttle, unavailable)", ["function", "reason"], registry=r)
        self.expression_failures = Counter(
            "stepstream_expression_failures", "CEL expressions that failed when evaluated, by "
            "kind (filter, wait, key) and reason (error, budget)", ["function", "kind", "reason"],
            registry=r)
        self.concurrency_in_use = Gauge(
            "stepstream_concurrency_in_use", "Dispatches holding concurrency slots on this "
            "worker now", ["function"], registry=r)

    def step(self, function_id: str, step_id: str) -> str:
        """The ``step`` label of ``step_id`` (``step_label``), at most ``MAX_STEP_LABELS``
        of them per function."""
        label = step_label(step_id)
        seen = self._step_labels.setdefault(function_id, set())
        if label in seen:
            return label
        if len(seen) >= MAX_STEP_LABELS:
            return OTHER_STEPS
        seen.add(label)
        return label

    def first_failure(self, function_id: str, kind: str, source: str) -> bool:
        """Whether this is the first failure of expression ``source`` seen here (it is logged
        then, not at every event); remembers the last ``MAX_FAILED_EXPRESSIONS``."""
        seen = (function_id, kind, source)
        if seen in self._failed:
            return False
        if len(self._failed) >= MAX_FAILED_EXPRESSIONS:
            self._failed.pop(next(iter(self._failed)))
        self._failed[seen] = None
        return True

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
