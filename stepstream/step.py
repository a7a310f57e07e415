"""The step toolkit a handler calls: ``await step.run("id", fn, *args)``.

Deterministic replay (DESIGN §2): the handler runs from the top on every
dispatch. A step whose id is in the memo returns its saved output at once; the
first step that is not is executed, its outcome is raised as a ``StepInterrupt``
and the handler stops there. The interrupt is a ``BaseException`` so that a
user's ``except Exception`` cannot swallow it.
"""

from __future__ import annotations

import inspect
import json
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, TypeVarTuple

from schemas.messages import ErrorInfo, MemoEntry, StepCompleted, StepFailed, StepRequest
from stepstream.errors import (
    NonRetriableError,
    RetryAfterError,
    SerializationError,
    StepError,
)
from stepstream.events import dumps

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class StepInterrupt(BaseException):
    """A step ran on this dispatch; the handler must stop and report ``outcome``."""

    def __init__(self, outcome: StepCompleted | StepFailed) -> None:
        super().__init__(outcome.step_id)
        self.outcome = outcome


def error_info(exc: BaseException) -> ErrorInfo:
    """An exception as it will be stored and shown."""
    return ErrorInfo(type=type(exc).__name__, message=str(exc),
                     traceback="".join(traceback.format_exception(exc)))


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


class Step:
    """The step toolkit of one dispatch of one run."""

    def __init__(self, request: StepRequest, *, max_output_bytes: int) -> None:
        self._request = request
        self._memo: dict[str, MemoEntry] = request.memo
        self._max_output_bytes = max_output_bytes
        self._seen: dict[str, int] = {}

    def _unique_id(self, step_id: str) -> str:
        # Repeated ids in one run get ":1", ":2" suffixes, as Inngest does, so a step
        # called in a loop is memoized per iteration.
        count = self._seen.get(step_id, 0)
        self._seen[step_id] = count + 1
        return step_id if count == 0 else f"{step_id}:{count}"

    async def run(self, step_id: str, fn: Callable[[*Ts], Awaitable[T] | T],
                  *args: *Ts) -> T:
        """Run ``fn(*args)`` as a durable step, or return its saved output.

        Args:
            step_id: unique within the run and stable across deploys; the memo key.
            fn: sync or async callable; its return value must be JSON-serializable.
            *args: JSON-serializable arguments.

        Returns:
            The step's output, as JSON round-tripped (tuples come back as lists).

        Raises:
            StepError: the step failed for good, after its retries.
        """
        if not step_id:
            raise ValueError("a step needs a non-empty id")
        unique = self._unique_id(step_id)
        saved = self._memo.get(unique)
        if saved is not None:
            if saved.error is not None:
                raise StepError(unique, saved.error.type, saved.error.message,
                                saved.error.traceback)
            return json.loads(saved.output_json or "null")  # type: ignore[no-any-return]
        raise StepInterrupt(await self._execute(unique, fn, args))

    async def _execute(self, step_id: str, fn: Callable[..., Any],
                       args: tuple[Any, ...]) -> StepCompleted | StepFailed:
        request, started = self._request, now_ms()
        try:
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await result
            output = dumps(result, limit=self._max_output_bytes,
                           what=f"output of step {step_id!r}")
        except Exception as exc:
            retry_after = None
            if isinstance(exc, RetryAfterError):
                retry_after = int(exc.delay.total_seconds() * 1000)
            retriable = not isinstance(exc, NonRetriableError | SerializationError)
            return StepFailed(run_id=request.run_id, seq=request.seq, step_id=step_id,
                              attempt=request.attempt, error=error_info(exc),
                              retriable=retriable, started_at=started, ended_at=now_ms(),
                              retry_after_ms=retry_after)
        return StepCompleted(run_id=request.run_id, seq=request.seq, step_id=step_id,
                             attempt=request.attempt, output_json=output,
                             started_at=started, ended_at=now_ms())
