"""The step toolkit beyond ``step.run`` (``stepstream.step``), through ``execute``:
discovery of parallel steps, targeted dispatches, sleeps, waits, invokes, send_event."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import stepstream.step
from schemas.messages import (
    ErrorInfo,
    Event,
    FunctionFinished,
    MemoEntry,
    PlannedStep,
    StepCompleted,
    StepFailed,
    StepPlanned,
    StepRequest,
)
from stepstream import Context, Settings, StepError, Stepstream
from stepstream.execution import execute
from stepstream.function import FunctionDef

LIMIT = 10_000
NOW = 1_700_000_000_000
EVENT = Event(id="evt-1", name="test/go", data_json='{"user":"ada"}', ts=3)
Handler = Callable[[Context], Awaitable[Any]]


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The toolkit's wall clock stands still, so planned times are exact."""
    monkeypatch.setattr(stepstream.step, "now_ms", lambda: NOW)


def define(handler: Handler, ss: Stepstream | None = None) -> FunctionDef:
    ss = ss or Stepstream(app_id="tests", settings=Settings())
    ss.function(id="fn", trigger=EVENT.name)(handler)
    return ss.functions["fn"]


def request(memo: dict[str, MemoEntry] | None = None, *, seq: int = 1, attempt: int = 0,
            target: str | None = None) -> StepRequest:
    return StepRequest(run_id="run-1", seq=seq, function_id="fn", event=EVENT, attempt=attempt,
                       memo=memo or {}, target=target)


async def run(handler: Handler, memo: dict[str, MemoEntry] | None = None,
              send_events: Any = None, **kwargs: Any) -> Any:
    return await execute(define(handler), request(memo, **kwargs), max_output_bytes=LIMIT,
                         send_events=send_events)


def done(output_json: str) -> MemoEntry:
    return MemoEntry(output_json=output_json)


class Calls:
    """Step functions that count how often they ran."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()

    def step(self, name: str, result: Any) -> Callable[[], Any]:
        def fn() -> Any:
            self.count[name] += 1
            return result
        return fn


def pair(calls: Calls) -> Handler:
    async def handler(ctx: Context) -> Any:
        return await asyncio.gather(ctx.step.run("a", calls.step("a", "A")),
                                    ctx.step.run("b", calls.step("b", "B")))
    return handler


# --- discovery of parallel steps -------------------------------------------------------


async def test_a_gather_of_two_steps_is_planned_and_neither_runs() -> None:
    calls = Calls()

    outcome = await run(pair(calls), seq=4)

    assert isinstance(outcome, StepPlanned)
    assert (outcome.run_id, outcome.seq, outcome.ts) == ("run-1", 4, NOW)
    assert outcome.steps == [PlannedStep(step_id="a", kind="run"),
                             PlannedStep(step_id="b", kind="run")]
    assert calls.count == {}


async def test_a_single_new_step_runs_at_once() -> None:
    calls = Calls()

    async def handler(ctx: Context) -> Any:
        return await ctx.step.run("only", calls.step("only", 1))

    outcome = await run(handler)

    assert isinstance(outcome, StepCompleted)
    assert (outcome.step_id, outcome.output_json) == ("only", "1")
    assert calls.count == {"only": 1}


async def test_a_gather_with_one_step_left_runs_that_step() -> None:
    calls = Calls()

    outcome = await run(pair(calls), {"a": done('"A"')})

    assert isinstance(outcome, StepCompleted) and outcome.step_id == "b"
    assert calls.count == {"b": 1}


async def test_the_handler_goes_on_when_every_parallel_step_is_saved() -> None:
    outcome = await run(pair(Calls()), {"a": done('"A"'), "b": done('"B"')})

    assert isinstance(outcome, FunctionFinished) and outcome.output_json == '["A","B"]'


async def test_repeated_ids_in_a_gather_are_numbered_in_call_order() -> None:
    async def handler(ctx: Context) -> Any:
        return await asyncio.gather(*[ctx.step.run("item", lambda i=i: i) for i in range(3)])

    outcome = await run(handler)

    assert [p.step_id for p in outcome.steps] == ["item", "item:1", "item:2"]


# --- targeted dispatches ---------------------------------------------------------------


@pytest.mark.parametrize("target", ["a", "b"])
async def test_a_target_dispatch_runs_only_the_target_inside_a_gather(target: str) -> None:
    calls = Calls()

    outcome = await run(pair(calls), target=target, attempt=2, seq=7)

    assert isinstance(outcome, StepCompleted)
    assert (outcome.step_id, outcome.attempt, outcome.seq) == (target, 2, 7)
    assert calls.count == {target: 1}


async def test_a_target_dispatch_reports_a_failure_of_the_target() -> None:
    def broken() -> None:
        raise RuntimeError("boom")

    async def handler(ctx: Context) -> Any:
        return await asyncio.gather(ctx.step.run("a", lambda: 1), ctx.step.run("b", broken))

    outcome = await run(handler, target="b", attempt=1)

    assert isinstance(outcome, StepFailed)
    assert (outcome.step_id, outcome.attempt, outcome.error.message) == ("b", 1, "boom")


async def test_a_target_runs_without_waiting_for_discovery_of_its_siblings() -> None:
    calls = Calls()

    async def handler(ctx: Context) -> Any:
        return await asyncio.gather(ctx.step.sleep("nap", 5), ctx.step.run("a", calls.step("a", 1)),
                                    ctx.step.wait_for_event("w", event="x/y", timeout=5))

    outcome = await run(handler, target="a")

    assert isinstance(outcome, StepCompleted) and outcome.step_id == "a"
    assert calls.count == {"a": 1}


async def test_a_sibling_s_saved_error_does_not_take_the_target_s_answer() -> None:
    # gather(a, b) with a failed for good and b retried: a's StepError reaches the handler
    # before b's outcome, but the dispatch answers for b; the run's end waits for the replay
    # with both saved.
    calls = Calls()
    failed_a = {"a": MemoEntry(error=ErrorInfo(type="E", message="a is broken"))}

    outcome = await run(pair(calls), failed_a, target="b", attempt=1)

    assert isinstance(outcome, StepCompleted)
    assert (outcome.step_id, outcome.attempt, outcome.output_json) == ("b", 1, '"B"')
    assert calls.count == {"b": 1}


async def test_a_handler_that_catches_a_sibling_s_error_does_not_end_the_dispatch() -> None:
    async def slow() -> str:
        for _ in range(10):
            await asyncio.sleep(0)  # the handler is done well before this step
        return "slow"

    async def handler(ctx: Context) -> Any:
        try:
            await asyncio.gather(ctx.step.run("a", lambda: 1), ctx.step.run("b", slow))
        except StepError:
            return "gave up"
        return "both"

    failed_a = {"a": MemoEntry(error=ErrorInfo(type="E", message="a is broken"))}

    outcome = await run(handler, failed_a, target="b")

    assert isinstance(outcome, StepCompleted)
    assert (outcome.step_id, outcome.output_json) == ("b", '"slow"')


async def test_a_target_that_is_never_reached_fails_with_nondeterminism() -> None:
    outcome = await run(pair(Calls()), target="gone")

    assert isinstance(outcome, FunctionFinished)
    assert outcome.error is not None and outcome.error.type == "NondeterminismError"
    assert "'gone'" in outcome.error.message


# --- sleep, wait_for_event, invoke -----------------------------------------------------


async def test_a_sleep_is_planned_until_now_plus_its_duration() -> None:
    async def handler(ctx: Context) -> Any:
        await ctx.step.sleep("nap", timedelta(minutes=2))
        await ctx.step.sleep("nap", 1.5)
        return "rested"

    first = await run(handler)
    second = await run(handler, {"nap": done("null")})
    last = await run(handler, {"nap": done("null"), "nap:1": done("null")})

    assert first.steps == [PlannedStep(step_id="nap", kind="sleep", until_ms=NOW + 120_000)]
    assert second.steps == [PlannedStep(step_id="nap:1", kind="sleep", until_ms=NOW + 1_500)]
    assert isinstance(last, FunctionFinished) and last.output_json == '"rested"'


async def test_sleep_until_plans_the_given_instant() -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)

    async def handler(ctx: Context) -> Any:
        await ctx.step.sleep_until("later", when)

    outcome = await run(handler)

    assert outcome.steps == [PlannedStep(step_id="later", kind="sleep",
                                         until_ms=int(when.timestamp()) * 1000)]


async def test_sleep_until_a_naive_datetime_fails_the_function() -> None:
    async def handler(ctx: Context) -> Any:
        await ctx.step.sleep_until("later", datetime(2030, 1, 2))

    outcome = await run(handler)

    assert isinstance(outcome, FunctionFinished)
    assert outcome.error is not None and outcome.error.type == "ConfigError"


async def test_a_wait_is_planned_with_its_event_condition_and_deadline() -> None:
    seen: list[Any] = []

    async def handler(ctx: Context) -> Any:
        seen.append(await ctx.step.wait_for_event(
            "paid", event="orders/paid", timeout=timedelta(hours=1),
            if_="async.data.order == event.data.order"))
        return seen[-1]

    outcome = await run(handler)
    matched = await run(handler, {"paid": done('{"id":"e2","name":"orders/paid",'
                                               '"data":{"order":7},"ts":9}')})
    timed_out = await run(handler, {"paid": done("null")})

    assert outcome.steps == [PlannedStep(step_id="paid", kind="wait", until_ms=NOW + 3_600_000,
                                         event="orders/paid",
                                         condition="async.data.order == event.data.order")]
    assert seen == [{"id": "e2", "name": "orders/paid", "data": {"order": 7}, "ts": 9}, None]
    assert json.loads(matched.output_json)["data"] == {"order": 7}
    assert timed_out.output_json == "null"


async def test_a_bad_condition_built_at_run_time_fails_the_function() -> None:
    async def handler(ctx: Context) -> Any:
        condition = "async.data.n ==" + ""  # not a literal: compiled when reached
        return await ctx.step.wait_for_event("w", event="x/y", timeout=5, if_=condition)

    outcome = await run(handler)

    assert isinstance(outcome, FunctionFinished)
    assert outcome.error is not None and outcome.error.type == "ConfigError"


async def test_an_invoke_is_planned_with_the_child_function_and_its_data() -> None:
    ss = Stepstream(app_id="tests", settings=Settings())

    @ss.function(id="child-fn", trigger="child/go")
    async def child(ctx: Context) -> Any:
        return None

    async def handler(ctx: Context) -> Any:
        by_handler = await ctx.step.invoke("one", function=child, data={"n": 1})
        by_id = await ctx.step.invoke("two", function="other-fn")
        return [by_handler, by_id]

    function = define(handler, ss)
    first = await execute(function, request(), max_output_bytes=LIMIT)
    second = await execute(function, request({"one": done('{"r":1}')}), max_output_bytes=LIMIT)
    last = await execute(function, request({"one": done('{"r":1}'), "two": done("2")}),
                         max_output_bytes=LIMIT)

    assert first.steps == [PlannedStep(step_id="one", kind="invoke", function_id="child-fn",
                                       data_json='{"n":1}')]
    assert second.steps == [PlannedStep(step_id="two", kind="invoke", function_id="other-fn",
                                        data_json="{}")]
    assert last.output_json == '[{"r":1},2]'


async def test_an_invoke_plans_its_timeout_and_what_becomes_of_the_child() -> None:
    async def handler(ctx: Context) -> Any:
        return await ctx.step.invoke("one", function="child-fn", timeout=timedelta(seconds=2),
                                     on_parent_cancel="abandon")

    planned = await execute(define(handler, Stepstream("t")), request(),
                            max_output_bytes=LIMIT)
    assert planned.steps == [PlannedStep(step_id="one", kind="invoke", function_id="child-fn",
                                         data_json="{}", on_parent_cancel="abandon",
                                         timeout_ms=2000)]


async def test_a_child_run_that_failed_raises_step_error_in_the_parent() -> None:
    caught: list[StepError] = []

    async def handler(ctx: Context) -> Any:
        try:
            await ctx.step.invoke("call", function="child-fn")
        except StepError as exc:
            caught.append(exc)
        return "handled"

    error = ErrorInfo(type="Cancelled", message="by ops")
    outcome = await run(handler, {"call": MemoEntry(error=error)})

    (exc,) = caught
    assert (exc.step_id, exc.error_type, exc.error_message) == ("call", "Cancelled", "by ops")
    assert outcome.output_json == '"handled"'


async def test_invoking_a_function_that_is_not_registered_fails_the_function() -> None:
    async def unregistered(ctx: Context) -> None:
        return None

    async def handler(ctx: Context) -> Any:
        return await ctx.step.invoke("call", function=unregistered)

    outcome = await run(handler)

    assert isinstance(outcome, FunctionFinished)
    assert outcome.error is not None and outcome.error.type == "ConfigError"


async def test_a_step_and_a_sleep_in_parallel_are_planned_together() -> None:
    async def handler(ctx: Context) -> Any:
        return await asyncio.gather(ctx.step.run("a", lambda: 1), ctx.step.sleep("nap", 60))

    outcome = await run(handler)

    assert outcome.steps == [PlannedStep(step_id="a", kind="run"),
                             PlannedStep(step_id="nap", kind="sleep", until_ms=NOW + 60_000)]


# --- send_event ------------------------------------------------------------------------


class Outbox:
    """A fake producer for ``send_event``."""

    def __init__(self) -> None:
        self.sent: list[Event] = []

    async def __call__(self, events: list[Event]) -> None:
        self.sent.extend(events)


async def test_send_event_gives_events_ids_fixed_by_the_run_and_the_step() -> None:
    outbox = Outbox()

    async def handler(ctx: Context) -> Any:
        return await ctx.step.send_event("notify", [
            {"name": "mail/send", "data": {"to": "ada"}},
            {"name": "mail/send", "data": {"to": "bob"}, "id": "chosen"},
            {"name": "sms/send"}])

    outcome = await run(handler, send_events=outbox)
    again = await run(handler, send_events=outbox)  # the step ran twice (a crash)

    assert isinstance(outcome, StepCompleted) and outcome.step_id == "notify"
    assert json.loads(outcome.output_json) == ["run-1:notify:0", "chosen", "run-1:notify:2"]
    assert [(e.id, e.name, e.data_json, e.ts) for e in outbox.sent[:3]] == [
        ("run-1:notify:0", "mail/send", '{"to":"ada"}', NOW),
        ("chosen", "mail/send", '{"to":"bob"}', NOW),
        ("run-1:notify:2", "sms/send", "{}", NOW)]
    assert outbox.sent[3:] == outbox.sent[:3]
    assert again.output_json == outcome.output_json


async def test_a_repeated_send_event_step_sends_new_events() -> None:
    outbox = Outbox()

    async def handler(ctx: Context) -> Any:
        for n in range(2):
            await ctx.step.send_event("notify", {"name": "tick", "data": {"n": n}})

    first = await run(handler, send_events=outbox)
    second = await run(handler, {"notify": done(first.output_json)}, send_events=outbox)

    assert second.step_id == "notify:1"
    assert [e.id for e in outbox.sent] == ["run-1:notify:0", "run-1:notify:1:0"]


async def test_a_saved_send_event_step_sends_nothing() -> None:
    outbox = Outbox()

    async def handler(ctx: Context) -> Any:
        return await ctx.step.send_event("notify", {"name": "tick"})

    outcome = await run(handler, {"notify": done('["run-1:notify:0"]')}, send_events=outbox)

    assert outcome.output_json == '["run-1:notify:0"]'
    assert outbox.sent == []


async def test_send_event_without_a_producer_fails_the_step() -> None:
    async def handler(ctx: Context) -> Any:
        return await ctx.step.send_event("notify", {"name": "tick"})

    outcome = await run(handler)

    assert isinstance(outcome, StepFailed)
    assert outcome.error.type == "ConfigError"
