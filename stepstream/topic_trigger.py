"""``TopicTrigger``: the records of a Kafka topic stepstream does not own, as events.

A record becomes an event named after its topic, whose data is the record's value (a
JSON object, or a Schema Registry record decoded to one). A function triggered by a
topic gets a run per record; ``step.wait_for_event`` and ``cancel_on`` take one too.
The worker reads such topics and never writes to or creates them (README, "Use your
existing topics").
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from stepstream.errors import ConfigError
from stepstream.expressions import compile_condition

_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
"""Kafka's rule for topic names."""

Start = Literal["latest", "earliest"] | datetime


@dataclass(frozen=True, slots=True)
class TopicTrigger:
    """A topic whose records are events named ``topic``.

    In CEL (``id``, and a triggered function's ``if_``), ``record`` is the record:
    ``record.value`` (the decoded value), ``record.key`` (text, or null),
    ``record.headers`` (name to text), ``record.timestamp`` (ms), ``record.topic``,
    ``record.partition``, ``record.offset``.
    """

    topic: str
    """The topic's name, as the other team named it (no namespace)."""
    id: str | None = None
    """CEL expression over ``record`` giving the event id (one run per function and id);
    None: ``topic:partition:offset``."""
    start: Start = "latest"
    """Where a function triggered by the topic starts reading it the first time it is
    deployed: ``"latest"`` (records produced from then on), ``"earliest"`` (everything
    the topic retains) or an aware ``datetime`` (records from then). Later, it goes on
    from its committed offsets. Unused by ``wait_for_event`` and ``cancel_on``."""

    def __post_init__(self) -> None:
        if not isinstance(self.topic, str) or not _TOPIC.match(self.topic):
            raise ConfigError(f"topic name {self.topic!r} must match {_TOPIC.pattern}")
        if isinstance(self.start, datetime):
            if self.start.tzinfo is None:
                raise ConfigError("TopicTrigger start must be an aware datetime (UTC)")
        elif self.start not in ("latest", "earliest"):
            raise ConfigError(f"TopicTrigger start {self.start!r} must be 'latest', "
                              "'earliest' or a datetime")
        if self.id is not None:
            compile_condition(self.id)

    @property
    def start_ms(self) -> int | None:
        """``start`` as a timestamp in ms; None for ``latest`` and ``earliest``."""
        return round(self.start.timestamp() * 1000) if isinstance(self.start, datetime) \
            else None


def event_name(event: str | TopicTrigger) -> str:
    """The event name ``event`` stands for: a topic's events are named after it."""
    return event.topic if isinstance(event, TopicTrigger) else event


def topics_waited_on(handler: Callable[..., Any]) -> set[str]:
    """The topics ``handler`` names in a ``TopicTrigger``: a literal call
    (``TopicTrigger("shop.payments")``) in its source, or a module-level
    ``TopicTrigger`` it refers to by name. The worker reads them for its waits."""
    code, module = getattr(handler, "__code__", None), getattr(handler, "__globals__", {})
    found = {value.topic for name in (code.co_names if code is not None else ())
             if isinstance(value := module.get(name), TopicTrigger)}
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(handler)))
    except (OSError, TypeError, SyntaxError):
        return found
    # The body only: the decorator's trigger is no wait.
    body = [statement for definition in tree.body
            if isinstance(definition, ast.FunctionDef | ast.AsyncFunctionDef)
            for statement in definition.body]
    for node in (found_node for statement in body for found_node in ast.walk(statement)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else \
            func.attr if isinstance(func, ast.Attribute) else None
        if name != "TopicTrigger":
            continue
        topic = node.args[0] if node.args else next(
            (k.value for k in node.keywords if k.arg == "topic"), None)
        if isinstance(topic, ast.Constant) and isinstance(topic.value, str):
            found.add(topic.value)
    return found
