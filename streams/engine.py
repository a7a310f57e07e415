"""The engine: a Faust app running the trigger, orchestrator, executor, delay,
waiter and history agents for one ``Stepstream`` application (DESIGN §4).

Agents only decode, call pure code (``streams.machine.advance``,
``stepstream.execution.execute``, ``streams.waiters.match``) and produce what it
returns. Every agent reads raw bytes and decodes them itself, so an undecodable
message is quarantined instead of crashing the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import faust

from schemas.codec import DecodeError, default_codec
from schemas.messages import (
    RUN_MESSAGES,
    ErrorInfo,
    Event,
    FlowTimer,
    FunctionFinished,
    Quarantined,
    RunStarted,
    RunState,
    StepCompleted,
    StepDeferred,
    StepFailed,
    StepRequest,
    TimerFired,
    WaiterChanged,
    WaiterSet,
)
from stepstream.client import Stepstream
from stepstream.errors import ConfigError
from stepstream.events import decode_event
from stepstream.execution import execute
from stepstream.function import FunctionDef
from stepstream.step import ChainBudget, now_ms
from streams import redis_client, waiters
from streams.batcher import Batcher
from streams.chain_heartbeat import ChainHeartbeat
from streams.decoded import DecodedStates
from streams.delay_forwarder import DelayForwarder
from streams.delays import DelayTiers
from streams.flow.gate import FlowGate
from streams.flow.trigger import Decision
from streams.leases import LeaseClock
from streams.machine import (
    FINAL_STATUSES,
    Command,
    Dispatch,
    Emit,
    NotifyParent,
    Record,
    RunPolicy,
    Schedule,
    SendToDlq,
    StartChild,
    Watch,
    advance,
    holds_lease,
    is_lease,
)
from streams.metrics import Metrics, step_label
from streams.partitioner import key_partitioner
from streams.projector import HistoryProjector
from streams.readmodel import RunStore
from streams.sender import Sender
from streams.starts import Starter, policy_of
from streams.transport import FaustApp, owns
from topics.catalog import catalog

log = logging.getLogger("stepstream.engine")

# Agents decode bytes themselves: a bad message is quarantined, not a crashed agent.
_RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
                        "value_serializer": "raw"}

_SCAN_BATCH = 500  # table entries decoded between yields to the event loop

TableObserver = Callable[[Sequence[tuple[bytes, RunState]]], None]
"""Told the run states of the runs table partitions assigned, after each rebalance."""


class Engine:
    """Everything one worker process runs for ``ss``."""

    def __init__(self, ss: Stepstream, *, metrics: Metrics | None = None) -> None:
        if not ss.functions:
            raise ConfigError(f"app {ss.app_id!r} registers no function")
        self.ss = ss
        self.settings = settings = ss.settings
        self.codec = default_codec()
        self.metrics = metrics or Metrics()
        self.policies: dict[str, RunPolicy] = {
            f.id: policy_of(f, settings.chain_lease_ms) for f in ss.functions.values()}
        self.chain = ChainBudget(max_steps=settings.chain_max_steps,
                                 max_ms=settings.chain_max_ms)
        # Chains that outlive the request that started them (see _execute); bounded
        # with the executors, and referenced so the loop does not drop them.
        self._slots = asyncio.Semaphore(settings.executor_concurrency)
        self._chains: set[asyncio.Task[None]] = set()
        self.specs = catalog(settings)
        self.app = self._faust_app()
        prefix = f"{settings.namespace}."
        self.topics = {spec.name: self.app.topic(spec.name, partitions=spec.partitions,
                                                 internal=False, **_RAW)
                       for spec in self.specs if spec.name.startswith(prefix)}
        self.sender = Sender(self.app, self.topics)
        # Bytes types select Faust's raw serializer; values are our Avro records.
        # use_partitioner: a table write may happen after its message's turn (the
        # orchestrator pipelines), so its changelog partition comes from the key, hashed
        # as the producer hashes the runs topic's keys, not from Faust's current event.
        self.runs = self.app.Table("runs", partitions=settings.partitions, default=None,
                                   key_type=bytes, value_type=bytes, use_partitioner=True)
        self.waiters = self.app.Table("waiters", partitions=settings.partitions, default=None,
                                      key_type=bytes, value_type=bytes, use_partitioner=True)
        # Run states computed but not yet in the table (their commands are in flight).
        self._latest: dict[bytes, RunState] = {}
        self._decoded = DecodedStates(self.codec.decode)  # and those in the table
        self.tiers = DelayTiers(settings)
        self.leases = LeaseClock(self._holds_lease, self._fire_lease)
        self._revocations = 0  # every rebalance starts with one
        self._table_scanned: tuple[int, frozenset[Any]] | None = None  # (revocations, assignment)
        self._table_observers: list[TableObserver] = [self._arm_leases]
        self.redis = redis_client.connect(settings.redis_url)
        self.store = RunStore(self.redis, settings.namespace)
        self.projector = HistoryProjector(settings, self.store, self.codec, self._quarantine_raw)
        self.delays = DelayForwarder(settings, self.tiers, self.sender, self.codec,
                                     targets=self.topics, quarantine=self._quarantine_raw,
                                     stopping=lambda: bool(self.app.should_stop))
        self.starter = Starter(ss, self.redis, self.metrics)
        self.flow = FlowGate(self.redis, settings, self.metrics)
        self._register_agents()

    def _faust_app(self) -> FaustApp:
        from stepstream.kafka_security import faust_options, kafka_client_config

        s = self.settings
        app = FaustApp(
            s.namespace,
            broker=[f"kafka://{b.strip()}" for b in s.brokers.split(",")],
            store=s.store,
            datadir=s.data_dir,
            web_enabled=False,
            autodiscover=False,
            topic_partitions=s.partitions,
            topic_replication_factor=s.replication,
            topic_allow_declare=False,  # topics.provision creates them with the right counts
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=s.session_timeout_s,
            broker_heartbeat_interval=1.0,
            broker_rebalance_timeout=s.session_timeout_s * 2,
            broker_request_timeout=max(30.0, s.session_timeout_s * 3),
            broker_commit_interval=0.5,
            stream_publish_on_commit=False,
            stream_wait_empty=False,
            producer_acks=-1,
            producer_linger=0.0,
            producer_partitioner=key_partitioner,
            table_standby_replicas=s.standby_replicas,
            **faust_options(s),  # SASL / TLS, the same as the confluent-kafka clients'
        )
        app.fetch_max_wait_ms = s.fetch_max_wait_ms
        app.client_config = kafka_client_config(s)
        return app

    def topic(self, suffix: str) -> faust.TopicT:
        """One of the namespace's topics."""
        return self.topics[self.settings.topic(suffix)]

    # --- producing ----------------------------------------------------------------

    async def _send(self, suffix: str, key: str, record: Any) -> Awaitable[Any]:
        """Queue ``record`` for one of the namespace's topics; returns the future of its
        acknowledgement, which resolves once the broker has it (``streams.sender``)."""
        return await self.sender.send(self.settings.topic(suffix), key.encode(),
                                      self.codec.encode(record))

    async def send_events(self, events: list[Event]) -> None:
        """Produce events to the events topic and wait until the broker has them."""
        acks = [await self._send("events", event.id, event) for event in events]
        await asyncio.gather(*acks)

    async def _quarantine(self, event: faust.EventT, reason: str) -> None:
        message = event.message
        await self._set_aside(Quarantined(
            topic=message.topic, partition=message.partition, offset=message.offset,
            reason=reason, ts=now_ms(), key=message.key, value=message.value))

    async def _quarantine_raw(self, message: Any, reason: str) -> None:
        """``_quarantine`` for a confluent-kafka message (the projector's, the delays')."""
        await self._set_aside(Quarantined(
            topic=message.topic(), partition=message.partition(), offset=message.offset(),
            reason=reason, ts=now_ms(), key=message.key(), value=message.value()))

    async def _set_aside(self, record: Quarantined) -> None:
        log.warning("quarantined %s[%d]@%d: %s", record.topic, record.partition,
                    record.offset, record.reason)
        self.metrics.quarantined.labels(record.topic).inc()
        await (await self._send("quarantine", f"{record.topic}:{record.partition}", record))

    async def _perform(self, state: RunState, command: Command) -> Awaitable[Any]:
        run_id = state.run_id
        match command:
            case Dispatch(request):
                return await self._send("steps", run_id, request)
            case Record(record):
                return await self._send("history", run_id, record)
            case SendToDlq(letter):
                self.metrics.dead_letters.labels(state.function_id).inc()
                return await self._send("steps.dlq", run_id, letter)
            case Schedule(_, timer) if is_lease(timer):
                self.leases.arm(timer)  # timed here, not through a delay tier (leases.py)
                return _done()
            case Schedule(delay_ms, timer):
                return await self._delay(self.settings.topic("runs"), run_id, timer, delay_ms)
            case Watch(change):
                return await self._send("waiters", change.waiter.event_name, change)
            case StartChild(start):
                return await self._send("runs", start.run_id, start)
            case NotifyParent(finished):
                return await self._send("runs", finished.run_id, finished)
            case Emit(event):
                return await self._send("events", event.id, event)
        raise TypeError(f"unknown command {command!r}")

    async def _delay(self, topic: str, key: str, record: Any, delay_ms: int) -> Awaitable[Any]:
        tier, delayed = self.tiers.wrap(topic, key.encode(), self.codec.encode(record),
                                        due_ms=now_ms() + delay_ms)
        self.metrics.retries_scheduled.labels(tier).inc()
        return await self._send(f"delay.{tier}", key, delayed)

    # --- agents -------------------------------------------------------------------

    def _register_agents(self) -> None:
        app = self.app
        app.agent(self.topic("events"), name="stepstream.trigger")(self._trigger)
        app.agent(self.topic("runs"), name="stepstream.orchestrator")(self._orchestrate)
        app.agent(self.topic("steps"), name="stepstream.executor",
                  concurrency=self.settings.executor_concurrency)(self._execute)
        # Waiters and re-keyed events share one agent: both are keyed by event name, so
        # a name's waiters and its events land on the same partition and table shard.
        matcher_topic = app.topic(self.settings.topic("waiters"),
                                  self.settings.topic("events.by-name"), **_RAW)
        app.agent(matcher_topic, name="stepstream.waiters")(self._match)
        app.task(self.projector.run)
        app.task(self.delays.run)  # the delay tiers: a consumer of their own
        app.timer(1.0)(self._scan_recovered_table)
        app.on_partitions_revoked.connect(self._count_revocation)
        if any(f.cron for f in self.ss.functions.values()):
            app.task(self._cron)

    async def _trigger(self, stream: faust.StreamT) -> None:
        # Pipelined: an event is acked once the broker has what it decided (outbox), but
        # the next event is decided meanwhile. Waiting for each event's acks in turn held
        # the trigger to one event per produce round trip, which grows under load.
        manual = stream.noack()
        outbox: Batcher[list[Awaitable[Any]]] = Batcher(_all_acked, manual.ack)
        try:
            async for event in manual.events():
                await outbox.add(event, await self._triggered(event))
        finally:
            outbox.close()

    async def _triggered(self, event: faust.EventT) -> list[Awaitable[Any]] | None:
        """Decide what ``event`` starts and send it; returns the acks to wait for."""
        message = event.message
        if self.codec.record_type(message.value) is FlowTimer:  # back from the delay tiers
            timer = self.codec.decode_as(message.value, FlowTimer)
            return await self._decided(await self.starter.settle(timer))
        try:
            decoded = decode_event(
                message.value, self.codec,
                fallback_id=f"{message.topic}:{message.partition}:{message.offset}",
                fallback_ts=int(message.timestamp * 1000),
                limit=self.settings.max_payload_bytes)
        except DecodeError as exc:
            self.metrics.events_received.labels("quarantined").inc()
            await self._quarantine(event, str(exc))
            return None
        decision = await self.starter.decide(decoded)
        matched = decision.starts or decision.timers or decision.records
        self.metrics.events_received.labels("matched" if matched else "unmatched").inc()
        acks = await self._decided(decision)
        # Every event also goes to the waiters agent, keyed by name.
        acks.append(await self._send("events.by-name", decoded.name, decoded))
        return acks

    async def _decided(self, decision: Decision) -> list[Awaitable[Any]]:
        """Produce what the trigger decided; returns the acknowledgements to wait for."""
        acks = [await self._send("runs", start.run_id, start) for start in decision.starts]
        acks += [await self._send("history", r.run_id, r) for r in decision.records]
        for timer in decision.timers:  # debounce and batch timers come back as events
            acks.append(await self._delay(self.settings.topic("events"),
                                          f"{timer.function_id}:{timer.key}", timer,
                                          max(0, timer.due_ms - now_ms())))
        return acks

    async def _orchestrate(self, stream: faust.StreamT) -> None:
        # Pipelined: a transition's commands are sent at once, but its new state is written
        # (and its message acked) only when the broker has acknowledged them — by a writer
        # task, in order. Meanwhile the next messages see the new state through _latest.
        manual = stream.noack()
        writes: asyncio.Queue[_Write] = asyncio.Queue()
        writer = asyncio.ensure_future(self._write_states(manual, writes))
        try:
            async for event in manual.events():
                if writer.done():  # it died: surface its error instead of saving nothing
                    writer.result()
                await self._transition(manual, writes, event)
        finally:
            writer.cancel()

    async def _transition(self, manual: faust.StreamT, writes: asyncio.Queue[_Write],
                          event: faust.EventT) -> None:
        try:
            message = self.codec.decode(event.message.value)
            if not isinstance(message, RUN_MESSAGES):
                raise DecodeError(f"{type(message).__name__} does not belong on runs")
        except DecodeError as exc:
            await self._quarantine(event, str(exc))
            await manual.ack(event)
            return
        key = message.run_id.encode()
        state = self.current_state(key)
        function_id = state.function_id if state else getattr(message, "function_id", "")
        policy = self.policies.get(function_id)
        if policy is None and state is None and isinstance(message, RunStarted):
            await self._reject_unknown(message)
            await manual.ack(event)
            return
        new_state, commands = advance(state, message, policy or RunPolicy())
        if new_state is state or new_state is None:
            await manual.ack(event)  # a duplicate or stale message: nothing changes
            return
        if not self._owns(event):
            return
        # Outbox first: the commands must be on the broker before the new state is in
        # the changelog. A crash in between replays the message against the old state
        # and sends the same commands again (receivers dedupe by seq); the reverse
        # order could store a state whose commands were lost, and the run would hang.
        acks = [await self._perform(new_state, c) for c in commands]
        self._latest[key] = new_state
        writes.put_nowait(_Write(event, key, state, new_state, acks))

    async def _write_states(self, manual: faust.StreamT, writes: asyncio.Queue[_Write]) -> None:
        while True:
            batch = [await writes.get()]
            while not writes.empty():
                batch.append(writes.get_nowait())
            await asyncio.gather(*(ack for write in batch for ack in write.acks))
            # Only the newest state of each run is written: a burst of transitions (an
            # eager chain's links) costs one encode and one changelog record.
            newest = {write.key: write for write in batch}
            saved: dict[bytes, bool] = {}
            for write in batch:
                owned = self._owns(write.event)
                if owned:
                    self._count_transition(write.old, write.new)
                if newest[write.key] is write:
                    saved[write.key] = owned
                    if owned:
                        raw = self.codec.encode(write.new)
                        self._decoded.written(write.key, raw, write.new)  # before the sensors
                        with _processing(write.event):
                            self.runs[write.key] = raw
                    if self._latest.get(write.key) is write.new:
                        del self._latest[write.key]
            # Faust sends table writes to the changelog in the background, and would
            # commit the messages' offsets before they are on the broker: a kill -9 in
            # between lost the state while its input was committed (the chaos test saw
            # a chain's last step run again). Acked only once the changelog has them.
            await self._changelog_written()
            for write in batch:
                # A message whose state was not saved (its partition was being reassigned,
                # perhaps back to us) stays unacknowledged, so that its partition's owner
                # processes it again. Acked, it was committed and its transition lost:
                # the chaos test found runs stuck at their first state that way.
                if saved[write.key]:
                    await manual.ack(write.event)

    async def _changelog_written(self) -> None:
        """Wait until the broker has every table write made so far."""
        await self.app.producer.flush()

    def current_state(self, key: bytes) -> RunState | None:
        """The run's newest state: computed (its commands in flight) or in the table."""
        state = self._latest.get(key)
        return state if state is not None else self.state_of(key, self.runs.get(key))

    async def _states_in_table(self) -> AsyncIterator[tuple[bytes, RunState]]:
        """The run states in this worker's runs table partitions (undecodable ones
        skipped: the orchestrator quarantines what it cannot read)."""
        for i, (key, raw) in enumerate(list(self.runs.items())):
            if i % _SCAN_BATCH == _SCAN_BATCH - 1:
                await asyncio.sleep(0)  # a big table must not stall the partitions
            try:
                state = self.state_of(key, raw)
            except DecodeError:
                continue
            if state is not None:
                yield key, state

    def _holds_lease(self, timer: TimerFired) -> bool:
        state = self.current_state(timer.run_id.encode())
        return state is not None and holds_lease(state, timer)

    async def _fire_lease(self, timer: TimerFired) -> None:
        await self._send("runs", timer.run_id, timer)

    def on_recovered_table(self, observer: TableObserver) -> None:
        """Call ``observer`` with the run states of the runs table partitions assigned,
        after every rebalance, once they are recovered (recovered runs are not written,
        so nothing else shows them). One scan feeds every observer."""
        self._table_observers.append(observer)

    async def _scan_recovered_table(self) -> None:
        assignment = self._recovered_assignment()
        if assignment is None:
            return
        scan = (self._revocations, assignment)
        if scan == self._table_scanned:
            return
        states = [item async for item in self._states_in_table()]
        for observer in self._table_observers:
            observer(states)
        self._table_scanned = scan  # a rebalance during the scan changes the count: again

    async def _count_revocation(self, *_: Any, **__: Any) -> None:
        # Every rebalance revokes all partitions first: partitions that come back may
        # have been processed by another worker meanwhile (new leases among them), so
        # the same assignment after a revocation is scanned again.
        self._revocations += 1

    def _recovered_assignment(self) -> frozenset[Any] | None:
        """The partitions assigned now, once their tables are recovered (None before)."""
        app = self.app
        if app.rebalancing or not app.tables.recovery.completed.is_set():  # type: ignore[attr-defined]
            return None
        return frozenset(app.consumer.assignment())

    def _arm_leases(self, states: Sequence[tuple[bytes, RunState]]) -> None:
        for _, state in states:
            self.leases.arm_held(state)

    def state_of(self, key: bytes, raw: bytes | None) -> RunState | None:
        """The run state the runs table holds as ``raw`` (decoded once per write)."""
        return self._decoded.read(key, raw)  # type: ignore[no-any-return]

    def _owns(self, event: faust.EventT) -> bool:
        """Whether this worker still owns the partition ``event`` came from.

        A worker that lost a partition in a rebalance (its session expired while it was
        busy) must not write the partition's table any more: the new owner has read the
        changelog already, and a late write would land after the new owner's and win
        the next recovery. The message is left to the new owner, which replays it.
        """
        owned = owns(self.app.consumer, event.message.tp)
        if not owned:
            log.warning("partition %s was revoked mid-message; leaving it to its new owner",
                        event.message.tp)
        return owned

    async def _reject_unknown(self, start: RunStarted) -> None:
        """A run of a function no worker registers (``step.invoke`` of a typo)."""
        error = _unknown_function(start.function_id, self.ss.app_id)
        log.warning("%s", error.message)
        if start.parent_run_id and start.parent_step_id:
            from schemas.messages import ChildFinished

            await (await self._send("runs", start.parent_run_id, ChildFinished(
                run_id=start.parent_run_id, step_id=start.parent_step_id,
                child_run_id=start.run_id, ts=now_ms(), error=error)))

    def _count_transition(self, old: RunState | None, new: RunState) -> None:
        if old is None:
            self.metrics.runs_started.labels(new.function_id).inc()
        if new.status in FINAL_STATUSES and (old is None or old.status not in FINAL_STATUSES):
            self.metrics.runs_finished.labels(new.function_id, new.status).inc()
            seconds = ((new.ended_at or new.started_at) - new.started_at) / 1000
            self.metrics.run_duration.labels(new.function_id, new.status).observe(seconds)

    async def _execute(self, stream: faust.StreamT) -> None:
        manual = stream.noack()
        async for event in manual.events():
            try:
                request = self.codec.decode_as(event.message.value, StepRequest)
            except DecodeError as exc:
                await self._quarantine(event, str(exc))
                await manual.ack(event)
                continue
            await self._slots.acquire()
            detached = asyncio.Event()
            task = asyncio.ensure_future(self._dispatch(request, detached))
            self._chains.add(task)
            task.add_done_callback(self._chain_done)
            # Ack the request when the dispatch is over (its outcome on the broker), or
            # once the first link of an eager chain is: from then on the run's state has
            # the chain's progress and a lease, so a crash re-dispatches from the last
            # step applied instead of replaying the request and re-running the chain.
            waiter = asyncio.ensure_future(detached.wait())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            # Not done unless detached: ``wait`` returned for the task.
            failed = not detached.is_set() and (task.cancelled() or task.exception())
            if not (failed and self.app.should_stop):
                await manual.ack(event)  # a crashed dispatch is logged, not looped
            # Else the worker stopped before the outcome reached the broker: not acked, the
            # partition's next owner runs the request again (the rebalance test lost runs
            # when requests were acked with their outcome still in the producer's buffer).

    def _chain_done(self, task: asyncio.Task[None]) -> None:
        self._chains.discard(task)
        self._slots.release()
        if task.cancelled() or (exc := task.exception()) is None:
            return
        if self.app.should_stop:  # its outcome could not be sent: see _execute
            log.info("a dispatch ended with the worker (%s); its partition's next owner "
                     "runs it again", exc)
        else:
            log.error("executor dispatch crashed", exc_info=exc)

    async def _dispatch(self, request: StepRequest, detached: asyncio.Event) -> None:
        function = self.ss.functions.get(request.function_id)
        if function is None:
            await (await self._send("runs", request.run_id, FunctionFinished(
                run_id=request.run_id, seq=request.seq, ts=now_ms(),
                error=_unknown_function(request.function_id, self.ss.app_id))))
            return

        heartbeat = ChainHeartbeat(functools.partial(self._send, "runs", request.run_id),
                                   request.run_id, request.seq,
                                   self.settings.chain_lease_ms / 3000)

        async def progress(link: StepCompleted) -> None:
            self._count_attempt(request.function_id, link)
            heartbeat.advanced(link.chain + 1)
            ack = await self._send("runs", request.run_id, link)
            if not detached.is_set():
                await ack
                detached.set()

        held = await self.flow.enter(function, request)  # concurrency slots, throttle
        if isinstance(held, StepDeferred):
            await (await self._send("runs", request.run_id, held))
            return
        async with held, heartbeat:
            outcome = await execute(function, request,
                                    max_output_bytes=self.settings.max_payload_bytes,
                                    send_events=self.send_events, chain=held.budget(self.chain),
                                    on_progress=progress)
        self._count_attempt(request.function_id, outcome)
        await (await self._send("runs", request.run_id, outcome))

    def _count_attempt(self, function_id: str, outcome: Any) -> None:
        if not isinstance(outcome, StepCompleted | StepFailed):
            return
        ok = isinstance(outcome, StepCompleted)
        step = step_label(outcome.step_id)
        self.metrics.step_attempts.labels(function_id, step,
                                          "completed" if ok else "failed").inc()
        self.metrics.step_duration.labels(function_id, step).observe(
            (outcome.ended_at - outcome.started_at) / 1000)

    async def _match(self, stream: faust.StreamT) -> None:
        async for event in stream.events():
            try:
                record = self.codec.decode(event.message.value)
                if not isinstance(record, WaiterChanged | Event):
                    raise DecodeError(f"{type(record).__name__} does not belong on waiters")
            except DecodeError as exc:
                await self._quarantine(event, str(exc))
                continue
            key = event.message.key
            raw = self.waiters.get(key)
            current = self.codec.decode_as(raw, WaiterSet) if raw is not None else WaiterSet()
            if isinstance(record, WaiterChanged):
                updated = waiters.change(current, record.waiter, record.active, now_ms())
            else:
                found = waiters.match(current, record)
                acks = [await self._send("runs", m.run_id, m) for m in found.messages]
                await asyncio.gather(*acks)  # outbox first, as in the orchestrator
                updated = found.remaining
            if updated != current and self._owns(event):
                self.waiters[key] = self.codec.encode(updated)
                await self._changelog_written()  # before Faust may commit the message

    async def _cron(self) -> None:
        """Start cron runs on time; every worker does, and the run ids make it one run."""
        last = now_ms()
        while True:
            await asyncio.sleep(max(0.05, 1.0 - (now_ms() % 1000) / 1000))
            now = now_ms()
            starts = self.starter.cron_starts(last, now)
            acks = [await self._send("runs", start.run_id, start) for start in starts]
            await asyncio.gather(*acks)
            last = now


@dataclass(frozen=True, slots=True)
class _Write:
    """A transition whose state is written once its commands are acknowledged."""

    event: faust.EventT
    key: bytes
    old: RunState | None
    new: RunState
    acks: list[Awaitable[Any]]


@contextlib.contextmanager
def _processing(event: faust.EventT) -> Iterator[None]:
    """Make ``event`` Faust's current event while a table is written outside the agent.

    The orchestrator's writer task is not the agent's task, so Faust's current event
    (a context variable) is not set there. The RocksDB store needs it to pick the
    partition's database (it asserted, and the writer task died silently: no state was
    saved), and every table write takes the changelog partition from it.
    """
    from faust.streams import _current_event

    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def _done() -> asyncio.Future[None]:
    """An acknowledgement that is there already (a command with nothing to send)."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


async def _all_acked(acks: Sequence[list[Awaitable[Any]]]) -> None:
    await asyncio.gather(*(ack for batch in acks for ack in batch))


def _unknown_function(function_id: str, app_id: str) -> ErrorInfo:
    return ErrorInfo(type="UnknownFunction",
                     message=f"function {function_id!r} is not registered in app {app_id!r} "
                             "on this worker")


__all__ = ["Engine", "FunctionDef"]
