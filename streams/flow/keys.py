"""Redis key names and the CEL values flow control keys its limits by (pure)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from schemas.messages import Event
from stepstream.expressions import evaluate, size_of
from stepstream.options import PRIORITY_BOUND_S
from streams.waiters import event_context

_MAX_KEY_TEXT = 64


def key_value(expression: str | None, event: Event) -> str:
    """The value of a limit's key expression for ``event``, as text for a Redis key.

    No expression: ``""`` (one limit for the function). An expression that finds nothing
    (a missing field) also gives ``""``: such events share one limit. Long values are
    hashed so that keys stay short. One that fails raises ``ExpressionError``.
    """
    if expression is None:
        return ""
    value: Any = evaluate(expression, {"event": event_context(event)}, size_of(event.data_json))
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    if len(text) > _MAX_KEY_TEXT:
        return "h:" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    return text


def priority_ms(expression: str | None, event: Event) -> int:
    """How far ahead a run goes in the queues, in ms (clamped to +-600 s; 0 if not a number;
    ``ExpressionError`` if the expression fails)."""
    if expression is None:
        return 0
    value = evaluate(expression, {"event": event_context(event)}, size_of(event.data_json))
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return round(max(-PRIORITY_BOUND_S, min(PRIORITY_BOUND_S, float(value))) * 1000)


def queue_score(event: Event, priority: str | None) -> int:
    """A run's place in a queue: its event's time, less its priority (lower goes first).

    Derived from the run alone, so every re-check of a held-back step computes the same
    place, and a waiting entry that expired is put back where it was.
    """
    return event.ts - priority_ms(priority, event)


class FlowKeys:
    """Key names under ``{namespace}:flow:``.

    The function id is a Redis Cluster hash tag: all keys of one function share a slot,
    so a script may touch several of them (a function-level and a per-key limit).
    """

    def __init__(self, namespace: str) -> None:
        self.prefix = f"{namespace}:flow"

    def of(self, function_id: str, mechanism: str, value: str, *parts: str) -> str:
        """The key of ``mechanism`` (e.g. ``c0``, ``throttle``) for one key value."""
        return ":".join([f"{self.prefix}:{{{function_id}}}", mechanism, value, *parts])
