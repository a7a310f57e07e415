"""Function options: what ``Stepstream.function`` accepts and refuses, the policy a run
follows (``streams.policy.policy_of``) and the runs events start (cron ticks:
test_cron, test_schedules)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from schemas.messages import ErrorInfo, Event, FunctionFinished, RunStarted
from stepstream import (
    CancelOn,
    ConfigError,
    Context,
    Cron,
    RetryPolicy,
    Settings,
    Stepstream,
    Timeouts,
)
from stepstream.events import FUNCTION_FAILED, run_id_for
from streams.machine import CancelRule, Emit, RunPolicy, advance
from streams.policy import policy_of
from streams.starts import Starter

MINUTE_MS = 60_000


def app() -> Stepstream:
    return Stepstream(app_id="tests", settings=Settings())


async def handler(ctx: Context) -> None:
    return None


async def on_failure(ctx: Context) -> None:
    return None


def starter(ss: Stepstream) -> Starter:
    # Neither Redis nor metrics are touched without an idempotency key.
    return Starter(ss, redis=None, metrics=None)  # type: ignore[arg-type]


def ms(when: datetime) -> int:
    return int(when.timestamp()) * 1000


# --- triggers --------------------------------------------------------------------------


def test_a_cron_function_is_registered_without_a_trigger() -> None:
    ss = app()

    ss.function(id="nightly", cron="0 3 * * *")(handler)

    assert (ss.functions["nightly"].cron, ss.functions["nightly"].trigger) == (
        Cron("0 3 * * *"), None)


@pytest.mark.parametrize("schedule", ["", "not a cron", "61 * * * *", "* * * *", "* * 32 * *"])
def test_an_invalid_cron_schedule_is_refused(schedule: str) -> None:
    with pytest.raises(ConfigError, match="cron"):
        app().function(id="f", cron=schedule)


@pytest.mark.parametrize("options", [{}, {"trigger": "t", "cron": "* * * * *"}])
def test_a_function_needs_exactly_one_of_trigger_and_cron(options: dict[str, Any]) -> None:
    ss = app()

    with pytest.raises(ConfigError, match="exactly one of trigger= or cron="):
        ss.function(id="f", **options)
    assert ss.functions == {}


# --- CEL expressions -------------------------------------------------------------------


@pytest.mark.parametrize("options", [
    {"if_": "event.data.n >"},
    {"idempotency": "event.data.("},
    {"cancel_on": [CancelOn(event="orders/cancelled", if_="async.data ==")]},
    {"cancel_on": [CancelOn(event="a"), CancelOn(event="b", if_="&&")]},
])
def test_a_bad_expression_in_an_option_is_refused_at_registration(
        options: dict[str, Any]) -> None:
    ss = app()

    with pytest.raises(ConfigError, match="invalid CEL expression"):
        ss.function(id="f", trigger="t", **options)
    assert ss.functions == {}


def test_a_bad_literal_condition_of_a_wait_in_the_handler_is_refused_at_registration() -> None:
    ss = app()

    async def waits(ctx: Context) -> Any:
        await ctx.step.run("a", lambda: 1)
        return await ctx.step.wait_for_event("paid", event="orders/paid", timeout=60,
                                             if_="async.data.order = event.data.order")

    with pytest.raises(ConfigError, match="invalid CEL expression"):
        ss.function(id="f", trigger="t")(waits)
    assert ss.functions == {}


def test_a_good_literal_condition_of_a_wait_is_accepted() -> None:
    ss = app()

    async def waits(ctx: Context) -> Any:
        return await ctx.step.wait_for_event("paid", event="orders/paid", timeout=60,
                                             if_="async.data.order == event.data.order")

    ss.function(id="f", trigger="t", if_='event.data.kind == "a"',
                idempotency="event.data.order")(waits)

    fn = ss.functions["f"]
    assert (fn.trigger_if, fn.idempotency) == ('event.data.kind == "a"', "event.data.order")


# --- on_failure ------------------------------------------------------------------------


def test_on_failure_registers_a_function_on_the_failure_event() -> None:
    ss = app()

    ss.function(id="charge", trigger="t", retries=5, on_failure=on_failure)(handler)

    failure = ss.functions["charge.on-failure"]
    assert (failure.trigger, failure.handler, failure.retry.retries) == (
        FUNCTION_FAILED, on_failure, 5)
    assert failure.trigger_if == 'event.data.function_id == "charge"'
    assert set(ss.functions) == {"charge", "charge.on-failure"}


def test_an_on_failure_handler_that_is_not_async_is_refused() -> None:
    with pytest.raises(ConfigError, match="async"):
        app().function(id="charge", trigger="t", on_failure=lambda ctx: None)(handler)  # type: ignore[arg-type]


async def test_a_failed_run_starts_the_on_failure_run_of_its_function_only() -> None:
    ss = app()
    ss.function(id="charge", trigger="t", on_failure=on_failure)(handler)
    ss.function(id="refund", trigger="t", on_failure=on_failure)(handler)
    state, _ = advance(None, RunStarted(run_id="run-1", function_id="charge",
                                        event=Event(id="e", name="t"), ts=1), RunPolicy())
    declined = ErrorInfo(type="RuntimeError", message="card declined")
    _, commands = advance(state, FunctionFinished(run_id="run-1", seq=1, ts=2, error=declined),
                          RunPolicy())
    (emit,) = [c for c in commands if isinstance(c, Emit)]

    starts = await starter(ss).starts_for(emit.event)

    assert [(s.function_id, s.run_id, s.event) for s in starts] == [
        ("charge.on-failure", run_id_for("charge.on-failure", emit.event.id), emit.event)]
    assert json.loads(emit.event.data_json)["error"]["message"] == "card declined"


# --- policy_of -------------------------------------------------------------------------


def test_policy_of_carries_the_options_the_machine_applies() -> None:
    ss = app()
    retry = RetryPolicy(retries=2, jitter=0.0)
    ss.function(id="f", trigger="t", retry=retry,
                cancel_on=[CancelOn(event="orders/cancelled", if_="async.data.o == event.data.o",
                                    timeout=timedelta(hours=1)),
                           CancelOn(event="ops/stop")],
                timeouts=Timeouts(start=timedelta(seconds=30), finish=timedelta(minutes=5)))(
        handler)

    policy = policy_of(ss.functions["f"])

    assert policy == RunPolicy(
        retry=retry,
        cancel_on=(CancelRule(event="orders/cancelled", condition="async.data.o == event.data.o",
                              timeout_ms=3_600_000),
                   CancelRule(event="ops/stop", condition=None, timeout_ms=7 * 24 * 3_600_000)),
        start_timeout_ms=30_000, finish_timeout_ms=300_000)


def test_policy_of_a_plain_function_has_no_rules_and_no_deadlines() -> None:
    ss = app()
    ss.function(id="f", trigger="t", retries=4)(handler)

    policy = policy_of(ss.functions["f"])

    assert policy == RunPolicy(retry=RetryPolicy(retries=4))
    assert (policy.cancel_on, policy.start_timeout_ms, policy.finish_timeout_ms) == ((), None,
                                                                                      None)


def test_policy_of_keeps_a_deadline_set_on_one_side_only() -> None:
    ss = app()
    ss.function(id="f", trigger="t", timeouts=Timeouts(finish=timedelta(seconds=1.5)))(handler)

    policy = policy_of(ss.functions["f"])

    assert (policy.start_timeout_ms, policy.finish_timeout_ms) == (None, 1_500)


# --- runs started by events ------------------------------------------------------------


async def test_an_event_starts_each_function_it_triggers_whose_condition_holds() -> None:
    ss = app()
    ss.function(id="all", trigger="orders/placed")(handler)
    ss.function(id="big", trigger="orders/placed", if_="event.data.total > 100")(handler)
    ss.function(id="other", trigger="orders/paid")(handler)
    ss.function(id="tick", cron="* * * * *")(handler)
    small = Event(id="o-1", name="orders/placed", data_json='{"total":5}', ts=1)
    big = Event(id="o-2", name="orders/placed", data_json='{"total":500}', ts=2)

    assert [(s.function_id, s.run_id) for s in await starter(ss).starts_for(small)] == [
        ("all", run_id_for("all", "o-1"))]
    assert [s.function_id for s in await starter(ss).starts_for(big)] == ["all", "big"]
    nothing = Event(id="x", name="stepstream/cron", data_json="{}", ts=3)
    assert await starter(ss).starts_for(nothing) == []


async def test_a_condition_on_a_missing_field_starts_nothing() -> None:
    ss = app()
    ss.function(id="big", trigger="orders/placed", if_="event.data.total > 100")(handler)

    event = Event(id="o-1", name="orders/placed", data_json="{}", ts=1)

    assert await starter(ss).starts_for(event) == []
