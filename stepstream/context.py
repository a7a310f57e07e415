"""What a handler receives: ``ctx.event``, ``ctx.events``, ``ctx.step``, ``ctx.run_id``,
``ctx.attempt``."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from stepstream.events import TriggerEvent
from stepstream.step import Step


@dataclass(frozen=True, slots=True)
class Context:
    """The run a handler is executing, as seen from inside it."""

    event: TriggerEvent
    """The event that triggered the run."""
    step: Step
    """The step toolkit: ``await ctx.step.run("id", fn, *args)``."""
    run_id: str
    """Deterministic id of this run (same function and event id, same run)."""
    attempt: int
    """0 for the first attempt of the step about to run, 1 for its first retry, ..."""
    logger: logging.LoggerAdapter[logging.Logger]
    """A logger whose records carry the run id."""
    events: list[TriggerEvent] = field(default_factory=list)
    """The run's events: the batch of a ``batch_events`` function (``event`` is the
    first), else ``[event]``."""
