"""Log lines of a run: what ``ctx.logger`` and Python logging emit during a dispatch.

Each dispatch of a handler collects the lines it emits and sends them back with
its outcome (``StepCompleted.logs`` and its siblings); the orchestrator copies
them into the history record of that outcome, so they reach the run's timeline.

Deterministic replay re-runs the handler from the top, so code before the first
new step runs again on every dispatch. Its lines were kept by the dispatch that
first ran that code, and are dropped when replayed:

- a dispatch keeps the lines emitted inside the step it runs, and the handler's
  lines once every memoized step has been returned (the handler is past what
  earlier dispatches ran);
- a dispatch with a ``target`` (a retry, or one of parallel steps) keeps only the
  lines of its target: the handler around it was logged by the dispatch that
  planned it.

Lines are capped per dispatch (``MAX_LINES``, then one line saying how many were
dropped) and per line (``MAX_LINE_BYTES`` of UTF-8). Python ``logging`` records
reach the run through ``CaptureHandler`` on the root logger, which looks up the
dispatch in a context variable: records emitted by other tasks (other
dispatches, the engine) are not mixed in. They follow the logging levels as
usual: ``logging.getLogger("app").setLevel(logging.INFO)`` lets INFO through.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import sys
import time
import traceback
import typing
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from schemas.messages import LogLine, StepRequest

Execute = TypeVar("Execute", bound=Callable[..., Awaitable[Any]])

MAX_LINES = 100
"""Lines kept per dispatch; more are counted and reported as one line."""
MAX_LINE_BYTES = 2048
"""Longest line kept, in bytes of UTF-8; longer ones are cut."""
CAPTURE_LEVEL = logging.INFO
"""Lowest level of ``ctx.logger`` lines kept in the run's history."""

# Loggers of the engine and its libraries: their records during a dispatch are not the run's.
_NOT_THE_RUNS = ("stepstream.engine", "stepstream.worker", "stepstream.monitor",
                 "stepstream.runtime", "stepstream.task", "stepstream.store",
                 "stepstream.executor", "stepstream.sender", "confluent_kafka", "kafka",
                 "asyncio", "urllib3", "redis")

_collector: ContextVar[Collector | None] = ContextVar("stepstream_log_collector", default=None)
_step: ContextVar[str | None] = ContextVar("stepstream_log_step", default=None)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def clip(text: str, limit: int = MAX_LINE_BYTES) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8, marked when cut."""
    raw = text.encode("utf-8", errors="replace")
    if len(raw) <= limit:
        return text
    marker = f" … [{len(raw) - limit} bytes cut]"
    return raw[:limit - len(marker.encode())].decode("utf-8", errors="ignore") + marker


class Collector:
    """The lines of one dispatch.

    Args:
        target: the step the dispatch must run, if it is targeted.
        memo_size: how many memoized steps the dispatch starts with.
    """

    def __init__(self, *, target: str | None, memo_size: int) -> None:
        self.target, self.memo_size = target, memo_size
        self.replayed = 0
        """Memoized steps given back to the handler so far (``memo_returned``)."""
        self.kept = 0
        self.dropped = 0
        self.closed = False
        self._lines: list[LogLine] = []

    def keeps(self, step_id: str | None) -> bool:
        """Whether a line emitted now, in ``step_id`` (None: outside steps), is new."""
        if self.target is not None:
            return step_id == self.target
        return step_id is not None or self.replayed >= self.memo_size

    def add(self, level: str, message: str, ts: int | None = None) -> None:
        """Keep a line, unless it is a replay, the dispatch is over or the cap is hit."""
        step_id = _step.get()
        if self.closed or not self.keeps(step_id):
            return
        if self.kept >= MAX_LINES:
            self.dropped += 1
            return
        self.kept += 1
        self._lines.append(LogLine(ts=_now_ms() if ts is None else ts, level=level,
                                   message=clip(message), step_id=step_id))

    def take(self) -> list[LogLine]:
        """The lines kept since the last call (and a note of what the cap dropped)."""
        lines, self._lines = self._lines, []
        if self.dropped:
            lines.append(LogLine(ts=_now_ms(), level="WARNING", step_id=None, message=(
                f"{self.dropped} more log lines dropped (at most {MAX_LINES} per dispatch)")))
            self.dropped = 0
        return lines


@contextmanager
def collecting(collector: Collector) -> Iterator[Collector]:
    """Collect the lines emitted in this context (and the tasks it starts) into ``collector``."""
    install_capture()
    token = _collector.set(collector)
    try:
        yield collector
    finally:
        _collector.reset(token)
        collector.closed = True  # tasks the handler left behind may still log: not this run's


def memo_returned() -> None:
    """The step toolkit gave a memoized step's result back to the handler."""
    collector = _collector.get()
    if collector is not None:
        collector.replayed += 1


def take_lines() -> list[LogLine]:
    """The current dispatch's lines since the last call; [] outside a dispatch.

    For an outcome reported before the dispatch ends (a link of an eager chain).
    """
    collector = _collector.get()
    return collector.take() if collector is not None else []


async def in_step(step_id: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Call a step's ``fn(*args)`` (awaiting it if async), its lines tagged ``step_id``."""
    token = _step.set(step_id)
    try:
        result = fn(*args)
        if inspect.isawaitable(result):
            result = await result
        return result
    finally:
        _step.reset(token)


def with_logs(execute: Execute) -> Execute:
    """Wrap ``stepstream.execution.execute``: collect the dispatch's lines into its outcomes.

    Outcomes reported before the dispatch ends (``on_progress``, an eager chain) carry the
    lines emitted up to then; the final outcome carries the rest.
    """

    @functools.wraps(execute)
    async def collected(function: Any, request: StepRequest, **kwargs: Any) -> Any:
        collector = Collector(target=request.target, memo_size=len(request.memo))
        progress = kwargs.get("on_progress")
        if progress is not None:
            async def report(outcome: Any) -> Any:
                return await progress(_with(outcome, collector.take()))  # its go-ahead

            kwargs["on_progress"] = report
        with collecting(collector):
            outcome = await execute(function, request, **kwargs)
        return _with(outcome, collector.take())

    return typing.cast(Execute, collected)


def _with(outcome: Any, lines: list[LogLine]) -> Any:
    if not lines or not hasattr(outcome, "logs"):  # an outcome that carries no lines
        return outcome
    return dataclasses.replace(outcome, logs=[*outcome.logs, *lines])


def current_step() -> str | None:
    """The step running in this context, if any."""
    return _step.get()


def replayed_here() -> bool:
    """Whether code running now was run by an earlier dispatch (the rule of log lines;
    ``ctx.progress`` follows it too)."""
    collector = _collector.get()
    return collector is not None and not collector.keeps(_step.get())


def _render(msg: object, args: tuple[Any, ...], exc_info: Any) -> str:
    try:
        text = str(msg) % args if args else str(msg)
    except (TypeError, ValueError):
        text = f"{msg} {args!r}"
    if exc_info:
        if isinstance(exc_info, BaseException):
            exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
        elif not isinstance(exc_info, tuple):
            exc_info = sys.exc_info()
        if exc_info[0] is not None:
            text += "\n" + "".join(traceback.format_exception(*exc_info)).rstrip()
    return text


class RunLogger(logging.LoggerAdapter[logging.Logger]):
    """``ctx.logger``: records carry ``run_id``, ``function_id``, ``attempt`` and
    ``step_id`` (as ``extra``), and lines at INFO or above go to the run's history
    whatever the logger's level.
    """

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[
            str, Any]]:
        base: Mapping[str, Any] = self.extra or {}
        kwargs["extra"] = {**base, "step_id": _step.get(), "stepstream_captured": True,
                           **kwargs.get("extra", {})}
        return msg, kwargs

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        collector = _collector.get()
        if collector is not None and level >= CAPTURE_LEVEL:
            collector.add(logging.getLevelName(level), _render(msg, args, kwargs.get("exc_info")))
        super().log(level, msg, *args, **kwargs)


class CaptureHandler(logging.Handler):
    """Root-logger handler: a record emitted during a dispatch becomes a line of the run."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter("%(message)s"))  # the traceback is appended

    def emit(self, record: logging.LogRecord) -> None:
        collector = _collector.get()
        if collector is None or getattr(record, "stepstream_captured", False):
            return
        if record.name.startswith(_NOT_THE_RUNS):
            return
        try:
            collector.add(record.levelname, self.format(record), ts=int(record.created * 1000))
        except Exception:  # logging must never break the step
            self.handleError(record)


_HANDLER = CaptureHandler()


def install_capture() -> None:
    """Put ``CaptureHandler`` on the root logger, again if logging was reconfigured."""
    root = logging.getLogger()
    if _HANDLER not in root.handlers:
        root.addHandler(_HANDLER)
