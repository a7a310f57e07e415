"""What a handler receives: ``ctx.event``, ``ctx.events``, ``ctx.step``, ``ctx.run_id``,
``ctx.attempt``, progress (``ctx.progress``) and versioning (``ctx.patched``)."""

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

    def progress(self, fraction: float, message: str = "") -> None:
        """Say how far the running step is: ``fraction`` from 0 to 1, and a short message.

        Shown live on the dashboard's run page and in ``GET /v1/runs/{id}/stream``.
        Advisory, not a step result: the last value of each step counts, a worker
        publishes a few a second at most (a tight loop may call it freely), and it is
        not replayed, so it changes nothing in the run. Call it inside a step's body;
        outside steps it is the run's own, said once per dispatch that first runs it.

        Raises:
            ValueError: ``fraction`` is not a number from 0 to 1.
        """
        self.step.progress(fraction, message)

    def patched(self, patch_id: str) -> bool:
        """Whether this run takes the new code path of ``patch_id`` (versioning).

        ``if ctx.patched("new-tax-step"): <new code> else: <old code>``. True for runs
        that reach this call for the first time on code that has it (new runs), False
        for runs that had already gone past it on older code; the decision is saved in
        the run, so the run keeps it on every replay and worker. Call it in the
        handler's main flow (not inside one branch of an ``asyncio.gather``). See
        docs/production.md for retiring a patch.
        """
        return self.step.patched(patch_id)

    def deprecate_patch(self, patch_id: str) -> None:
        """The code after ``patched(patch_id)`` was made unconditional: keep recording the
        patch for runs that reach this point first, so that workers still running the
        ``patched`` version take the new path for these runs too."""
        self.step.deprecate_patch(patch_id)
