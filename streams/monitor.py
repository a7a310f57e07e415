"""A worker's view of its own health, for Prometheus: heartbeat, consumer lag, runs in flight.

Faust's sensors tell us what each partition delivered (offset and produce time
of the last message taken in) and every write to the runs table; a timer turns
that into gauges every ``Settings.monitor_interval_s`` seconds:

- ``stepstream_worker_heartbeat_timestamp_seconds``: set by the timer, so it stops
  moving when the event loop is stuck (the alert "no heartbeat").
- ``stepstream_consumer_lag_messages{topic}``: high watermark minus the next offset
  to take in, summed over this worker's partitions (sum over workers: the group's lag).
- ``stepstream_consumer_lag_seconds{topic}``: for partitions that are behind, the
  age of the last message taken in (max over partitions); 0 for the topics read by
  consumers of their own (history, delay tiers), which report messages only. The delay
  forwarder takes records in at once and holds them in memory until due.
- ``stepstream_consumer_partition_lag_messages{topic,partition}``: the same, per
  partition this worker owns (a partition's series goes when it is revoked).
- ``stepstream_table_keys{table}``: keys of the runs and waiters tables in this worker's
  partitions; ``stepstream_dlq_size``: dead letters waiting in the read model.
- ``stepstream_runs_in_flight`` / ``stepstream_oldest_run_age_seconds``: runs in
  this worker's table partitions that are not final. Kept up to date from the
  table writes; rebuilt by one scan of the table after each rebalance, once
  recovery is done (recovered runs are not written, so the sensor cannot see them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

import faust

from schemas.messages import RunState
from streams.machine import FINAL_STATUSES

if TYPE_CHECKING:
    from streams.engine import Engine

log = logging.getLogger("stepstream.monitor")


class RunTracker(faust.Sensor):
    """Sensor: the last message taken in per partition, and the runs not yet final."""

    lag_series: frozenset[tuple[str, str]] = frozenset()
    """(topic, partition) of the per-partition lag gauges set last round."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        self.taken: dict[Any, tuple[int, float]] = {}
        """Partition -> (offset, produce time in s) of the last message taken in."""
        self.in_flight: dict[bytes, int] = {}
        """Run key -> started_at (ms) of every run in our partitions that is not final."""
        engine.on_recovered_table(self.rebuild)

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        self.taken[tp] = (offset, float(message.timestamp))

    def on_rebalance_start(self, app: Any) -> dict[str, Any]:
        # Partitions may come back later, processed further by another worker meanwhile.
        self.taken.clear()
        return super().on_rebalance_start(app)

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        if table is self.engine.runs:
            self._track(key, value)

    def on_table_del(self, table: Any, key: Any) -> None:
        if table is self.engine.runs:
            self.in_flight.pop(key, None)

    def _track(self, key: bytes, value: bytes | None) -> None:
        try:
            state = self.engine.state_of(key, value)  # the orchestrator's, not decoded again
        except Exception:  # a metric must never break the orchestrator
            return
        if state is None or state.status in FINAL_STATUSES:
            self.in_flight.pop(key, None)
        else:
            self.in_flight[key] = state.started_at

    def rebuild(self, states: Sequence[tuple[bytes, RunState]]) -> None:
        """Rebuild ``in_flight`` from the table partitions this worker holds now."""
        self.in_flight = {key: state.started_at for key, state in states
                          if state.status not in FINAL_STATUSES}


def _package_version() -> str:
    try:
        return version("stepstream")
    except PackageNotFoundError:
        return "unknown"


def watched_topics(engine: Engine) -> list[str]:
    """The topics the worker consumes (not changelogs: reading those is recovery)."""
    names = {name for agent in engine.app.agents.values()
             for name in getattr(agent.channel, "topics", ())}
    return sorted((names & set(engine.topics)) | {*engine.projector.topics,
                                                  *engine.delays.topics})


async def update_lag(engine: Engine, tracker: RunTracker, now: float) -> None:
    """Set the consumer-lag gauges from the consumer's high watermarks."""
    consumer = engine.app.consumer
    lag = dict.fromkeys(watched_topics(engine), 0)
    metrics, series = engine.metrics, set[tuple[str, str]]()
    age = dict.fromkeys(lag, 0.0)
    for tp in consumer.assignment():
        if tp.topic not in lag:
            continue
        highwater = consumer.highwater(tp)
        if highwater is None:
            continue  # nothing fetched from it yet
        taken = tracker.taken.get(tp)
        if taken is not None:
            next_offset = taken[0] + 1
        else:
            position = await consumer.position(tp)
            if position is None:
                continue
            next_offset = position
        behind = max(0, highwater - next_offset)
        lag[tp.topic] += behind
        series.add((tp.topic, str(tp.partition)))
        metrics.consumer_partition_lag.labels(tp.topic, str(tp.partition)).set(behind)
        if behind and taken is not None:
            age[tp.topic] = max(age[tp.topic], now - taken[1])
    for own in (engine.projector, engine.delays):  # consumers in groups of their own
        for (topic, partition), behind in own.lag.items():
            lag[topic] += behind
            series.add((topic, str(partition)))
            metrics.consumer_partition_lag.labels(topic, str(partition)).set(behind)
    for gone in tracker.lag_series - series:  # revoked: another worker reports it now
        metrics.consumer_partition_lag.remove(*gone)
    tracker.lag_series = frozenset(series)
    for topic, value in lag.items():
        metrics.consumer_lag.labels(topic).set(value)
        metrics.consumer_lag_seconds.labels(topic).set(age[topic])


async def update_sizes(engine: Engine) -> None:
    """Set the table-size and dead-letter gauges."""
    metrics = engine.metrics
    metrics.table_keys.labels("runs").set(len(engine.runs))
    metrics.table_keys.labels("waiters").set(len(engine.waiters))
    metrics.dlq_size.set(await engine.store.dlq_size())


async def tick(engine: Engine, tracker: RunTracker) -> None:
    """One monitor round: heartbeat, lag, runs in flight."""
    now = time.time()
    metrics, app = engine.metrics, engine.app
    metrics.heartbeat.set(now)
    if app.rebalancing:
        return
    await update_lag(engine, tracker, now)
    await update_sizes(engine)
    started = list(tracker.in_flight.values())
    metrics.runs_in_flight.set(len(started))
    metrics.oldest_run_age.set(max(0.0, now - min(started) / 1000) if started else 0.0)


def install_monitor(engine: Engine) -> RunTracker:
    """Add the sensor and the timer to ``engine``'s app; call before the app starts.

    The timer ticks every ``Settings.monitor_interval_s`` seconds.
    """
    metrics, settings = engine.metrics, engine.settings
    metrics.worker_info.labels(settings.namespace, engine.ss.app_id, _package_version()).set(1)
    metrics.heartbeat.set(time.time())
    for topic in watched_topics(engine):
        metrics.consumer_lag.labels(topic).set(0)
        metrics.consumer_lag_seconds.labels(topic).set(0)
    metrics.runs_in_flight.set(0)
    metrics.oldest_run_age.set(0)
    for table in ("runs", "waiters"):
        metrics.table_keys.labels(table).set(0)
    tracker = RunTracker(engine)
    engine.app.sensors.add(tracker)

    @engine.app.timer(settings.monitor_interval_s)  # type: ignore[untyped-decorator]
    async def monitor() -> None:
        try:
            await tick(engine, tracker)
        except Exception:  # a metric must never take the worker down
            log.exception("monitor tick failed")

    return tracker
