"""Deterministic replay of a handler (``stepstream.execution.execute``), no Kafka."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from schemas.messages import (
    ErrorInfo,
    Event,
    FunctionFinished,
    MemoEntry,
    StepCompleted,
    StepFailed,
    StepRequest,
)
from stepstream import (
    Context,
    NonRetriableError,
    RetryAfterError,
    Settings,
    StepError,
    Stepstream,
)
from stepstream.execution import execute
from stepstream.function import FunctionDef

LIMIT = 1_000
EVENT = Event(id="evt-1", name="test/go", data_json='{"user": "ada"}', ts=3)
Handler = Callable[[Context], Awaitable[Any]]


def define(handler: Handler) -> FunctionDef:
    ss = Stepstream(app_id="tests", settings=Settings())
    ss.function(id="fn", trigger=EVENT.name)(handler)
    return ss.functions["fn"]


def request(memo: dict[str, MemoEntry] | None = None, *, seq: int = 1,
            attempt: int = 0) -> StepRequest:
    return StepRequest(run_id="run-1", seq=seq, function_id="fn", event=EVENT, attempt=attempt,
                       memo=memo or {})


def done(output_json: str) -> MemoEntry:
    return MemoEntry(output_json=output_json)


async def run(handler: Handler, memo: dict[str, MemoEntry] | None = None, **kwargs: Any) -> Any:
    return await execute(define(handler), request(memo, **kwargs), max_output_bytes=LIMIT)


class Calls:
    """Step functions that count how often they ran."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()

    def step(self, name: str, result: Any) -> Callable[[], Any]:
        def fn() -> Any:
            self.count[name] += 1
            return result
        return fn


async def test_the_first_dispatch_runs_the_first_step_only() -> None:
    calls = Calls()

    async def handler(ctx: Context) -> Any:
        a = await ctx.step.run("a", calls.step("a", {"n": 1}))
        return await ctx.step.run("b", calls.step("b", a))

    outcome = await run(handler, seq=4, attempt=2)

    assert isinstance(outcome, StepCompleted)
    assert (outcome.run_id, outcome.seq, outcome.step_id, outcome.attempt) == ("run-1", 4, "a", 2)
    assert outcome.output_json == '{"n":1}'
    assert outcome.started_at <= outcome.ended_at
    assert calls.count == {"a": 1}


async def test_a_memoized_step_is_not_run_again_and_the_next_one_runs() -> None:
    calls = Calls()
    seen: list[Any] = []

    async def handler(ctx: Context) -> Any:
        a = await ctx.step.run("a", calls.step("a", "fresh"))
        seen.append(a)
        return await ctx.step.run("b", calls.step("b", [a, 2]))

    outcome = await run(handler, {"a": done('{"saved": [1, 2]}')}, seq=2)

    assert calls.count == {"b": 1}
    assert seen == [{"saved": [1, 2]}]
    assert isinstance(outcome, StepCompleted)
    assert (outcome.step_id, outcome.seq, outcome.output_json) == (
        "b", 2, '[{"saved":[1,2]},2]')


async def test_the_handler_sees_outputs_as_json_round_trips_them() -> None:
    seen: list[Any] = []

    async def handler(ctx: Context) -> Any:
        seen.append(await ctx.step.run("a", lambda: (1, 2)))
        return None

    first = await run(handler)
    await run(handler, {"a": done(first.output_json)})

    assert seen == [[1, 2]]


async def test_repeated_step_ids_get_numbered_suffixes() -> None:
    async def handler(ctx: Context) -> Any:
        return [await ctx.step.run("item", lambda i=i: i * 10) for i in range(3)]

    first = await run(handler)
    second = await run(handler, {"item": done("0")})
    third = await run(handler, {"item": done("0"), "item:1": done("10")})
    last = await run(handler, {"item": done("0"), "item:1": done("10"), "item:2": done("20")})

    assert [first.step_id, second.step_id, third.step_id] == ["item", "item:1", "item:2"]
    assert [first.output_json, second.output_json, third.output_json] == ["0", "10", "20"]
    assert isinstance(last, FunctionFinished) and last.output_json == "[0,10,20]"


async def test_sync_and_async_step_functions_both_work() -> None:
    async def slow_double(x: int) -> int:
        return x * 2

    def triple(x: int) -> int:
        return x * 3

    async def handler(ctx: Context) -> Any:
        a = await ctx.step.run("async", slow_double, 5)
        b = await ctx.step.run("sync", triple, a)
        return a + b

    first = await run(handler)
    second = await run(handler, {"async": done(first.output_json)})
    last = await run(handler, {"async": done("10"), "sync": done(second.output_json)})

    assert first.output_json == "10"
    assert second.output_json == "30"
    assert last.output_json == "40"


async def test_the_handler_gets_the_event_run_id_and_attempt() -> None:
    seen: dict[str, Any] = {}

    async def handler(ctx: Context) -> Any:
        seen.update(event=ctx.event, run_id=ctx.run_id, attempt=ctx.attempt)
        return ctx.event.data["user"]

    outcome = await run(handler, attempt=2)

    assert (seen["event"].id, seen["event"].name, seen["event"].data, seen["event"].ts) == (
        "evt-1", "test/go", {"user": "ada"}, 3)
    assert (seen["run_id"], seen["attempt"]) == ("run-1", 2)
    assert outcome.output_json == '"ada"'


async def test_an_ordinary_exception_is_a_retriable_failure() -> None:
    def broken() -> None:
        raise ConnectionError("db down")

    async def handler(ctx: Context) -> Any:
        return await ctx.step.run("a", broken)

    outcome = await run(handler, attempt=1, seq=3)

    assert isinstance(outcome, StepFailed)
    assert (outcome.step_id, outcome.seq, outcome.attempt) == ("a", 3, 1)
    assert outcome.retriable is True and outcome.retry_after_ms is None
    assert (outcome.error.type, outcome.error.message) == ("ConnectionError", "db down")
    assert "broken" in outcome.error.traceback


async def test_non_retriable_error_is_not_retriable() -> None:
    def refuse() -> None:
        raise NonRetriableError("bad input")

    async def handler(ctx: Context) -> Any:
        return await ctx.step.run("a", refuse)

    outcome = await run(handler)

    assert isinstance(outcome, StepFailed)
    assert outcome.retriable is False
    assert (outcome.error.type, outcome.error.message) == ("NonRetriableError", "bad input")


async def test_retry_after_error_carries_its_delay() -> None:
    def later(delay: float) -> None:
        raise RetryAfterError("rate limited", timedelta(seconds=delay))

    def later_in_seconds() -> None:
        raise RetryAfterError("rate limited", 1.5)

    async def handler(ctx: Context) -> Any:
        return await ctx.step.run("a", later, 2.25)

    async def handler_seconds(ctx: Context) -> Any:
        return await ctx.step.run("a", later_in_seconds)

    outcome = await run(handler)
    outcome_seconds = await run(handler_seconds)

    assert isinstance(outcome, StepFailed)
    assert outcome.retriable is True and outcome.retry_after_ms == 2_250
    assert outcome_seconds.retry_after_ms == 1_500


async def test_a_step_that_failed_for_good_raises_step_error_the_handler_can_catch() -> None:
    caught: list[StepError] = []
    error = ErrorInfo(type="ValueError", message="nope", traceback="Traceback: here")

    async def handler(ctx: Context) -> Any:
        try:
            await ctx.step.run("a", lambda: "never runs")
        except StepError as exc:
            caught.append(exc)
            return await ctx.step.run("fallback", lambda: "plan b")
        return "unreachable"

    outcome = await run(handler, {"a": MemoEntry(error=error)})

    (exc,) = caught
    assert (exc.step_id, exc.error_type, exc.error_message, exc.traceback) == (
        "a", "ValueError", "nope", "Traceback: here")
    assert isinstance(outcome, StepCompleted)
    assert (outcome.step_id, outcome.output_json) == ("fallback", '"plan b"')


async def test_an_uncaught_step_error_fails_the_function() -> None:
    async def handler(ctx: Context) -> Any:
        return await ctx.step.run("a", lambda: 1)

    outcome = await run(handler, {"a": MemoEntry(error=ErrorInfo(type="E", message="m"))})

    assert isinstance(outcome, FunctionFinished)
    assert outcome.output_json is None
    assert outcome.error.type == "StepError"
    assert outcome.error.message == "step 'a' failed: E: m"


async def test_a_step_output_that_is_not_json_fails_without_retries() -> None:
    async def handler(ctx: Context) -> Any:
        return await ctx.step.run("a", lambda: {"when": object()})

    outcome = await run(handler)

    assert isinstance(outcome, StepFailed)
    assert outcome.retriable is False
    assert outcome.error.type == "SerializationError"
    assert "output of step 'a' is not JSON-serializable" in outcome.error.message


async def test_a_step_output_over_the_limit_fails_clearly() -> None:
    async def handler(ctx: Context) -> Any:
        return await ctx.step.run("big", lambda: "x" * LIMIT)

    outcome = await run(handler)

    assert isinstance(outcome, StepFailed)
    assert outcome.retriable is False
    assert outcome.error.type == "SerializationError"
    assert f"output of step 'big' is {LIMIT + 2} bytes of JSON, over the limit of {LIMIT}" == (
        outcome.error.message)


async def test_a_handler_that_returns_finishes_the_function() -> None:
    async def handler(ctx: Context) -> Any:
        a = await ctx.step.run("a", lambda: 2)
        return {"total": a + 1}

    outcome = await run(handler, {"a": done("2")}, seq=2)

    assert isinstance(outcome, FunctionFinished)
    assert (outcome.run_id, outcome.seq, outcome.output_json, outcome.error) == (
        "run-1", 2, '{"total":3}', None)


async def test_a_handler_without_steps_finishes_at_once() -> None:
    async def handler(ctx: Context) -> Any:
        return None

    outcome = await run(handler)

    assert isinstance(outcome, FunctionFinished) and outcome.output_json == "null"


async def test_a_handler_that_raises_outside_steps_fails_the_function() -> None:
    async def handler(ctx: Context) -> Any:
        await ctx.step.run("a", lambda: 1)
        raise KeyError("missing")

    outcome = await run(handler, {"a": done("1")})

    assert isinstance(outcome, FunctionFinished)
    assert outcome.output_json is None
    assert (outcome.error.type, outcome.error.message) == ("KeyError", "'missing'")


async def test_a_return_value_that_is_not_json_fails_the_function() -> None:
    async def handler(ctx: Context) -> Any:
        return {1, 2}

    outcome = await run(handler)

    assert isinstance(outcome, FunctionFinished)
    assert outcome.error.type == "SerializationError"
    assert "return value of 'fn' is not JSON-serializable" in outcome.error.message


async def test_except_exception_around_a_step_does_not_swallow_the_interrupt() -> None:
    calls = Calls()
    swallowed: list[BaseException] = []

    async def handler(ctx: Context) -> Any:
        try:
            await ctx.step.run("a", calls.step("a", 1))
        except Exception as exc:  # what careless user code does
            swallowed.append(exc)
        return await ctx.step.run("b", calls.step("b", 2))

    outcome = await run(handler)

    assert swallowed == []
    assert calls.count == {"a": 1}
    assert isinstance(outcome, StepCompleted) and outcome.step_id == "a"


async def test_except_exception_around_a_failing_step_does_not_hide_the_failure() -> None:
    def broken() -> None:
        raise RuntimeError("boom")

    async def handler(ctx: Context) -> Any:
        try:
            await ctx.step.run("a", broken)
        except Exception:
            return "swallowed"
        return "unreachable"

    outcome = await run(handler)

    assert isinstance(outcome, StepFailed) and outcome.error.message == "boom"


async def test_an_empty_step_id_fails_the_function() -> None:
    async def handler(ctx: Context) -> Any:
        return await ctx.step.run("", lambda: 1)

    outcome = await run(handler)

    assert isinstance(outcome, FunctionFinished)
    assert outcome.error.type == "ValueError"


async def test_step_arguments_are_passed_through() -> None:
    async def handler(ctx: Context) -> Any:
        return await ctx.step.run("add", lambda a, b: a + b, 2, 3)

    outcome = await run(handler)

    assert outcome.output_json == "5"
