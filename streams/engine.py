"""The engine: a Faust app running the trigger, orchestrator, executor, delay and
history agents for one ``Stepstream`` application (DESIGN §4).

Agents only decode, call pure code (``streams.machine.advance``,
``stepstream.execution.execute``) and produce what it returns. Every agent reads
raw bytes and decodes them itself, so an undecodable message is quarantined
instead of crashing the agent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

import faust
import redis.asyncio as aioredis

from schemas.codec import DecodeError, default_codec
from schemas.messages import (
    RUN_MESSAGES,
    Delayed,
    FunctionFinished,
    HistoryRecord,
    Quarantined,
    RunStarted,
    RunState,
    StepCompleted,
    StepRequest,
)
from stepstream.client import Stepstream
from stepstream.errors import ConfigError
from stepstream.events import decode_event, run_id_for
from stepstream.execution import execute
from stepstream.retry import RetryPolicy
from stepstream.step import now_ms
from streams.delays import DelayTiers
from streams.machine import FINAL_STATUSES, Command, Dispatch, Record, Schedule, SendToDlq, advance
from streams.metrics import Metrics
from streams.readmodel import RunStore
from streams.transport import FaustApp
from topics.catalog import catalog

log = logging.getLogger("stepstream.engine")

# Agents decode bytes themselves: a bad message is quarantined, not a crashed agent.
_RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
                        "value_serializer": "raw"}


class Engine:
    """Everything one worker process runs for ``ss``."""

    def __init__(self, ss: Stepstream, *, metrics: Metrics | None = None) -> None:
        self.ss = ss
        self.settings = settings = ss.settings
        self.codec = default_codec()
        self.metrics = metrics or Metrics()
        self.by_trigger: dict[str, list[str]] = {}
        for fn in ss.functions.values():
            self.by_trigger.setdefault(fn.trigger, []).append(fn.id)
        if not ss.functions:
            raise ConfigError(f"app {ss.app_id!r} registers no function")
        self.specs = catalog(settings)
        self.app = self._faust_app()
        self.topics = {spec.name: self.app.topic(spec.name, partitions=spec.partitions,
                                                 internal=False, **_RAW)
                       for spec in self.specs if "-" not in spec.name}
        self.runs = self.app.Table(
            "runs", partitions=settings.partitions, default=None,
            key_type=bytes, value_type=bytes)  # bytes types select the raw serializer
        self.tiers = DelayTiers(settings)
        self.store = RunStore(aioredis.Redis.from_url(settings.redis_url), settings.namespace)
        self._register_agents()

    def _faust_app(self) -> FaustApp:
        from stepstream.kafka_security import faust_options

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
            table_standby_replicas=0,
            **faust_options(s),  # SASL / TLS, the same as the confluent-kafka clients'
        )
        app.fetch_max_wait_ms = s.fetch_max_wait_ms
        return app

    def topic(self, suffix: str) -> faust.TopicT:
        """One of the namespace's topics."""
        return self.topics[self.settings.topic(suffix)]

    # --- producing ----------------------------------------------------------------

    async def _send(self, suffix: str, key: str, record: Any) -> Awaitable[Any]:
        """Queue ``record`` for the topic; returns the future of its acknowledgement."""
        return await self.topic(suffix).send(key=key.encode(), value=self.codec.encode(record))

    async def _quarantine(self, event: faust.EventT, reason: str) -> None:
        message = event.message
        log.warning("quarantined %s[%d]@%d: %s", message.topic, message.partition,
                    message.offset, reason)
        self.metrics.quarantined.labels(message.topic).inc()
        record = Quarantined(topic=message.topic, partition=message.partition,
                             offset=message.offset, reason=reason, ts=now_ms(),
                             key=message.key, value=message.value)
        await (await self._send("quarantine", f"{message.topic}:{message.partition}", record))

    def _policy(self, function_id: str) -> RetryPolicy:
        fn = self.ss.functions.get(function_id)
        return fn.retry if fn is not None else RetryPolicy()

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
            case Schedule(delay_ms, timer):
                tier, delayed = self.tiers.wrap(
                    self.settings.topic("runs"), run_id.encode(), self.codec.encode(timer),
                    due_ms=now_ms() + delay_ms)
                self.metrics.retries_scheduled.labels(tier).inc()
                return await self._send(f"delay.{tier}", run_id, delayed)
        raise TypeError(f"unknown command {command!r}")

    # --- agents -------------------------------------------------------------------

    def _register_agents(self) -> None:
        app = self.app
        app.agent(self.topic("events"), name="stepstream.trigger")(self._trigger)
        app.agent(self.topic("runs"), name="stepstream.orchestrator")(self._orchestrate)
        app.agent(self.topic("steps"), name="stepstream.executor",
                  concurrency=self.settings.executor_concurrency)(self._execute)
        for tier, hold in self.tiers.tiers:
            app.agent(self.topic(f"delay.{tier}"), name=f"stepstream.delay.{tier}")(
                self._delay_agent(hold))
        app.agent(self.topic("history"), name="stepstream.history")(self._project)

    async def _trigger(self, stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            try:
                decoded = decode_event(
                    message.value, self.codec,
                    fallback_id=f"{message.topic}:{message.partition}:{message.offset}",
                    fallback_ts=int(message.timestamp * 1000),
                    limit=self.settings.max_payload_bytes)
            except DecodeError as exc:
                self.metrics.events_received.labels("quarantined").inc()
                await self._quarantine(event, str(exc))
                continue
            function_ids = self.by_trigger.get(decoded.name, [])
            self.metrics.events_received.labels("matched" if function_ids else "unmatched").inc()
            acks = [await self._send("runs", run_id, RunStarted(
                        run_id=run_id, function_id=function_id, event=decoded, ts=now_ms()))
                    for function_id in function_ids
                    for run_id in [run_id_for(function_id, decoded.id)]]
            await asyncio.gather(*acks)

    async def _orchestrate(self, stream: faust.StreamT) -> None:
        async for event in stream.events():
            try:
                message = self.codec.decode(event.message.value)
                if not isinstance(message, RUN_MESSAGES):
                    raise DecodeError(f"{type(message).__name__} does not belong on runs")
            except DecodeError as exc:
                await self._quarantine(event, str(exc))
                continue
            key = message.run_id.encode()
            raw = self.runs.get(key)
            state = self.codec.decode(raw) if raw is not None else None
            function_id = state.function_id if state else getattr(message, "function_id", "")
            new_state, commands = advance(state, message, self._policy(function_id))
            if new_state is state or new_state is None:
                continue  # a duplicate or stale message: nothing changes
            # Outbox first: the commands must be on the broker before the new state is in
            # the changelog. A crash in between replays the message against the old state
            # and sends the same commands again (receivers dedupe by seq); the reverse
            # order could store a state whose commands were lost, and the run would hang.
            acks = [await self._perform(new_state, c) for c in commands]
            await asyncio.gather(*acks)
            self.runs[key] = self.codec.encode(new_state)
            self._count_transition(state, new_state)

    def _count_transition(self, old: RunState | None, new: RunState) -> None:
        if old is None:
            self.metrics.runs_started.labels(new.function_id).inc()
        if new.status in FINAL_STATUSES and (old is None or old.status not in FINAL_STATUSES):
            self.metrics.runs_finished.labels(new.function_id, new.status).inc()
            seconds = ((new.ended_at or new.started_at) - new.started_at) / 1000
            self.metrics.run_duration.labels(new.function_id, new.status).observe(seconds)

    async def _execute(self, stream: faust.StreamT) -> None:
        limit = self.settings.max_payload_bytes
        async for event in stream.events():
            try:
                request = self.codec.decode_as(event.message.value, StepRequest)
            except DecodeError as exc:
                await self._quarantine(event, str(exc))
                continue
            function = self.ss.functions.get(request.function_id)
            if function is None:
                outcome: Any = FunctionFinished(
                    run_id=request.run_id, seq=request.seq, ts=now_ms(),
                    error=_unknown_function(request.function_id, self.ss.app_id))
            else:
                outcome = await execute(function, request, max_output_bytes=limit)
                self._count_attempt(request.function_id, outcome)
            await self._send("runs", request.run_id, outcome)

    def _count_attempt(self, function_id: str, outcome: Any) -> None:
        if isinstance(outcome, FunctionFinished):
            return
        ok = isinstance(outcome, StepCompleted)
        self.metrics.step_attempts.labels(function_id, "completed" if ok else "failed").inc()
        self.metrics.step_duration.labels(function_id).observe(
            (outcome.ended_at - outcome.started_at) / 1000)

    def _delay_agent(self, hold: timedelta) -> Any:
        hold_ms = int(hold.total_seconds() * 1000)

        async def delay(stream: faust.StreamT) -> None:
            # Every message of a tier is held for the same time, so the topic is in due
            # order and waiting for its head never delays a message behind it.
            async for event in stream.events():
                try:
                    delayed = self.codec.decode_as(event.message.value, Delayed)
                except DecodeError as exc:
                    await self._quarantine(event, str(exc))
                    continue
                enqueued_ms = int(event.message.timestamp * 1000)
                wake_ms = min(delayed.due_ms, enqueued_ms + hold_ms)
                wait = (wake_ms - now_ms()) / 1000
                if wait > 0:
                    await asyncio.sleep(wait)
                target = self.topics.get(delayed.topic)
                if target is None:
                    await self._quarantine(event, f"delay target {delayed.topic!r} is unknown")
                elif delayed.due_ms <= now_ms():
                    await (await target.send(key=delayed.key, value=delayed.value))
                else:  # hop on through the tier that fits what is left
                    tier, again = self.tiers.wrap(delayed.topic, delayed.key, delayed.value,
                                                  due_ms=delayed.due_ms)
                    await (await self._send(f"delay.{tier}", delayed.key.decode(), again))

        return delay

    async def _project(self, stream: faust.StreamT) -> None:
        async for event in stream.events():
            try:
                record = self.codec.decode_as(event.message.value, HistoryRecord)
            except DecodeError as exc:
                await self._quarantine(event, str(exc))
                continue
            await self.store.apply(record)


def _unknown_function(function_id: str, app_id: str) -> Any:
    from schemas.messages import ErrorInfo

    return ErrorInfo(type="UnknownFunction",
                     message=f"function {function_id!r} is not registered in app {app_id!r} "
                             "on this worker")
