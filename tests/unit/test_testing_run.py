"""``stepstream.testing.run``: a function's run in process, as the engine runs it."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stepstream import (
    ConfigError,
    Context,
    NonRetriableError,
    RetryAfterError,
    Settings,
    StepError,
    Stepstream,
    Timeouts,
    TriggerEvent,
)
from stepstream.testing import run

ss = Stepstream(app_id="harness-tests", settings=Settings())
START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@ss.function(id="renewal", trigger="billing/trial.started", retries=3)
async def renewal(ctx: Context) -> dict[str, Any]:
    """Sleeps three days, then waits two days for the customer to subscribe."""
    await ctx.step.sleep("trial", timedelta(days=3))
    await ctx.step.run("remind", lambda: "reminded")
    subscribed = await ctx.step.wait_for_event(
        "subscribed", event="billing/subscribed", timeout=timedelta(days=2),
        if_="async.data.account == event.data.account")
    if subscribed is None:
        return {"subscribed": False}
    return {"subscribed": True, "plan": subscribed["data"]["plan"]}


async def test_a_three_day_sleep_and_a_two_day_wait_take_no_time() -> None:
    result = await run(renewal, {"account": "a1"}, events={"subscribed": None}, now=START)

    assert (result.status, result.output) == ("completed", {"subscribed": False})
    assert result.slept == [timedelta(days=3)]
    assert result.elapsed == timedelta(days=5)
    assert list(result.steps) == ["trial", "remind", "subscribed"]


async def test_a_wait_gets_the_event_given_for_it() -> None:
    result = await run(renewal, {"account": "a1"},
                       events={"subscribed": {"account": "a1", "plan": "pro"}}, now=START)

    assert result.output == {"subscribed": True, "plan": "pro"}
    assert result.steps["subscribed"]["name"] == "billing/subscribed"
    assert result.elapsed == timedelta(days=3)


async def test_an_event_that_misses_the_wait_condition_does_not_match() -> None:
    result = await run(renewal, {"account": "a1"},
                       events={"subscribed": {"account": "someone-else", "plan": "pro"}})

    assert result.output == {"subscribed": False}


async def test_a_whole_event_can_be_given() -> None:
    given = TriggerEvent(id="evt-9", name="billing/subscribed",
                         data={"account": "a1", "plan": "team"}, ts=0)

    result = await run(renewal, {"account": "a1"}, events={"subscribed": given})

    assert result.steps["subscribed"]["id"] == "evt-9"
    assert result.output == {"subscribed": True, "plan": "team"}


async def charge(ctx: Context) -> Any:
    receipt = await ctx.step.run("charge", lambda amount: {"charged": amount},
                                 ctx.event.data["amount"])
    await ctx.step.send_event("notify", {"name": "billing/charged", "data": receipt})
    return receipt


async def test_a_mock_list_gives_one_outcome_per_attempt_and_backoff_is_recorded() -> None:
    result = await run(charge, {"amount": 5}, mocks={"charge": [
        TimeoutError, ConnectionError("reset"), lambda amount: {"charged": amount * 2}]})

    assert (result.status, result.output) == ("completed", {"charged": 10})
    assert result.attempts["charge"] == 3
    delays = result.retry_delays["charge"]
    assert len(delays) == 2 and delays[0] <= timedelta(seconds=1) < delays[1]


async def test_a_mock_that_always_raises_fails_the_run_after_the_retries() -> None:
    result = await run(charge, {"amount": 5}, mocks={"charge": ValueError("declined")})

    assert result.status == "failed"
    assert result.attempts["charge"] == 4  # the default policy: 3 retries
    assert result.step_errors["charge"].message == "declined"
    assert result.error is not None and result.error.type == "StepError"


async def test_a_non_retriable_error_and_a_retry_after_are_the_engines() -> None:
    failed = await run(charge, {"amount": 5}, mocks={"charge": NonRetriableError("no")})
    later = await run(charge, {"amount": 5}, mocks={"charge": [
        RetryAfterError("busy", timedelta(hours=1)), "ok"]})

    assert (failed.status, failed.attempts["charge"]) == ("failed", 1)
    assert later.retry_delays["charge"] == [timedelta(hours=1)]


async def test_send_event_records_what_was_sent() -> None:
    result = await run(charge, {"amount": 7})

    assert [(e.name, e.data) for e in result.sent] == [("billing/charged", {"charged": 7})]
    assert result.steps["notify"] == [e.id for e in result.sent]


async def test_an_async_mock_gets_the_steps_arguments() -> None:
    seen: list[Any] = []

    async def fake(amount: int) -> dict[str, Any]:
        seen.append(amount)
        return {"charged": 0}

    result = await run(charge, {"amount": 3}, mocks={"charge": fake})

    assert seen == [3] and result.output == {"charged": 0}


async def test_outputs_take_the_engines_json_round_trip() -> None:
    async def handler(ctx: Context) -> Any:
        pair = await ctx.step.run("pair", lambda: (1, 2))
        return {"is_list": isinstance(pair, list)}

    assert (await run(handler)).output == {"is_list": True}


async def test_an_output_that_is_not_json_fails_the_step_as_in_the_engine() -> None:
    async def handler(ctx: Context) -> Any:
        return await ctx.step.run("when", lambda: datetime.now(UTC))

    result = await run(handler)

    assert result.status == "failed"
    assert result.step_errors["when"].type == "SerializationError"


async def test_invoke_gets_the_given_output_or_fails_with_the_given_error() -> None:
    async def parent(ctx: Context) -> Any:
        try:
            return await ctx.step.invoke("score", function="scorer", data={"n": 2})
        except StepError as exc:
            return f"failed: {exc.error_message}"

    ok = await run(parent, invoked={"scorer": lambda data: data["n"] * 10})
    failed = await run(parent, invoked={"scorer": RuntimeError("scorer down")})

    assert ok.output == 20
    assert failed.output == "failed: scorer down"


async def test_invoking_a_function_without_an_output_is_a_config_error() -> None:
    async def parent(ctx: Context) -> Any:
        return await ctx.step.invoke("score", function="scorer")

    with pytest.raises(ConfigError, match="scorer"):
        await run(parent)


async def test_a_handler_that_changes_its_steps_on_replay_fails_as_in_the_engine() -> None:
    replays = itertools.count()

    async def flip(ctx: Context) -> Any:
        order = ["heads", "tails"] if next(replays) % 2 == 0 else ["tails", "heads"]
        for step_id in order:  # the order changes on every replay
            await ctx.step.run(step_id, lambda: 1)
        return "done"

    result = await run(flip)

    assert result.status == "failed"
    assert result.error is not None and result.error.type == "NondeterminismError"


finisher = Stepstream(app_id="deadline-tests", settings=Settings())


@finisher.function(id="slow", trigger="t/slow", timeouts=Timeouts(finish=timedelta(days=1)))
async def slow(ctx: Context) -> Any:
    await ctx.step.sleep("week", timedelta(days=7))
    return "woke"


async def test_a_finish_timeout_cancels_a_long_sleep_on_the_virtual_clock() -> None:
    result = await run(slow, now=START)

    assert result.status == "cancelled"
    assert result.error is not None and result.error.type == "Timeout"
    assert result.elapsed == timedelta(days=1)


async def test_patched_takes_the_new_path_in_a_new_run() -> None:
    async def versioned(ctx: Context) -> Any:
        if ctx.patched("v2"):
            return await ctx.step.run("new", lambda: "new")
        return await ctx.step.run("old", lambda: "old")

    result = await run(versioned)

    assert result.output == "new"
    assert list(result.steps) == ["new"]  # the patch marker is not a step
