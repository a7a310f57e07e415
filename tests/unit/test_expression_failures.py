"""Expressions that fail or go over their budget: conditions (a function's ``if_``,
waits) do not match, keys (idempotency, flow control, priority) fail the run; each
failure is counted, and logged once per expression."""

from __future__ import annotations

import json
import logging
from typing import Any
from unittest.mock import MagicMock

import pytest

from schemas.messages import Event, FunctionFinished, StepRequest, Waiter, WaiterChanged
from stepstream import Context, Settings, Stepstream
from stepstream.errors import ExpressionError
from stepstream.events import run_id_for
from stepstream.expressions import MAX_COST, cost_shape, estimated_cost, evaluate, matches, size_of
from streams.flow.gate import FlowGate
from streams.flow.keys import key_value, priority_ms
from streams.metrics import Metrics
from streams.starts import Starter
from streams.waiters import UNKNOWN_FUNCTION, event_context, function_of
from tests.unit.test_matcher import feed, matcher_task, woken

NUMBERS = Event(id="e-1", name="t/go", data_json=json.dumps({
    "n": 7, "zero": 0, "big": 2**62, "s": "text", "xs": list(range(1000))}), ts=1)
CONTEXT = {"event": event_context(NUMBERS)}

FAILING = {
    "division": "event.data.n / event.data.zero == 1",
    "overflow": "event.data.big * 4 > 0",
    "type": "event.data.s + 1 == 2",
    "budget": "event.data.xs.map(a, event.data.xs.map(b, a * b)).size() > 0",
}
"""One expression per failure kind, each over ``NUMBERS``."""


def failures(metrics: Metrics, function_id: str, kind: str, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "stepstream_expression_failures_total",
        {"function": function_id, "kind": kind, "reason": reason})
    return value or 0.0


def reason_of(name: str) -> str:
    return "budget" if name == "budget" else "error"


async def handler(ctx: Context) -> None:
    return None


# --- evaluation ------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAILING)
def test_a_failing_expression_raises_one_error_naming_it(name: str) -> None:
    with pytest.raises(ExpressionError) as raised:
        evaluate(FAILING[name], CONTEXT)

    assert raised.value.reason == reason_of(name)
    assert FAILING[name] in str(raised.value)
    with pytest.raises(ExpressionError):
        matches(FAILING[name], CONTEXT)


def test_a_missing_field_or_variable_is_none_not_an_error() -> None:
    assert evaluate("event.data.missing", CONTEXT) is None
    assert evaluate("async.data.n == 1", CONTEXT) is None
    assert matches("event.data.missing.deeper == 1", CONTEXT) is False


@pytest.mark.parametrize(("source", "shape"), [
    ("event.data.n == 7", (0, False)),
    ("event.data.xs.exists(x, x == 3)", (1, False)),
    ("event.data.xs.map(a, a).filter(b, b > 1).size() > 0", (1, True)),  # one after another
    ("event.data.xs.map(a, event.data.xs.map(b, a * b))", (2, True)),
    ("event.data.xs.all(a, event.data.xs.exists(b, event.data.xs.exists_one(c, c == a)))",
     (3, False)),
    ("'.map(' + \".filter(\" + r'\\' + event.data.s", (0, False)),  # in strings: not
    ("event.data.xs.exists(a, // )\n event.data.xs.all(b, b))", (2, False)),  # nor comments
])
def test_the_shape_of_the_cost_is_read_from_the_source(source: str,
                                                        shape: tuple[int, bool]) -> None:
    assert cost_shape(source) == shape


def test_the_budget_depends_on_the_shape_and_the_size_of_the_data() -> None:
    nested = "event.data.xs.map(a, event.data.xs.map(b, a + b)).size()"
    small = {"event": {"data": {"xs": [1, 2, 3]}}}

    assert size_of('{"xs":[1,2,3]}') == 5
    assert estimated_cost((0, False), 10**6) == 0
    assert estimated_cost((1, False), 10) == 160 and estimated_cost((1, True), 10) == 260
    assert evaluate(nested, small) == 3
    assert evaluate("event.data.xs.exists(a, a == 999)", CONTEXT) is True  # linear
    with pytest.raises(ExpressionError, match="over its evaluation budget"):
        evaluate(nested, small, size=round(MAX_COST ** (1 / 3)))


def _beside_a_plain_function(function_id: str, **options: Any) -> tuple[Starter, Metrics]:
    """A starter (without Redis) of ``function_id`` with ``options`` and of a plain
    function on the same event, and its metrics."""
    ss = Stepstream(app_id="t", settings=Settings())
    ss.function(id=function_id, trigger="t/go", **options)(handler)
    ss.function(id="plain", trigger="t/go")(handler)
    metrics = Metrics()
    return Starter(ss, redis=None, metrics=metrics), metrics  # type: ignore[arg-type]


# --- filters ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAILING)
async def test_a_failing_filter_does_not_match_and_other_functions_start(name: str) -> None:
    starter, metrics = _beside_a_plain_function("filtered", if_=FAILING[name])

    decision = await starter.decide(NUMBERS)

    assert [s.function_id for s in decision.starts] == ["plain"]
    assert decision.records == []
    assert failures(metrics, "filtered", "filter", reason_of(name)) == 1


async def test_a_failure_is_counted_every_time_and_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    ss = Stepstream(app_id="t", settings=Settings())
    ss.function(id="filtered", trigger="t/go", if_=FAILING["division"])(handler)
    metrics = Metrics()
    starter = Starter(ss, redis=None, metrics=metrics)  # type: ignore[arg-type]

    with caplog.at_level(logging.WARNING, "stepstream.expressions"):
        for _ in range(3):
            await starter.decide(NUMBERS)

    assert failures(metrics, "filtered", "filter", "error") == 3
    logged = [r.getMessage() for r in caplog.records if r.name == "stepstream.expressions"]
    assert len(logged) == 1 and FAILING["division"] in logged[0]


# --- waits -----------------------------------------------------------------------------


def waiting(run_id: str, condition: str) -> Waiter:
    return Waiter(run_id=run_id, step_id="wait", kind="step", event_name="t/go",
                  trigger=Event(id=f"trigger-{run_id}", name="t/start", data_json="{}"),
                  expires_at=2**62, condition=condition)


@pytest.mark.parametrize("name", FAILING)
async def test_a_failing_wait_condition_does_not_match_and_other_waiters_wake(
        name: str) -> None:
    condition = FAILING[name].replace("event.", "async.")
    matcher, task, producer, _ = matcher_task()
    for waiter in (waiting("r1", condition), waiting("r2", "async.data.n == 7")):
        await feed(matcher, task, "waiters", "t/go", WaiterChanged(waiter, True))
    await task.commit()

    await feed(matcher, task, "events.by-name", "t/go", NUMBERS)
    await task.commit()

    assert woken(producer) == ["r2"]
    assert failures(matcher.outputs.metrics, UNKNOWN_FUNCTION, "wait", reason_of(name)) == 1


def test_a_waiter_is_labelled_with_the_function_of_its_run() -> None:
    ss = Stepstream(app_id="t", settings=Settings())
    ss.function(id="a", trigger="t/start")(handler)
    ss.function(id="b", trigger="t/start")(handler)
    trigger = Event(id="x", name="t/start")
    waiter = Waiter(run_id=run_id_for("b", "x"), step_id="w", kind="cancel",
                    event_name="t/go", trigger=trigger, expires_at=1)

    assert function_of(waiter, ss.functions) == "b"
    assert function_of(waiting("other", "true"), ss.functions) == UNKNOWN_FUNCTION


# --- keys ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAILING)
def test_a_failing_key_or_priority_raises(name: str) -> None:
    with pytest.raises(ExpressionError):
        key_value(FAILING[name], NUMBERS)
    with pytest.raises(ExpressionError):
        priority_ms(FAILING[name], NUMBERS)


@pytest.mark.parametrize("name", FAILING)
async def test_a_failing_idempotency_key_fails_the_run_at_its_start(name: str) -> None:
    # Redis is not touched: the key fails before it is claimed.
    starter, metrics = _beside_a_plain_function("keyed", idempotency=FAILING[name])

    decision = await starter.decide(NUMBERS)

    assert [s.function_id for s in decision.starts] == ["plain"]
    started, failed = decision.records
    assert (started.kind, failed.kind) == ("run.started", "run.failed")
    assert failed.run_id == run_id_for("keyed", NUMBERS.id)
    assert failed.error is not None and failed.error.type == "ExpressionError"
    assert FAILING[name] in failed.error.message
    assert failures(metrics, "keyed", "key", reason_of(name)) == 1


@pytest.mark.parametrize("option", [
    {"rate_limit": {"limit": 1, "period": "1m", "key": FAILING["division"]}},
    {"debounce": {"period": "1s", "key": FAILING["division"]}},
    {"batch_events": {"max_size": 2, "timeout": "1s", "key": FAILING["division"]}},
])
async def test_a_failing_flow_key_at_the_trigger_fails_the_run(option: dict[str, Any]) -> None:
    ss = Stepstream(app_id="t", settings=Settings())
    ss.function(id="keyed", trigger="t/go", **option)(handler)
    metrics, redis = Metrics(), MagicMock()
    starter = Starter(ss, redis=redis, metrics=metrics)

    decision = await starter.decide(NUMBERS)

    redis.register_script.return_value.assert_not_called()  # the key fails before Redis
    assert (decision.starts, decision.timers) == ([], [])
    assert [r.kind for r in decision.records] == ["run.started", "run.failed"]
    assert failures(metrics, "keyed", "key", "error") == 1


@pytest.mark.parametrize("option", [
    {"concurrency": [{"limit": 1, "key": FAILING["overflow"]}]},
    {"throttle": {"limit": 1, "period": "1s", "key": FAILING["overflow"]}},
    {"concurrency": [{"limit": 1}], "priority": {"run": FAILING["overflow"]}},
])
async def test_a_failing_key_at_the_executor_fails_the_run(option: dict[str, Any]) -> None:
    ss = Stepstream(app_id="t", settings=Settings())
    ss.function(id="keyed", trigger="t/go", **option)(handler)
    metrics, redis = Metrics(), MagicMock()
    gate = FlowGate(redis, Settings(), metrics)
    request = StepRequest(run_id="r", seq=3, function_id="keyed", event=NUMBERS, attempt=0)

    answer = await gate.enter(ss.functions["keyed"], request)

    redis.register_script.return_value.assert_not_called()  # every key before any slot
    assert isinstance(answer, FunctionFinished)
    assert (answer.run_id, answer.seq) == ("r", 3)
    assert answer.error is not None and FAILING["overflow"] in answer.error.message
    assert failures(metrics, "keyed", "key", "error") == 1
