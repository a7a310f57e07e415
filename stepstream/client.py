"""``Stepstream``: where users register functions and send events."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal, overload

from schemas.codec import default_codec
from stepstream.cron import Cron, cron_of
from stepstream.errors import ConfigError
from stepstream.events import FUNCTION_FAILED, make_event, run_id_for
from stepstream.expressions import compile_condition
from stepstream.function import FunctionDef, Handler, literal_conditions
from stepstream.options import (
    BatchEvents,
    CancelOn,
    Concurrency,
    Debounce,
    FlowControl,
    Priority,
    RateLimit,
    Singleton,
    Throttle,
    Timeouts,
    concurrency_options,
    option,
)
from stepstream.results import event_result, run_result
from stepstream.retry import RetryPolicy
from stepstream.schema_registry import FramedAvro, schema_text
from stepstream.settings import Settings
from stepstream.step import now_ms
from stepstream.topic_trigger import TopicTrigger, topics_waited_on

DEFAULT_RESULT_TIMEOUT_S = 60.0
"""How long ``result`` and ``send(wait=True)`` wait for a run to end."""
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")


def _cron(function_id: str, schedule: Cron | str) -> Cron:
    try:
        return cron_of(schedule)
    except ValueError as exc:
        raise ConfigError(f"function {function_id!r}: {exc}") from exc


def _flow_control(function_id: str, concurrency: Any, throttle: Any, rate_limit: Any,
                  debounce: Any, batch_events: Any, priority: Any) -> FlowControl:
    """The flow-control options, given as dataclasses or dicts, checked."""
    try:
        return FlowControl(
            concurrency=concurrency_options(concurrency),
            throttle=option(Throttle, throttle, "throttle"),
            rate_limit=option(RateLimit, rate_limit, "rate_limit"),
            debounce=option(Debounce, debounce, "debounce"),
            batch_events=option(BatchEvents, batch_events, "batch_events"),
            priority=option(Priority, priority, "priority"))
    except ValueError as exc:
        raise ConfigError(f"function {function_id!r}: {exc}") from exc


class Stepstream:
    """A stepstream application: its functions and its connection settings.

    Args:
        app_id: name of the application (shown in logs and metrics).
        settings: explicit settings; by default read from ``STEPSTREAM_*`` variables.
        brokers: overrides ``settings.brokers``.
        redis_url: overrides ``settings.redis_url``.
        namespace: overrides ``settings.namespace``.
    """

    def __init__(self, app_id: str, *, settings: Settings | None = None,
                 brokers: str | None = None, redis_url: str | None = None,
                 namespace: str | None = None) -> None:
        if not _ID.match(app_id):
            raise ConfigError(f"app_id {app_id!r} must match {_ID.pattern}")
        base = settings if settings is not None else Settings.from_env()
        overrides: dict[str, Any] = {"brokers": brokers, "redis_url": redis_url,
                                     "namespace": namespace}
        self.app_id = app_id
        self.settings = replace(base, **{k: v for k, v in overrides.items() if v is not None})
        self.functions: dict[str, FunctionDef] = {}
        self._producer: Any = None
        self._framed_avro: FramedAvro | None = None

    def function(self, *, id: str, trigger: str | TopicTrigger | None = None,
                 cron: Cron | str | None = None,
                 if_: str | None = None, retries: int = 3, retry: RetryPolicy | None = None,
                 cancel_on: Sequence[CancelOn] = (), timeouts: Timeouts | None = None,
                 on_failure: Handler | None = None, idempotency: str | None = None,
                 eager: bool = True,
                 concurrency: int | Concurrency | Mapping[str, Any]
                 | Sequence[Concurrency | Mapping[str, Any]] | None = None,
                 throttle: Throttle | Mapping[str, Any] | None = None,
                 rate_limit: RateLimit | Mapping[str, Any] | None = None,
                 debounce: Debounce | Mapping[str, Any] | None = None,
                 batch_events: BatchEvents | Mapping[str, Any] | None = None,
                 priority: Priority | Mapping[str, Any] | None = None,
                 singleton: Singleton | Mapping[str, Any] | None = None,
                 ) -> Callable[[Handler], Handler]:
        """Register an async handler as a durable function.

        Args:
            id: stable id of the function; runs are keyed by it.
            trigger: name of the event that starts a run, or a ``TopicTrigger``: each
                record of that topic starts one.
            cron: a schedule that starts a run at each tick: ``"*/5 * * * *"`` (UTC), or
                ``Cron("0 9 * * MON-FRI", tz="Europe/Berlin", catch_up="1h")``.
            if_: CEL condition over ``event`` that a triggering event must meet (and
                over ``record`` with a ``TopicTrigger``).
            retries: retries of each step after its first attempt.
            retry: the full backoff policy; its ``retries`` wins over ``retries``.
            cancel_on: events that cancel a running run.
            timeouts: start and finish deadlines; a late run ends ``cancelled``.
            on_failure: a handler run (as its own function) when a run fails for good;
                its ``ctx.event.data`` holds ``function_id``, ``run_id``, ``error``, ``event``.
            idempotency: CEL expression over ``event``; one run per value per 24 hours.
            eager: run consecutive ``step.run`` calls in one dispatch, each result saved
                as it completes (fast: no broker round trip between steps). Off: every
                step is its own dispatch through the orchestrator.
            concurrency: most steps executing at once, across workers: an int, a
                ``Concurrency`` / ``{"limit": 5, "key": "event.data.tenant_id"}``, or a
                list combining a function-level limit and per-key ones.
            throttle: ``Throttle`` / ``{"limit": 10, "period": "1m", "key": ...}``: run
                starts spread out; runs over the limit wait their turn.
            rate_limit: ``RateLimit`` / ``{"limit": 1, "period": "1h", "key": ...}``:
                events over the limit start no run.
            debounce: ``Debounce`` / ``{"period": "30s", "key": ...}``: one run, with the
                last event, once no newer event came for the period.
            batch_events: ``BatchEvents`` / ``{"max_size": 100, "timeout": "5s"}``: one
                run per batch; the handler gets ``ctx.events``.
            priority: ``Priority`` / ``{"run": "event.data.plan == 'pro' ? 120 : 0"}``:
                seconds ahead in the queues of ``concurrency`` and ``throttle``.
            singleton: ``Singleton`` / ``{"key": "event.data.user_id", "mode": "skip"}``:
                at most one running run per key; a new event is skipped, or (``cancel``)
                cancels the running run and starts once it has ended.

        Raises:
            ConfigError: the definition cannot work (checked here, not at run time).
        """
        if not _ID.match(id):
            raise ConfigError(f"function id {id!r} must match {_ID.pattern}")
        if (trigger is None) == (cron is None):
            raise ConfigError(f"function {id!r} needs exactly one of trigger= or cron=")
        if trigger == "":
            raise ConfigError(f"function {id!r} needs a trigger event name")
        if id in self.functions:
            raise ConfigError(f"function id {id!r} is registered twice")
        schedule = _cron(id, cron) if cron is not None else None
        flow = _flow_control(id, concurrency, throttle, rate_limit, debounce, batch_events,
                             priority)
        if cron is not None and flow.at_trigger:
            raise ConfigError(f"function {id!r}: rate_limit, debounce and batch_events act on "
                              "events; a cron function has none")
        if flow.batch_events is not None and (flow.debounce or flow.rate_limit or idempotency):
            raise ConfigError(f"function {id!r}: batch_events cannot be combined with "
                              "debounce, rate_limit or idempotency")
        try:
            single = option(Singleton, singleton, "singleton")
        except ValueError as exc:
            raise ConfigError(f"function {id!r}: {exc}") from exc
        for expression in [if_, idempotency, *(rule.if_ for rule in cancel_on),
                           *flow.expressions(), single.key if single else None]:
            if expression is not None:
                compile_condition(expression)
        try:
            policy = retry if retry is not None else RetryPolicy(retries=retries)
        except ValueError as exc:
            raise ConfigError(f"function {id!r}: {exc}") from exc

        def register(handler: Handler) -> Handler:
            if not asyncio.iscoroutinefunction(handler):
                raise ConfigError(f"function {id!r}: the handler must be an async function")
            for condition in literal_conditions(handler):
                compile_condition(condition)
            waits_on = topics_waited_on(handler) | {
                rule.event.topic for rule in cancel_on if isinstance(rule.event, TopicTrigger)}
            self.functions[id] = FunctionDef(
                id=id, trigger=None if isinstance(trigger, TopicTrigger) else trigger,
                source=trigger if isinstance(trigger, TopicTrigger) else None, cron=schedule,
                trigger_if=if_, handler=handler, retry=policy, cancel_on=tuple(cancel_on),
                timeouts=timeouts or Timeouts(), idempotency=idempotency, eager=eager,
                flow=flow, waits_on=frozenset(waits_on), singleton=single)
            handler.stepstream_function_id = id  # type: ignore[attr-defined]
            # stepstream.testing runs a handler with the options it was registered with
            handler.stepstream_function = self.functions[id]  # type: ignore[attr-defined]
            if on_failure is not None:
                self.function(id=f"{id}.on-failure", trigger=FUNCTION_FAILED,
                              if_=f"event.data.function_id == {json.dumps(id)}",
                              retries=policy.retries)(on_failure)
            return handler

        return register

    @overload
    def send(self, name: str, data: dict[str, Any] | None = None, *, id: str | None = None,
             timeout: float = 10.0, wait: Literal[False] = False,
             function: str | None = None,
             avro_schema: str | dict[str, Any] | None = None) -> str: ...

    @overload
    def send(self, name: str, data: dict[str, Any] | None = None, *, id: str | None = None,
             timeout: float = 10.0, wait: Literal[True] | float,
             function: str | None = None,
             avro_schema: str | dict[str, Any] | None = None) -> Any: ...

    def send(self, name: str, data: dict[str, Any] | None = None, *, id: str | None = None,
             timeout: float = 10.0, wait: bool | float = False,
             function: str | None = None,
             avro_schema: str | dict[str, Any] | None = None) -> Any:
        """Produce an event to the events topic and wait until the broker has it; with
        ``wait``, wait for the run it starts too and return its output.

        Args:
            name: event name, e.g. ``"api/contact_list.uploaded"``.
            data: JSON-serializable payload.
            id: idempotency key: the same id never starts a function twice.
            timeout: seconds to wait for the broker's acknowledgement.
            wait: ``True`` (up to ``DEFAULT_RESULT_TIMEOUT_S``) or seconds: wait for the
                run the event starts to end, as ``result`` does.
            function: with ``wait``, the function whose run to wait for (needed when the
                event starts runs of several functions).
            avro_schema: an Avro schema (JSON text or parsed): ``data`` is produced to
                the topic ``name`` instead, as a record in the Confluent wire format
                (the schema registered through ``STEPSTREAM_SCHEMA_REGISTRY_URL``), keyed
                by ``id`` if given; the event of a ``TopicTrigger`` on that topic.

        Returns:
            The event id (with ``avro_schema``, the record's ``topic:partition:offset``,
            its event id unless its trigger's ``id=`` says otherwise); with ``wait``, the
            run's output.

        Raises:
            RunFailed: with ``wait``, the run failed or was cancelled.
            TimeoutError: the broker, or with ``wait`` the run, took longer.
            ConfigError: ``avro_schema`` without a registry, not an Avro schema, or for
                a topic of the namespace.
            SerializationError: ``data`` is not JSON, too large, or does not match
                ``avro_schema``.
        """
        event = make_event(name, data, id=id, ts=now_ms(),
                           limit=self.settings.max_payload_bytes)
        if avro_schema is None:
            self._produce(self.settings.topic("events"), event.id.encode(),
                          default_codec().encode(event), f"event {event.id}", timeout)
            event_id = event.id
        else:
            from topics.catalog import is_engine_topic

            if is_engine_topic(self.settings, name):
                raise ConfigError(f"{name!r} is a topic of the engine: avro_schema writes "
                                  "to topics of your own")
            value = self._framed().encode(name, schema_text(avro_schema), data or {})
            partition, offset = self._produce(name, None if id is None else id.encode(),
                                              value, f"a record for {name}", timeout)
            event_id = f"{name}:{partition}:{offset}"
        if wait is False:
            return event_id
        wait_s = DEFAULT_RESULT_TIMEOUT_S if wait is True else float(wait)
        if function is not None:
            return run_result(self.settings, run_id_for(function, event_id), wait_s)
        return event_result(self.settings, event_id, wait_s)

    def _produce(self, topic: str, key: bytes | None, value: bytes, what: str,
                 timeout: float) -> tuple[int, int]:
        """Produce and wait for the broker's ack; returns the record's partition and
        offset."""
        producer = self._get_producer()
        reports: list[tuple[Any, Any]] = []
        producer.produce(topic, key=key, value=value,
                         on_delivery=lambda err, msg: reports.append((err, msg)))
        if producer.flush(timeout) > 0:
            raise TimeoutError(f"{what} not acknowledged by {self.settings.brokers} "
                               f"within {timeout}s")
        error, message = reports[0] if reports else (None, None)
        if error is not None:
            raise ConnectionError(f"{what} not delivered: {error}")
        return (-1, -1) if message is None else (message.partition(), message.offset())

    def _framed(self) -> FramedAvro:
        if self._framed_avro is None:
            self._framed_avro = FramedAvro(self.settings)
        return self._framed_avro

    async def send_async(self, name: str, data: dict[str, Any] | None = None, *,
                         id: str | None = None, wait: bool | float = False,
                         function: str | None = None,
                         avro_schema: str | dict[str, Any] | None = None) -> Any:
        """``send`` without blocking the event loop."""
        return await asyncio.to_thread(self.send, name, data, id=id, wait=wait,
                                       function=function, avro_schema=avro_schema)

    def result(self, run_id: str, *, timeout: float = DEFAULT_RESULT_TIMEOUT_S) -> Any:
        """The output of a run once it has completed (a worker of this namespace must be
        running: the result is read from its read model, woken as the run ends).

        Raises:
            RunFailed: the run failed or was cancelled.
            TimeoutError: it had not ended within ``timeout`` seconds.
        """
        return run_result(self.settings, run_id, timeout)

    async def result_async(self, run_id: str, *,
                           timeout: float = DEFAULT_RESULT_TIMEOUT_S) -> Any:
        """``result`` without blocking the event loop."""
        return await asyncio.to_thread(self.result, run_id, timeout=timeout)

    def _get_producer(self) -> Any:
        if self._producer is None:
            from confluent_kafka import Producer  # the SDK imports without a Kafka client

            from stepstream.kafka_security import kafka_client_config

            self._producer = Producer(kafka_client_config(
                self.settings, **{"enable.idempotence": True, "linger.ms": 1,
                                  # where Java's producers (and the engine) put a key
                                  "partitioner": "murmur2_random"}))
        return self._producer

    def close(self) -> None:
        """Flush and drop the producer."""
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None
