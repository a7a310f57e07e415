"""Log lines of a run (``stepstream.logs``): captured per dispatch, never duplicated by replay."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from schemas.messages import (
    Event,
    FunctionFinished,
    LogLine,
    MemoEntry,
    StepCompleted,
    StepFailed,
    StepRequest,
)
from stepstream import Context, Settings, Stepstream
from stepstream.execution import execute
from stepstream.logs import MAX_LINE_BYTES, MAX_LINES, clip

EVENT = Event(id="evt-1", name="test/go", data_json="{}", ts=3)
Handler = Callable[[Context], Awaitable[Any]]
app_log = logging.getLogger("tests.app")


def define(handler: Handler) -> Any:
    ss = Stepstream(app_id="tests", settings=Settings())
    ss.function(id="fn", trigger=EVENT.name)(handler)
    return ss.functions["fn"]


async def dispatch(handler: Handler, memo: dict[str, MemoEntry] | None = None, *,
                   target: str | None = None, attempt: int = 0) -> Any:
    request = StepRequest(run_id="run-1", seq=1, function_id="fn", event=EVENT,
                          attempt=attempt, memo=memo or {}, target=target)
    return await execute(define(handler), request, max_output_bytes=10_000)


def lines(outcome: Any) -> list[tuple[str | None, str, str]]:
    return [(line.step_id, line.level, line.message) for line in outcome.logs]


async def three_steps(ctx: Context) -> str:
    ctx.logger.info("starting for %s", ctx.event.name)

    def a() -> int:
        ctx.logger.info("in a")
        return 1

    def b() -> int:
        ctx.logger.warning("in b")
        return 2

    await ctx.step.run("a", a)
    ctx.logger.info("a is done")
    await ctx.step.run("b", b)
    ctx.logger.info("all done")
    return "ok"


DONE = MemoEntry(output_json="1")


async def test_the_first_dispatch_keeps_the_handlers_lines_and_its_steps() -> None:
    outcome = await dispatch(three_steps)

    assert isinstance(outcome, StepCompleted)
    assert lines(outcome) == [(None, "INFO", "starting for test/go"), ("a", "INFO", "in a")]
    assert all(isinstance(line, LogLine) and line.ts > 0 for line in outcome.logs)


async def test_a_replay_drops_the_lines_of_memoized_steps_and_keeps_what_is_new() -> None:
    second = await dispatch(three_steps, {"a": DONE})
    last = await dispatch(three_steps, {"a": DONE, "b": MemoEntry(output_json="2")})

    assert lines(second) == [(None, "INFO", "a is done"), ("b", "WARNING", "in b")]
    assert isinstance(last, FunctionFinished)
    assert lines(last) == [(None, "INFO", "all done")]


async def test_a_targeted_dispatch_keeps_only_its_targets_lines() -> None:
    async def handler(ctx: Context) -> None:
        ctx.logger.info("fanning out")

        def work(name: str) -> str:
            ctx.logger.info("working on %s", name)
            return name

        await asyncio.gather(ctx.step.run("x", work, "x"), ctx.step.run("y", work, "y"))

    outcome = await dispatch(handler, target="y", attempt=1)

    assert isinstance(outcome, StepCompleted)
    assert lines(outcome) == [("y", "INFO", "working on y")]


async def test_a_failed_step_carries_its_lines_with_the_traceback_of_a_logged_exception(
        ) -> None:
    async def handler(ctx: Context) -> None:
        def boom() -> None:
            try:
                {}["missing"]
            except KeyError:
                ctx.logger.exception("lookup failed")
            raise RuntimeError("no luck")

        await ctx.step.run("boom", boom)

    outcome = await dispatch(handler)

    assert isinstance(outcome, StepFailed)
    ((step_id, level, message),) = lines(outcome)
    assert (step_id, level) == ("boom", "ERROR")
    assert message.startswith("lookup failed\nTraceback")
    assert "KeyError: 'missing'" in message


async def test_python_logging_inside_a_step_is_captured_with_the_loggers_level() -> None:
    async def handler(ctx: Context) -> None:
        def step() -> None:
            app_log.warning("disk at %d%%", 91)
            app_log.debug("not let through by the logger's level")
            logging.getLogger("confluent_kafka").warning("the engine's libraries are not the run's")
        await ctx.step.run("s", step)

    app_log.setLevel(logging.INFO)
    outcome = await dispatch(handler)

    assert lines(outcome) == [("s", "WARNING", "disk at 91%")]


async def test_ctx_logger_records_carry_run_step_and_attempt(
        caplog: pytest.LogCaptureFixture) -> None:
    async def handler(ctx: Context) -> None:
        await ctx.step.run("s", lambda: ctx.logger.warning("hello"))

    with caplog.at_level(logging.INFO, logger="stepstream.function"):
        outcome = await dispatch(handler, attempt=2)

    (record,) = [r for r in caplog.records if r.getMessage() == "hello"]
    assert (record.run_id, record.step_id, record.attempt, record.function_id) == (  # type: ignore[attr-defined]
        "run-1", "s", 2, "fn")
    assert lines(outcome) == [("s", "WARNING", "hello")]  # once, not again through logging


async def test_lines_are_capped_per_dispatch_and_per_line() -> None:
    async def handler(ctx: Context) -> None:
        def chatty() -> None:
            ctx.logger.info("x" * (MAX_LINE_BYTES * 2))
            for i in range(MAX_LINES + 49):
                ctx.logger.info("line %d", i)
        await ctx.step.run("chatty", chatty)

    outcome = await dispatch(handler)

    assert len(outcome.logs) == MAX_LINES + 1
    assert len(outcome.logs[0].message.encode()) <= MAX_LINE_BYTES
    assert outcome.logs[0].message.endswith("bytes cut]")
    assert outcome.logs[-1].message == (
        f"50 more log lines dropped (at most {MAX_LINES} per dispatch)")


async def test_concurrent_dispatches_do_not_mix_their_lines() -> None:
    def handler_for(name: str) -> Handler:
        async def handler(ctx: Context) -> None:
            async def step() -> None:
                for i in range(3):
                    app_log.warning("%s %d", name, i)
                    await asyncio.sleep(0)
            await ctx.step.run("s", step)
        return handler

    first, second = await asyncio.gather(dispatch(handler_for("one")),
                                         dispatch(handler_for("two")))

    assert [m for _, _, m in lines(first)] == ["one 0", "one 1", "one 2"]
    assert [m for _, _, m in lines(second)] == ["two 0", "two 1", "two 2"]


async def test_no_lines_outside_a_dispatch() -> None:
    app_log.warning("nobody collects this")  # must not fail, nor land in the next dispatch
    outcome = await dispatch(three_steps)
    assert "nobody collects this" not in [m for _, _, m in lines(outcome)]


def test_clip_cuts_on_a_character_boundary() -> None:
    text = "é" * 3000

    cut = clip(text, 101)

    assert len(cut.encode()) <= 101
    assert cut.startswith("é" * 10)
    assert clip("short") == "short"
