"""Flow-control options: dataclasses and dict forms, checks at registration, the CEL
values limits are keyed by, and a chain that stops when it may not keep its slot."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from schemas.messages import Event, MemoEntry, StepCompleted, StepRequest
from stepstream import (
    BatchEvents,
    Concurrency,
    ConfigError,
    Context,
    Debounce,
    Priority,
    RateLimit,
    Settings,
    Stepstream,
    Throttle,
)
from stepstream.execution import execute
from stepstream.options import FlowControl, parse_duration
from stepstream.step import ChainBudget
from streams.flow.gate import starts_run
from streams.flow.keys import FlowKeys, key_value, priority_ms, queue_score


def register(**options: Any) -> FlowControl:
    ss = Stepstream(app_id="t", settings=Settings())

    async def handler(ctx: Context) -> None:
        return None

    ss.function(id="fn", trigger="t/go", **options)(handler)
    return ss.functions["fn"].flow


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("30s", 30), ("1m", 60), ("1m30s", 90), ("1h", 3600), ("2d", 172800),
    ("1.5s", 1.5), (5, 5), (0.25, 0.25), (timedelta(minutes=2), 120)])
def test_durations_in_text_numbers_or_timedeltas(text: Any, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["", "1", "1x", "m", "0s", -1, True, None, "5 minutes"])
def test_what_is_not_a_positive_duration_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_the_dict_forms_of_the_issue_become_dataclasses() -> None:
    flow = register(concurrency=[{"limit": 5, "key": "event.data.tenant_id"}, {"limit": 20}],
                    throttle={"limit": 10, "period": "1m", "key": "event.data.user"},
                    priority={"run": "event.data.boost"})

    assert flow.concurrency == (Concurrency(limit=5, key="event.data.tenant_id"),
                                Concurrency(limit=20))
    assert flow.throttle == Throttle(limit=10, period=timedelta(minutes=1),
                                     key="event.data.user")
    assert flow.priority == Priority(run="event.data.boost")
    assert not flow.at_trigger

    assert register(rate_limit={"limit": 1, "period": "1h"}).rate_limit == RateLimit(
        limit=1, period=timedelta(hours=1))
    assert register(debounce={"period": "30s"}).debounce == Debounce(
        period=timedelta(seconds=30))
    assert register(batch_events={"max_size": 100, "timeout": "5s"}).batch_events == \
        BatchEvents(max_size=100, timeout=timedelta(seconds=5))
    assert register(concurrency=3).concurrency == (Concurrency(limit=3),)
    assert register(concurrency=Concurrency(limit=2, key="event.data.x")).concurrency == (
        Concurrency(limit=2, key="event.data.x"),)


@pytest.mark.parametrize("options", [
    {"concurrency": 0},
    {"concurrency": [{"limit": 2, "scope": "env"}]},
    {"throttle": {"limit": 10}},
    {"throttle": {"limit": 10, "period": "soon"}},
    {"rate_limit": {"limit": 0, "period": "1h"}},
    {"debounce": {"period": "30s", "key": "event.data.("}},
    {"priority": {"run": "event.data.("}},
    {"batch_events": {"max_size": 10, "timeout": "5s"}, "debounce": {"period": "1s"}},
    {"batch_events": {"max_size": 10, "timeout": "5s"}, "idempotency": "event.data.id"},
    {"throttle": "10/m"},
])
def test_a_definition_that_cannot_work_fails_at_registration(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        register(**options)


def test_event_options_need_events() -> None:
    ss = Stepstream(app_id="t", settings=Settings())
    with pytest.raises(ConfigError, match="cron"):
        ss.function(id="c", cron="* * * * *", debounce={"period": "1s"})


def event(data: str, ts: int = 1_000) -> Event:
    return Event(id="e", name="t/go", data_json=data, ts=ts)


def test_key_values_are_text_and_missing_fields_share_one_key() -> None:
    assert key_value(None, event('{"t":"a"}')) == ""
    assert key_value("event.data.t", event('{"t":"acme"}')) == "acme"
    assert key_value("event.data.t", event('{"t":7}')) == "7"
    assert key_value("event.data.t", event("{}")) == ""
    long = key_value("event.data.t", event('{"t":"' + "x" * 200 + '"}'))
    assert long.startswith("h:") and len(long) < 40


def test_priority_is_seconds_ahead_clamped_and_zero_when_not_a_number() -> None:
    assert priority_ms("event.data.p", event('{"p":30}')) == 30_000
    assert priority_ms("event.data.p", event('{"p":-2.5}')) == -2_500
    assert priority_ms("event.data.p", event('{"p":99999}')) == 600_000
    assert priority_ms("event.data.p", event('{"p":"high"}')) == 0
    assert priority_ms("event.data.p", event("{}")) == 0
    assert priority_ms(None, event('{"p":30}')) == 0
    assert queue_score(event('{"p":30}', ts=100_000), "event.data.p") == 70_000


def test_keys_of_one_function_share_a_cluster_slot() -> None:
    key = FlowKeys("ns").of("fn-1", "c0", "acme", "holders")
    assert key == "ns:flow:{fn-1}:c0:acme:holders"


def test_only_a_dispatch_that_starts_its_run_is_throttled() -> None:
    first = StepRequest(run_id="r", seq=1, function_id="f", event=event("{}"), attempt=0)
    assert starts_run(first)
    assert not starts_run(StepRequest(run_id="r", seq=2, function_id="f", event=first.event,
                                      attempt=0, memo={"a": MemoEntry(output_json="1")}))
    assert not starts_run(StepRequest(run_id="r", seq=3, function_id="f", event=first.event,
                                      attempt=1, target="a"))


async def test_a_chain_stops_when_its_slot_may_not_be_kept() -> None:
    ss = Stepstream(app_id="t", settings=Settings())

    async def handler(ctx: Context) -> int:
        total = 0
        for i in range(5):
            total = await ctx.step.run(f"s{i}", lambda t: t + 1, total)
        return total

    ss.function(id="fn", trigger="t/go")(handler)
    asked: list[int] = []

    async def allow() -> bool:
        asked.append(1)
        return len(asked) < 3

    links: list[StepCompleted] = []

    async def progress(link: StepCompleted) -> None:
        links.append(link)

    request = StepRequest(run_id="r", seq=1, function_id="fn", event=event("{}"), attempt=0)
    final = await execute(ss.functions["fn"], request, max_output_bytes=10_000,
                          chain=ChainBudget(allow=allow), on_progress=progress)

    assert [link.step_id for link in links] == ["s0", "s1"]
    assert isinstance(final, StepCompleted) and final.step_id == "s2" and not final.more


async def test_a_batch_reaches_the_handler_as_ctx_events() -> None:
    ss = Stepstream(app_id="t", settings=Settings())
    seen: list[Any] = []

    async def handler(ctx: Context) -> int:
        seen.append((ctx.event.id, [e.id for e in ctx.events]))
        return len(ctx.events)

    ss.function(id="fn", trigger="t/go")(handler)
    batch = [Event(id=f"e{i}", name="t/go", data_json="{}", ts=i) for i in range(3)]
    request = StepRequest(run_id="r", seq=1, function_id="fn", event=batch[0], attempt=0,
                          batch=batch)
    single = StepRequest(run_id="r", seq=1, function_id="fn", event=batch[1], attempt=0)

    await execute(ss.functions["fn"], request, max_output_bytes=10_000)
    await execute(ss.functions["fn"], single, max_output_bytes=10_000)

    assert seen == [("e0", ["e0", "e1", "e2"]), ("e1", ["e1"])]
