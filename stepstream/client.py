"""``Stepstream``: where users register functions and send events."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from schemas.codec import default_codec
from stepstream.errors import ConfigError
from stepstream.events import make_event
from stepstream.function import FunctionDef, Handler
from stepstream.retry import RetryPolicy
from stepstream.settings import Settings
from stepstream.step import now_ms

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")


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
        overrides = {"brokers": brokers, "redis_url": redis_url, "namespace": namespace}
        self.app_id = app_id
        self.settings = replace(base, **{k: v for k, v in overrides.items() if v is not None})
        self.functions: dict[str, FunctionDef] = {}
        self._producer: Any = None

    def function(self, *, id: str, trigger: str, retries: int = 3,
                 retry: RetryPolicy | None = None) -> Callable[[Handler], Handler]:
        """Register an async handler as a durable function.

        Args:
            id: stable id of the function; runs are keyed by it.
            trigger: name of the event that starts a run.
            retries: retries of each step after its first attempt.
            retry: the full backoff policy; its ``retries`` wins over ``retries``.
        """
        if not _ID.match(id):
            raise ConfigError(f"function id {id!r} must match {_ID.pattern}")
        if not trigger:
            raise ConfigError(f"function {id!r} needs a trigger event name")
        if id in self.functions:
            raise ConfigError(f"function id {id!r} is registered twice")
        try:
            policy = retry if retry is not None else RetryPolicy(retries=retries)
        except ValueError as exc:
            raise ConfigError(f"function {id!r}: {exc}") from exc

        def register(handler: Handler) -> Handler:
            if not asyncio.iscoroutinefunction(handler):
                raise ConfigError(f"function {id!r}: the handler must be an async function")
            self.functions[id] = FunctionDef(id=id, trigger=trigger, handler=handler,
                                             retry=policy)
            return handler

        return register

    def send(self, name: str, data: dict[str, Any] | None = None, *, id: str | None = None,
             timeout: float = 10.0) -> str:
        """Produce an event to the events topic and wait until the broker has it.

        Args:
            name: event name, e.g. ``"api/contact_list.uploaded"``.
            data: JSON-serializable payload.
            id: idempotency key: the same id never starts a function twice.
            timeout: seconds to wait for the broker's acknowledgement.

        Returns:
            The event id.
        """
        event = make_event(name, data, id=id, ts=now_ms(),
                           limit=self.settings.max_payload_bytes)
        producer = self._get_producer()
        errors: list[Any] = []
        producer.produce(self.settings.topic("events"), key=event.id.encode(),
                         value=default_codec().encode(event),
                         on_delivery=lambda err, _msg: errors.append(err))
        if producer.flush(timeout) > 0:
            raise TimeoutError(f"event {event.id} not acknowledged by "
                               f"{self.settings.brokers} within {timeout}s")
        if errors and errors[0] is not None:
            raise ConnectionError(f"event {event.id} not delivered: {errors[0]}")
        return event.id

    async def send_async(self, name: str, data: dict[str, Any] | None = None, *,
                         id: str | None = None) -> str:
        """``send`` without blocking the event loop."""
        return await asyncio.to_thread(self.send, name, data, id=id)

    def _get_producer(self) -> Any:
        if self._producer is None:
            from confluent_kafka import Producer  # the SDK imports without a Kafka client

            from stepstream.kafka_security import kafka_client_config

            self._producer = Producer(kafka_client_config(
                self.settings, **{"enable.idempotence": True, "linger.ms": 1}))
        return self._producer

    def close(self) -> None:
        """Flush and drop the producer."""
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None
