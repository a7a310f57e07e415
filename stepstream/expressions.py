"""CEL expressions: ``wait_for_event`` and ``cancel_on`` conditions, idempotency keys.

Expressions are compiled once and cached; evaluating one never executes event data.
In a condition, ``event`` is the run's triggering event and ``async`` the incoming
event, as in Inngest: ``async.data.invoice_id == event.data.invoice_id``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import cel

from stepstream.errors import ConfigError

MAX_EXPRESSION_LENGTH = 1024
"""Longer expressions are refused: they are user input evaluated for every event."""


@lru_cache(maxsize=4096)
def compile_condition(source: str) -> Any:
    """The compiled program of ``source``; raises ConfigError when it does not parse."""
    if len(source) > MAX_EXPRESSION_LENGTH:
        raise ConfigError(f"CEL expression over {MAX_EXPRESSION_LENGTH} characters")
    try:
        return cel.compile(source)
    except ValueError as exc:
        raise ConfigError(f"invalid CEL expression {source!r}: {exc}") from exc


def evaluate(source: str, context: dict[str, Any]) -> Any:
    """Evaluate ``source`` over ``context``; a runtime error (missing field) is None."""
    program = compile_condition(source)
    try:
        return program.execute(context)
    except (ValueError, TypeError, KeyError, RuntimeError):
        return None


def matches(condition: str | None, context: dict[str, Any]) -> bool:
    """Whether an optional condition holds (no condition always holds)."""
    return condition is None or evaluate(condition, context) is True
