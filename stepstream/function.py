"""A function definition: the handler and the options it was registered with."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stepstream.retry import RetryPolicy

if TYPE_CHECKING:
    from stepstream.context import Context

Handler = Callable[["Context"], Awaitable[Any]]


@dataclass(frozen=True, kw_only=True)
class FunctionDef:
    """One durable function, as ``@ss.function`` registered it."""

    id: str
    """Stable identifier; run ids derive from it, so renaming it starts new runs."""
    trigger: str
    """Name of the event that starts a run."""
    handler: Handler
    """The async function; re-run from the top for every step (deterministic replay)."""
    retry: RetryPolicy
    """How each of its steps is retried."""
