"""The engine: everything one worker process runs for a ``Stepstream`` application
(DESIGN §4).

Runtimes (``streams.kafka.runtime``), each a consumer-group member whose tasks
commit in Kafka transactions:

- the engine's: trigger (events), orchestrator (runs, with the runs store and the
  functions and singletons tables of ``streams.pauses`` and ``streams.singletons``),
  executor (steps) and waiter matcher (waiters and events by name, with the waiters
  store), all co-partitioned, so the worker that owns a run's state also executes its steps;
- the delay tiers': the delay forwarder;
- one per source group (``streams.sources``): records of topics stepstream does not
  own, as run starts or as events for the waiters;
- with ``lifecycle_format=confluent``, the lifecycle topic's: history into the public
  lifecycle topic (``streams.processors.lifecycle``).

Beside them, the history projector (history into the Redis read model, at-least-once)
and, when functions have schedules, their ticks (``streams.schedules``: a punctuation
of the engine's tasks).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from schemas.codec import default_codec
from schemas.messages import (
    Event,
    FunctionControl,
    RunState,
    ScheduleState,
    SingletonHolder,
    TimerFired,
    Waiter,
    WaiterSet,
)
from stepstream.client import Stepstream
from stepstream.errors import ConfigError
from stepstream.function import FunctionDef
from stepstream.step import ChainBudget, now_ms
from streams import redis_client
from streams.delays import DelayTiers
from streams.expiry import SWEEP_EVERY_S, FinishedRuns
from streams.flow.gate import FlowGate
from streams.intake import RunIntake
from streams.kafka.clients import plain_producer
from streams.kafka.runtime import Runtime, StoreSpec
from streams.kafka.sender import Sender
from streams.kafka.store import WholeValues
from streams.kafka.task import Record, Task
from streams.leases import LeaseClock
from streams.machine import RunPolicy, holds_lease, takeover_timers
from streams.metrics import Metrics
from streams.partitioner import partition_of
from streams.pauses import FUNCTIONS, PauseBoard
from streams.policy import policy_of
from streams.processors.delays import FETCH_WAIT_MS as DELAY_FETCH_WAIT_MS
from streams.processors.delays import DelayForwarder
from streams.processors.executor import Executor
from streams.processors.lifecycle import ConfluentLifecycle, Lifecycle
from streams.processors.matcher import WAITERS, Matcher
from streams.processors.orchestrator import RUNS, Orchestrator
from streams.processors.outputs import Outputs
from streams.processors.source import Source
from streams.processors.trigger import Trigger
from streams.progress import ProgressBoard
from streams.projector import HistoryProjector
from streams.readmodel import RunStore
from streams.registry import RegistryDecoder
from streams.retention import expire_finished_runs
from streams.run_index import INDEXED, IndexBuild, InFlight, active_runs, is_active
from streams.run_records import RunRecords
from streams.schedules import TICK_EVERY_S, Schedules
from streams.singletons import SINGLETONS
from streams.source_records import SourceRecords
from streams.sources import first_offsets, source_groups
from streams.starts import Starter
from topics.catalog import catalog

log = logging.getLogger("stepstream.engine")


class Engine:
    """Everything one worker process runs for ``ss``."""

    def __init__(self, ss: Stepstream, *, partitions: Mapping[str, int] | None = None,
                 metrics: Metrics | None = None) -> None:
        """``partitions``: each topic's partition count, as the broker has it (the
        namespace's topics have ``settings.partitions`` unless told otherwise)."""
        if not ss.functions:
            raise ConfigError(f"app {ss.app_id!r} registers no function")
        self.ss = ss
        self.settings = settings = ss.settings
        self.codec = default_codec()
        self.metrics = metrics or Metrics()
        self.specs = catalog(settings)
        self.partitions = {spec.name: spec.partitions for spec in self.specs}
        self.partitions.update(partitions or {})
        self.tiers = DelayTiers(settings)
        self.outputs = Outputs(settings, self.codec, self.metrics, self.partitions, self.tiers)
        self.redis = redis_client.connect(settings.redis_url)
        self.store = RunStore(self.redis, settings.namespace)
        self.pauses = PauseBoard(self.redis, settings.namespace)
        self._copies: set[asyncio.Future[None]] = set()
        self.starter = Starter(ss, self.redis, self.metrics)
        self.flow = FlowGate(self.redis, settings, self.metrics)
        self.progress = ProgressBoard(self.store)
        self.leases = LeaseClock(self._holds_lease, self._fire_lease)
        self.sender = Sender(plain_producer(settings))
        policies: dict[str, RunPolicy] = {
            f.id: policy_of(f, settings.chain_lease_ms, settings.run_state_max_bytes)
            for f in ss.functions.values()}
        topic = settings.topic

        self.executor = Executor(
            self.outputs, ss, self.flow,
            ChainBudget(max_steps=settings.chain_max_steps, max_ms=settings.chain_max_ms),
            send_events=self.send_events, report_progress=self.progress.report,
            backpressure=lambda paused: self.runtime.throttle(topic("steps"), paused))
        matcher = Matcher(self.outputs, ss.functions)
        trigger = Trigger(self.outputs, self.starter)
        self.runtime = Runtime(
            settings, group_id=settings.namespace,
            transactional_prefix=f"{settings.namespace}.engine",
            processors={topic("events"): trigger,
                        topic("runs"): Orchestrator(self.outputs, policies, self.leases,
                                                    ss.app_id),
                        topic("steps"): self.executor,
                        topic("waiters"): matcher,
                        topic("events.by-name"): matcher},
            stores=[StoreSpec(RUNS, f"{settings.namespace}-runs-changelog",
                              RunRecords(self.codec)),
                    self._whole_values(WAITERS, (Waiter, WaiterSet)),
                    self._whole_values(FUNCTIONS, (FunctionControl, ScheduleState)),
                    self._whole_values(SINGLETONS, SingletonHolder)],
            fetch_wait_ms=settings.fetch_max_wait_ms, quarantine=self._quarantine_in,
            refused=self.outputs.quarantined,
            local_topics=[topic("runs"), topic("steps")], settle=self.executor.settle)
        self.delays = DelayForwarder(
            self.outputs, targets=set(self.partitions),
            hold_back=lambda *partition_until: self.delay_runtime.hold_back(*partition_until))
        self.delay_runtime = Runtime(
            settings, group_id=f"{settings.namespace}-delays",
            transactional_prefix=f"{settings.namespace}.delays",
            processors=dict.fromkeys(self.delays.topics, self.delays),
            fetch_wait_ms=DELAY_FETCH_WAIT_MS, quarantine=self._quarantine_in,
            refused=self.outputs.quarantined)
        self.delay_runtime.ended.append(self.delays.task_ended)
        self.registry = RegistryDecoder(settings)
        records = SourceRecords(self.registry, limit=settings.max_payload_bytes)
        groups = source_groups(settings.namespace, ss.functions)
        self.sources = [Runtime(
            settings, group_id=group.group, transactional_prefix=group.group,
            processors={group.topic: Source(trigger, records, group.function)},
            fetch_wait_ms=settings.fetch_max_wait_ms, quarantine=self._quarantine_in,
            refused=self.outputs.quarantined,
            first_offsets=functools.partial(first_offsets, group))
            for group in groups]
        # What starts runs: the events topic, and the source topics of TopicTriggers.
        self._starts = [(self.runtime, topic("events"))] + [
            (runtime, group.topic) for runtime, group in zip(self.sources, groups, strict=True)
            if group.function is not None]
        self.lifecycle: Runtime | None = None
        if settings.lifecycle_format == "confluent":
            self.lifecycle = Runtime(
                settings, group_id=f"{settings.namespace}-lifecycle",
                transactional_prefix=f"{settings.namespace}.lifecycle",
                processors={topic("history"): Lifecycle(
                    self.outputs, self.codec,
                    ConfluentLifecycle(settings, topic("lifecycle")))},
                fetch_wait_ms=settings.fetch_max_wait_ms, quarantine=self._quarantine_in,
                refused=self.outputs.quarantined)
        self.projector = HistoryProjector(settings, self.store, self.codec, self.quarantine)
        self.finished = FinishedRuns(settings.finished_run_retention_s)
        self.intake = RunIntake(settings.max_active_runs, self._throttle_starts)
        self.in_flight = InFlight()
        self._index_builds: dict[int, IndexBuild] = {}
        self.runtime.started.append(self._runs_restored)
        self.runtime.ended.append(self.executor.task_ended)
        self.runtime.started.append(matcher.task_started)
        self.runtime.ended.append(matcher.task_ended)
        self.runtime.started.append(self._show_pauses)
        self.runtime.ended.append(self._runs_revoked)
        self.runtime.every(SWEEP_EVERY_S, self._sweep_runs)
        self.schedules = Schedules(self.outputs, ss.functions, self.partitions[topic("runs")])
        if self.schedules:
            self.runtime.every(TICK_EVERY_S, self.schedules.tick)
        self._stopped = asyncio.Event()
        self._sending: set[asyncio.Future[None]] = set()

    # --- sending outside the tasks ------------------------------------------------------

    async def send(self, suffix: str, key: str, message: Any) -> None:
        """Produce ``message`` to one of the namespace's topics, outside any task (the
        HTTP API); returns once the broker has it."""
        await self.sender.send(self.outputs.to(suffix, key, message))

    async def send_events(self, events: list[Event]) -> None:
        """Produce events to the events topic and wait until the broker has them."""
        await asyncio.gather(*(self.send("events", event.id, event) for event in events))

    async def control(self, control: FunctionControl) -> None:
        """Pause or resume a function: ``control`` on every partition of the runs topic
        (``streams.pauses``); returns once the broker has every copy, and the read model
        says so."""
        topic = self.settings.topic("runs")
        value = self.codec.encode(control)
        await asyncio.gather(*(self.sender.send(Record(topic, partition, None, value))
                               for partition in range(self.partitions[topic])))
        await self.pauses.record([control])

    def _show_pauses(self, task: Task) -> None:
        """Copy a restored functions table to the read model (its rebuild path), in the
        background: Redis does not hold up a partition's start."""
        controls = [control for _, control in task.stores[FUNCTIONS].values(
            lambda exc: log.warning("undecodable function state in the store: %s", exc))
            if isinstance(control, FunctionControl)]  # not the schedules' states
        if controls:
            copy = asyncio.ensure_future(self._copy_pauses(controls))
            self._copies.add(copy)
            copy.add_done_callback(self._copies.discard)

    async def _copy_pauses(self, controls: list[FunctionControl]) -> None:
        try:
            await self.pauses.record(controls)
        except redis_client.STORE_ERRORS as exc:
            log.warning("could not copy paused functions to the read model: %s", exc)

    async def quarantine(self, message: Any, reason: str) -> None:
        """Set aside a message read outside the tasks (the projector's)."""
        log.warning("quarantined %s[%d]@%d: %s", message.topic(), message.partition(),
                    message.offset(), reason)
        await self.sender.send(self.outputs.quarantined(message, reason))

    def _quarantine_in(self, task: Task, message: Any, reason: str) -> None:
        task.send(self.outputs.quarantined(message, reason))

    # --- run states -----------------------------------------------------------------------

    def current_state(self, run_id: str) -> RunState | None:
        """The run's state, if this worker owns its partition."""
        key = run_id.encode()
        task = self.runtime.task_for(partition_of(key, self.settings.partitions))
        return None if task is None else task.stores[RUNS].get(key)

    def _holds_lease(self, timer: TimerFired) -> bool:
        state = self.current_state(timer.run_id)
        return state is not None and holds_lease(state, timer)

    async def _fire_lease(self, timer: TimerFired) -> None:
        record = self.outputs.to("runs", timer.run_id, timer)
        task = self.runtime.task_for(record.partition)
        if task is not None:  # else its next owner arms it from its store
            await task.send_later([record])

    def _runs_restored(self, task: Task) -> None:
        """The task's runs store is restored: what follows runs learns its runs from the
        table's index (``streams.run_index``), and each committed write from then on."""
        store, partition = task.stores[RUNS], task.partition
        self.in_flight.restored(partition, store)
        store.record_observers.append(functools.partial(self.in_flight.committed, partition))
        store.observers.append(functools.partial(self.intake.written, partition))
        if store.marked(INDEXED):
            active = active_runs(store)
        else:  # written before the index: read once, indexed by the sweep (_sweep_runs)
            self._index_builds[partition] = IndexBuild(store)
            active = [(key, state) for key, state in store.values(
                lambda exc: log.warning("undecodable run state in the store: %s", exc))
                if is_active(state)]
        self.intake.rebuild(partition, active)
        if self.settings.chain_takeover:
            self._take_over_chains(task, active)
        else:
            for _, state in active:
                self.leases.arm_held(state)

    def _runs_revoked(self, task: Task) -> None:
        self.in_flight.forget(task.partition)
        self.intake.forget(task.partition)
        self._index_builds.pop(task.partition, None)

    def _sweep_runs(self, task: Task) -> None:
        """Index a partition written before the index, then delete finished runs whose
        window is over (``streams.expiry``)."""
        build = self._index_builds.get(task.partition)
        if build is None:
            self.finished.sweep(task)
        elif build.step():
            del self._index_builds[task.partition]

    def _whole_values(self, name: str, kinds: type | tuple[type, ...]) -> StoreSpec:
        """A table whose values are records of ``kinds``, each in one changelog record."""
        codec = self.codec
        return StoreSpec(name, f"{self.settings.namespace}-{name}-changelog",
                         WholeValues(codec.encode, lambda raw: codec.decode_as(raw, kinds)))

    def _throttle_starts(self, paused: bool) -> None:
        """Stop (or go on) reading what starts runs (``streams.intake``)."""
        for runtime, source in self._starts:
            runtime.throttle(source, paused)

    def _take_over_chains(self, task: Task, states: Sequence[tuple[bytes, RunState]]) -> None:
        """Re-dispatch the chains that the partition's previous owner ran
        (``machine.takeover_timers``; ``Settings.chain_takeover``), as soon as the runs
        records before them are applied. So they go through the runs topic, not to the
        task's processors at once: the partition may hold records of the previous owner's
        last transaction that the restored state does not have yet (its links, read again
        from the committed offset), and those must come first."""
        now = now_ms()
        timers = [timer for _, state in states for timer in takeover_timers(state, now)]
        if not timers:
            return
        log.info("task %d: %d chains of the partition's previous owner to dispatch again",
                 task.partition, len(timers))
        for timer in timers:
            # Not awaited: a worker that stops first leaves them to the next owner.
            sending = asyncio.ensure_future(self.send("runs", timer.run_id, timer))
            self._sending.add(sending)
            sending.add_done_callback(self._sent)

    def _sent(self, sending: asyncio.Future[None]) -> None:
        self._sending.discard(sending)
        if not sending.cancelled() and sending.exception() is not None:
            log.warning("a chain's takeover was not sent (the next owner sends it): %s",
                        sending.exception())

    # --- running ------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """The engine's runtime has its partitions and every task is started; the others
        have joined their groups."""
        return self.runtime.ready and all(
            runtime.joined for runtime in self._runtimes()[1:])

    async def run(self) -> None:
        """Run until ``stop``: the runtimes, the projector."""
        runtimes = self._runtimes()
        jobs = [*(asyncio.ensure_future(runtime.run()) for runtime in runtimes),
                asyncio.ensure_future(self.projector.run()),
                asyncio.ensure_future(expire_finished_runs(
                    self.store, self.settings.readmodel_retention_s))]
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            done, _ = await asyncio.wait([*jobs, stopped], return_when=asyncio.FIRST_COMPLETED)
            for job in done:
                if job is not stopped:
                    job.result()  # a runtime ended on its own: raise its error
                    raise RuntimeError("a part of the engine stopped")
        finally:
            stopped.cancel()
            for runtime in runtimes:
                runtime.stop()
            await self.executor.stop()
            for job in jobs[len(runtimes):]:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            await self.sender.close()
            await self.progress.close()
            with contextlib.suppress(Exception):
                await self.redis.aclose()

    def stop(self) -> None:
        self._stopped.set()

    def _runtimes(self) -> list[Runtime]:
        """Every runtime of the worker, the engine's first."""
        lifecycle = [self.lifecycle] if self.lifecycle is not None else []
        return [self.runtime, self.delay_runtime, *self.sources, *lifecycle]


__all__ = ["Engine", "FunctionDef"]
