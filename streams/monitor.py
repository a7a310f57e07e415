"""A worker's view of its own health, for Prometheus: heartbeat, consumer lag, runs in flight.

Every ``Settings.monitor_interval_s`` seconds:

- ``stepstream_worker_heartbeat_timestamp_seconds``: set by the tick, so it stops
  moving when the event loop is stuck (the alert "no heartbeat").
- ``stepstream_consumer_lag_messages{topic}``: the partition's end (as last fetched)
  minus the consumer's position, summed over this worker's partitions (sum over
  workers: the group's lag).
- ``stepstream_consumer_lag_seconds{topic}``: for partitions that are behind, the
  age of the last record taken in (max over partitions); 0 for the history and the
  delay tiers, which report messages only (the delay forwarder takes records in at
  once and holds them until due).
- ``stepstream_consumer_partition_lag_messages{topic,partition}``: the same, per
  partition this worker owns (a partition's series goes when it is revoked).
- ``stepstream_source_lag_messages{group,topic}``: the same for each source group
  (``streams.sources``: a function's topic, or the one its waits read), whose topics
  are other teams'; one series per group, so as many as functions and waited topics.
- ``stepstream_newer_schema_waiting{topic}``: partitions stopped at a record of a
  newer stepstream (``streams.kafka.newer``); above 0 past a rollout, see the alert.
- ``stepstream_table_keys{table}``: keys of the runs and waiters stores in this worker's
  partitions; ``stepstream_dlq_size``: dead letters waiting in the read model.
- ``stepstream_runs_active`` / ``stepstream_run_intake_paused``: runs waiting for a step
  to run, and whether run starts wait for them (``streams.intake``).
- ``stepstream_runs_in_flight`` / ``stepstream_oldest_run_age_seconds``: runs in
  this worker's store partitions that are not final, from the runs table's index
  (``streams.run_index``: counted as transactions commit, the oldest a seek).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from streams.kafka.clients import Lag
from streams.metrics import Metrics
from streams.processors.matcher import WAITERS
from streams.processors.orchestrator import RUNS
from streams.run_index import oldest_start

if TYPE_CHECKING:
    from streams.engine import Engine
    from streams.kafka.runtime import Runtime

log = logging.getLogger("stepstream.monitor")

Taken = Mapping[tuple[str, int], tuple[int, float]]
"""(topic, partition) -> (offset, produce time in s) of the last record taken in."""


def _package_version() -> str:
    try:
        return version("stepstream")
    except PackageNotFoundError:
        return "unknown"


def update_source_lag(metrics: Metrics, sources: Iterable[Runtime]) -> None:
    """Set ``stepstream_source_lag_messages`` of each source group's runtime."""
    for runtime in sources:
        for topic in runtime.processors:
            metrics.source_lag.labels(runtime.group_id, topic).set(
                sum(behind for (t, _), behind in runtime.lag.items() if t == topic))


def update_lag(metrics: Metrics, topics: Sequence[str], lag: Lag, taken: Taken, now: float,
               previous: frozenset[tuple[str, str]]) -> frozenset[tuple[str, str]]:
    """Set the consumer-lag gauges of ``topics``; returns the per-partition series set
    (those of ``previous`` that are gone are removed)."""
    total = dict.fromkeys(topics, 0)
    age = dict.fromkeys(topics, 0.0)
    series: set[tuple[str, str]] = set()
    for (topic, partition), behind in lag.items():
        if topic not in total:
            continue
        total[topic] += behind
        series.add((topic, str(partition)))
        metrics.consumer_partition_lag.labels(topic, str(partition)).set(behind)
        last = taken.get((topic, partition))
        if behind and last is not None:
            age[topic] = max(age[topic], now - last[1])
    for gone in previous - series:  # revoked: another worker reports it now
        metrics.consumer_partition_lag.remove(*gone)
    for topic in topics:
        metrics.consumer_lag.labels(topic).set(total[topic])
        metrics.consumer_lag_seconds.labels(topic).set(age[topic])
    return frozenset(series)


class Monitor:
    """Keeps ``engine``'s gauges up to date."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.topics = sorted({*engine.runtime.processors, *engine.projector.topics,
                              *engine.delays.topics})
        self._series: frozenset[tuple[str, str]] = frozenset()
        metrics, settings = engine.metrics, engine.settings
        metrics.worker_info.labels(settings.namespace, engine.ss.app_id,
                                   _package_version()).set(1)
        metrics.heartbeat.set(time.time())
        for topic in self.topics:
            metrics.consumer_lag.labels(topic).set(0)
            metrics.consumer_lag_seconds.labels(topic).set(0)
            metrics.newer_schema_waiting.labels(topic).set(0)
        update_source_lag(metrics, engine.sources)  # 0 until their partitions come
        metrics.runs_in_flight.set(0)
        metrics.oldest_run_age.set(0)
        for table in (RUNS, WAITERS):
            metrics.table_keys.labels(table).set(0)

    async def run(self) -> None:
        """Tick every ``monitor_interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.engine.settings.monitor_interval_s)
            try:
                await self.tick(time.time())
            except Exception:  # a metric must never take the worker down
                log.exception("monitor tick failed")

    async def tick(self, now: float) -> None:
        """One round: heartbeat, lag, sizes, runs in flight."""
        engine = self.engine
        metrics = engine.metrics
        metrics.heartbeat.set(now)
        lag = {**engine.runtime.lag, **engine.delay_runtime.lag, **engine.projector.lag}
        self._series = update_lag(metrics, self.topics, lag, engine.runtime.taken, now,
                                  self._series)
        update_source_lag(metrics, engine.sources)
        waiting = [tp for newer in (engine.runtime.newer, engine.delay_runtime.newer,
                                    engine.projector.newer) for tp in newer.waiting]
        for topic in self.topics:
            metrics.newer_schema_waiting.labels(topic).set(
                sum(tp[0] == topic for tp in waiting))
        tasks = list(engine.runtime.tasks.values())
        for table in (RUNS, WAITERS):
            metrics.table_keys.labels(table).set(sum(len(t.stores[table]) for t in tasks))
        metrics.dlq_size.set(await engine.store.dlq_size())
        metrics.runs_active.set(len(engine.intake))
        metrics.run_intake_paused.set(int(engine.intake.paused))
        metrics.runs_in_flight.set(len(engine.in_flight))
        started = [ms for t in tasks if (ms := oldest_start(t.stores[RUNS])) is not None]
        metrics.oldest_run_age.set(max(0.0, now - min(started) / 1000) if started else 0.0)
