"""A function definition: the handler and the options it was registered with."""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stepstream.cron import Cron
from stepstream.options import CancelOn, FlowControl, Singleton, Timeouts
from stepstream.retry import RetryPolicy
from stepstream.topic_trigger import TopicTrigger

if TYPE_CHECKING:
    from stepstream.context import Context

Handler = Callable[["Context"], Awaitable[Any]]


@dataclass(frozen=True, kw_only=True)
class FunctionDef:
    """One durable function, as ``@ss.function`` registered it."""

    id: str
    """Stable identifier; run ids derive from it, so renaming it starts new runs."""
    handler: Handler
    """The async function; re-run from the top for every step (deterministic replay)."""
    retry: RetryPolicy
    """How each of its steps is retried."""
    trigger: str | None = None
    """Name of the event that starts a run."""
    source: TopicTrigger | None = None
    """The topic whose records each start a run (instead of an event name)."""
    trigger_if: str | None = None
    """CEL condition over ``event`` (and ``record``, with ``source``) that a triggering
    event must also meet."""
    cron: Cron | None = None
    """Cron schedule that starts a run at every tick (instead of an event)."""
    cancel_on: tuple[CancelOn, ...] = ()
    """Events that cancel a running run."""
    timeouts: Timeouts = field(default_factory=Timeouts)
    """Deadlines after which a run is cancelled."""
    idempotency: str | None = None
    """CEL expression over ``event``: one run per value per 24 hours."""
    eager: bool = True
    """Run consecutive steps in one dispatch (results still saved one by one)."""
    flow: FlowControl = field(default_factory=FlowControl)
    """Concurrency, throttle, rate limit, debounce, batching and priority."""
    waits_on: frozenset[str] = frozenset()
    """Topics its runs wait or cancel on (``TopicTrigger``s of ``cancel_on`` and of
    its handler): the worker reads them."""
    singleton: Singleton | None = None
    """At most one running run per key value (``streams.singletons``)."""

    @property
    def event_name(self) -> str | None:
        """The name of the events that start its runs (a source's are its topic's)."""
        return self.source.topic if self.source is not None else self.trigger


def literal_conditions(handler: Callable[..., Any]) -> list[str]:
    """The literal ``if_=`` strings of the ``wait_for_event`` calls in ``handler``'s source.

    They are compiled when the function is registered, so that a typo fails at
    start-up, not hours into a run. (Conditions built at run time are compiled when
    the step is reached.)
    """
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(handler)))
    except (OSError, TypeError, SyntaxError):
        return []
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "wait_for_event"):
            for keyword in node.keywords:
                if keyword.arg == "if_" and isinstance(keyword.value, ast.Constant) \
                        and isinstance(keyword.value.value, str):
                    found.append(keyword.value.value)
    return found
