"""The errors of stepstream, one tree.

    StepstreamError
    ├── NonRetriableError      raised by user code: fail this step now, no retry
    ├── RetryAfterError        raised by user code: retry this step after a given delay
    ├── StepError              what a handler sees from a step that exhausted its retries
    ├── NondeterminismError    replay found the handler calling steps in another order
    │   └── ReplayMismatch     stepstream.testing.replay: new code leaves a recorded run's path
    ├── ConfigError            settings or a function definition that cannot work
    ├── SerializationError     a step output or event that is not JSON, or too large
    ├── ApiError               a worker's HTTP API refused a request, or did not answer
    ├── ExpressionError        a CEL expression failed, or was over budget (engine-side)
    └── RunFailed              a run waited for (``Stepstream.result``) failed or was cancelled

Control flow inside the executor (a step finished, the handler must stop here) is
signalled with ``BaseException`` subclasses that live in ``stepstream.execution`` and
are never exported, so a user's ``except Exception`` cannot swallow them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal


class StepstreamError(Exception):
    """Root of every error stepstream raises or understands."""


class NonRetriableError(StepstreamError):
    """Raise inside a step to fail it at once, without the remaining retries."""


class RetryAfterError(StepstreamError):
    """Raise inside a step to have it retried after ``delay`` instead of the backoff.

    Args:
        message: what went wrong.
        delay: how long to wait before the next attempt.
    """

    def __init__(self, message: str, delay: timedelta | float) -> None:
        super().__init__(message)
        self.delay = delay if isinstance(delay, timedelta) else timedelta(seconds=delay)


class StepError(StepstreamError):
    """A step failed for good; raised at its ``step.run`` call when the handler is replayed.

    Attributes:
        step_id: the step that failed.
        error_type: the class name of the original exception.
        error_message: its message.
        traceback: its formatted traceback, as captured on the worker that ran it.
    """

    def __init__(self, step_id: str, error_type: str, error_message: str, traceback: str) -> None:
        super().__init__(f"step {step_id!r} failed: {error_type}: {error_message}")
        self.step_id = step_id
        self.error_type = error_type
        self.error_message = error_message
        self.traceback = traceback


class NondeterminismError(StepstreamError):
    """The handler took another path on replay than the one its memo records."""


class ReplayMismatch(NondeterminismError):
    """New code would take another path than a recorded run (``stepstream.testing.replay``).

    Attributes:
        run_id: the recorded run.
        position: index of the first step that differs, in the run's order of steps.
        recorded_step: the step the recorded run took there (None: it had ended).
        new_step: the step the new code asks for instead (None: it returns or raises).
    """

    def __init__(self, run_id: str, position: int, recorded_step: str | None,
                 new_step: str | None, detail: str = "") -> None:
        new = repr(new_step) if new_step is not None else f"no step ({detail or 'it ends'})"
        super().__init__(f"run {run_id}: where the recorded run took step {recorded_step!r} "
                         f"(its step {position + 1}), the new code takes {new}")
        self.run_id, self.position = run_id, position
        self.recorded_step, self.new_step = recorded_step, new_step


class ConfigError(StepstreamError):
    """A setting or a function definition that cannot work; raised before anything runs."""


class SerializationError(StepstreamError):
    """A value that cannot be carried: not JSON-serializable, or over the size limit."""


class ExpressionError(StepstreamError):
    """A CEL expression failed when evaluated (``reason`` ``error``) or would have taken
    more than its budget (``budget``); the message names the expression."""

    def __init__(self, source: str, reason: Literal["error", "budget"], detail: str) -> None:
        what = "is over its evaluation budget" if reason == "budget" else "failed"
        super().__init__(f"CEL expression {source!r} {what}: {detail}")
        self.source, self.reason, self.detail = source, reason, detail


class ApiError(StepstreamError):
    """A worker's HTTP API refused a request (``status`` is its 4xx/5xx) or did not answer
    (``status`` 0); the message is the API's own explanation."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class RunFailed(StepstreamError):
    """A run whose result was waited for ended ``failed`` or ``cancelled``.

    Attributes:
        run_id: the run.
        status: ``"failed"`` or ``"cancelled"``.
        error_type: the class name of the error that ended it ("" when it has none).
        error_message: its message.
    """

    def __init__(self, run_id: str, status: str, error_type: str, error_message: str) -> None:
        detail = f": {error_type}: {error_message}" if error_type else ""
        super().__init__(f"run {run_id} {status}{detail}")
        self.run_id = run_id
        self.status = status
        self.error_type = error_type
        self.error_message = error_message
