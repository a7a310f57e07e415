"""stepstream: durable step functions on Kafka."""

from stepstream.client import Stepstream
from stepstream.context import Context
from stepstream.cron import Cron
from stepstream.errors import (
    ConfigError,
    NondeterminismError,
    NonRetriableError,
    RetryAfterError,
    RunFailed,
    SerializationError,
    StepError,
    StepstreamError,
)
from stepstream.events import TriggerEvent
from stepstream.options import (
    BatchEvents,
    CancelOn,
    Concurrency,
    Debounce,
    Priority,
    RateLimit,
    Singleton,
    Throttle,
    Timeouts,
)
from stepstream.retry import RetryPolicy
from stepstream.settings import Settings
from stepstream.topic_trigger import TopicTrigger

__all__ = [
    # the application and what handlers receive
    "Context",
    "Stepstream",
    "TriggerEvent",
    # options
    "CancelOn",
    "Cron",
    "RetryPolicy",
    "Settings",
    "Timeouts",
    "TopicTrigger",
    # flow control
    "BatchEvents",
    "Concurrency",
    "Debounce",
    "Priority",
    "RateLimit",
    "Singleton",
    "Throttle",
    # errors
    "ConfigError",
    "NonRetriableError",
    "NondeterminismError",
    "RetryAfterError",
    "RunFailed",
    "SerializationError",
    "StepError",
    "StepstreamError",
]
