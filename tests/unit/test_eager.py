"""Eager execution: chains of steps in one dispatch (executor side and state machine)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from schemas.messages import (
    ChainAlive,
    Event,
    FunctionFinished,
    StepCompleted,
    StepFailed,
    StepPlanned,
    StepRequest,
    TimerFired,
)
from stepstream import Context, RetryPolicy, Settings, Stepstream
from stepstream.execution import execute
from stepstream.step import ChainBudget
from streams.machine import Dispatch, Record, RunPolicy, Schedule, advance, takeover_timers

EVENT = Event(id="e", name="t/go", data_json="{}", ts=1)
POLICY = RunPolicy(retry=RetryPolicy(retries=2, initial=timedelta(seconds=1), jitter=0.0),
                   chain_lease_ms=5000)


def define(eager: bool = True, steps: int = 4, fail_at: int | None = None) -> Any:
    ss = Stepstream(app_id="t", settings=Settings())

    async def handler(ctx: Context) -> int:
        total = 0
        for i in range(steps):
            total = await ctx.step.run(f"s{i}", _add, total, i == fail_at)
        return total

    ss.function(id="fn", trigger="t/go", eager=eager)(handler)
    return ss.functions["fn"]


def _add(total: int, fail: bool) -> int:
    if fail:
        raise RuntimeError("boom")
    return total + 1


async def chain(function: Any, budget: ChainBudget | None = None) -> tuple[list[Any], Any]:
    links: list[StepCompleted] = []

    async def progress(link: StepCompleted) -> None:
        links.append(link)

    request = StepRequest(run_id="r", seq=1, function_id="fn", event=EVENT, attempt=0)
    final = await execute(function, request, max_output_bytes=10_000,
                          chain=budget or ChainBudget(),
                          on_progress=progress)
    return links, final


async def test_a_chain_reports_each_step_and_ends_with_the_function() -> None:
    links, final = await chain(define(steps=4))
    assert [(link.step_id, link.chain, link.more) for link in links] == [
        ("s0", 0, True), ("s1", 1, True), ("s2", 2, True), ("s3", 3, True)]
    assert isinstance(final, FunctionFinished) and final.chain == 4
    assert final.output_json == "4"


async def test_the_go_ahead_of_a_link_is_awaited_before_the_next_body_only() -> None:
    # The executor's go-ahead is the first link's commit: the next step's body waits
    # for it; the function's end after the last step does not.
    seen: list[str] = []
    function = define(steps=2)

    async def progress(link: StepCompleted) -> Any:
        seen.append(f"link {link.step_id}")

        async def go_ahead() -> None:
            seen.append(f"go-ahead after {link.step_id}")

        return go_ahead

    request = StepRequest(run_id="r", seq=1, function_id="fn", event=EVENT, attempt=0)
    final = await execute(function, request, max_output_bytes=10_000, chain=ChainBudget(),
                          on_progress=progress)
    assert seen == ["link s0", "go-ahead after s0", "link s1"]
    assert isinstance(final, FunctionFinished) and final.output_json == "2"


async def test_the_budget_ends_a_chain_with_a_plain_step_outcome() -> None:
    links, final = await chain(define(steps=10), ChainBudget(max_steps=3))
    assert [link.chain for link in links] == [0, 1]
    assert isinstance(final, StepCompleted) and (final.step_id, final.chain) == ("s2", 2)
    assert not final.more


async def test_a_failure_ends_the_chain_for_the_orchestrator_to_retry() -> None:
    links, final = await chain(define(steps=5, fail_at=2))
    assert [link.step_id for link in links] == ["s0", "s1"]
    assert isinstance(final, StepFailed) and (final.step_id, final.chain) == ("s2", 2)


async def test_eager_off_runs_one_step_per_dispatch() -> None:
    links, final = await chain(define(eager=False, steps=3))
    assert links == []
    assert isinstance(final, StepCompleted) and final.step_id == "s0"


async def test_parallel_steps_end_a_chain_as_a_plan() -> None:
    ss = Stepstream(app_id="t", settings=Settings())

    async def handler(ctx: Context) -> Any:
        import asyncio

        await ctx.step.run("first", _add, 0, False)
        return await asyncio.gather(ctx.step.run("a", _add, 1, False),
                                    ctx.step.run("b", _add, 2, False))

    ss.function(id="fn", trigger="t/go")(handler)
    links, final = await chain(ss.functions["fn"])
    assert [link.step_id for link in links] == ["first"]
    assert isinstance(final, StepPlanned) and final.chain == 1
    assert [p.step_id for p in final.steps] == ["a", "b"]


# --- the state machine's side ---------------------------------------------------------


def started() -> Any:
    from schemas.messages import RunStarted

    state, _ = advance(None, RunStarted(run_id="r", function_id="fn", event=EVENT, ts=10),
                       POLICY)
    return state


def link(step: str, chain: int, more: bool = True, seq: int = 1) -> StepCompleted:
    return StepCompleted(run_id="r", seq=seq, step_id=step, attempt=0, output_json="1",
                         started_at=100 + chain, ended_at=101 + chain, chain=chain, more=more)


def test_links_are_applied_in_order_and_keep_the_dispatch_outstanding() -> None:
    state = started()
    state, out = advance(state, link("s0", 0), POLICY)
    assert set(state.memo) == {"s0"}
    assert state.dispatched["1"].chain == 1
    assert not any(isinstance(c, Dispatch) for c in out)
    [lease] = [c for c in out if isinstance(c, Schedule)]
    assert lease.timer.timer_id == "lease:1:5101" and lease.delay_ms == 5000
    state, out = advance(state, link("s1", 1), POLICY)
    assert set(state.memo) == {"s0", "s1"}
    assert not any(isinstance(c, Schedule) for c in out)  # one lease per chain


def test_a_duplicate_or_skipped_link_changes_nothing() -> None:
    state, _ = advance(started(), link("s0", 0), POLICY)
    assert advance(state, link("s0", 0), POLICY) == (state, [])
    assert advance(state, link("s2", 2), POLICY) == (state, [])


def test_the_last_link_closes_the_dispatch_and_replays_the_handler() -> None:
    state, _ = advance(started(), link("s0", 0), POLICY)
    state, out = advance(state, link("s1", 1, more=False), POLICY)
    assert set(state.dispatched) == {"2"}
    assert [c.request.seq for c in out if isinstance(c, Dispatch)] == [2]


def test_a_lease_without_progress_re_dispatches_from_the_last_applied_step() -> None:
    state, _ = advance(started(), link("s0", 0), POLICY)
    state, out = advance(state, TimerFired(run_id="r", timer_id="lease:1:5101", ts=5101),
                         POLICY)
    assert "1" not in state.dispatched
    [dispatch] = [c for c in out if isinstance(c, Dispatch)]
    assert dispatch.request.seq == 2 and set(state.memo) == {"s0"}  # what it reads
    assert any(isinstance(c, Record) and c.record.kind == "chain.expired" for c in out)
    # the dead chain's late links are ignored now
    assert advance(state, link("s1", 1), POLICY) == (state, [])


def test_a_lease_runs_one_lease_from_the_last_link() -> None:
    state, _ = advance(started(), link("s0", 0), POLICY)  # ended at 101: due 5101
    state, _ = advance(state, link("s1", 1), POLICY)  # ended at 102
    state, out = advance(state, TimerFired(run_id="r", timer_id="lease:1:5101", ts=5101),
                         POLICY)
    assert state.dispatched["1"].lease_due == 5102
    [renewed] = [c for c in out if isinstance(c, Schedule)]
    assert renewed.timer.timer_id == "lease:1:5102" and renewed.delay_ms == 1
    assert not any(isinstance(c, Dispatch) for c in out)
    # the old timer, delivered again, is stale; the new one expires the silent chain
    assert advance(state, TimerFired(run_id="r", timer_id="lease:1:5101", ts=5101),
                   POLICY) == (state, [])
    state, out = advance(state, TimerFired(run_id="r", timer_id="lease:1:5102", ts=5102),
                         POLICY)
    assert [c.request.seq for c in out if isinstance(c, Dispatch)] == [2]


def alive(chain: int, ts: int, seq: int = 1) -> ChainAlive:
    return ChainAlive(run_id="r", seq=seq, chain=chain, ts=ts)


def test_a_heartbeat_keeps_a_slow_step_of_a_chain_from_being_run_again() -> None:
    state, _ = advance(started(), link("s0", 0), POLICY)  # due 5101
    state, out = advance(state, alive(1, 4000), POLICY)
    assert out == [] and state.dispatched["1"].alive_at == 4000
    state, out = advance(state, TimerFired(run_id="r", timer_id="lease:1:5101", ts=5101),
                         POLICY)
    assert not any(isinstance(c, Dispatch) for c in out)
    [renewed] = [c for c in out if isinstance(c, Schedule)]
    assert renewed.timer.ts == 9000 and renewed.delay_ms == 9000 - 5101


def test_stale_heartbeats_change_nothing() -> None:
    state, _ = advance(started(), link("s0", 0), POLICY)
    state, _ = advance(state, alive(1, 4000), POLICY)
    assert advance(state, alive(1, 3000), POLICY) == (state, [])  # older, arrived late
    assert advance(state, alive(0, 4500), POLICY) == (state, [])  # a position gone by
    assert advance(state, alive(1, 4500, seq=9), POLICY) == (state, [])  # no such dispatch
    ended, _ = advance(state, link("s1", 1, more=False), POLICY)
    assert advance(ended, alive(1, 4600), POLICY) == (ended, [])  # the chain is over


def test_a_new_owner_of_the_partition_re_dispatches_a_chain_at_once() -> None:
    state, _ = advance(started(), link("s0", 0), POLICY)  # due 5101
    state, _ = advance(state, alive(1, 4000), POLICY)  # alive a moment ago
    [takeover] = takeover_timers(state, now=4100)
    assert takeover.ts == 4100
    state, out = advance(state, takeover, POLICY)
    assert "1" not in state.dispatched
    assert [c.request.seq for c in out if isinstance(c, Dispatch)] == [2]
    assert any(isinstance(c, Record) and c.record.kind == "chain.expired" for c in out)
    # delivered again (a replayed message), or after the chain moved on: nothing
    assert advance(state, takeover, POLICY) == (state, [])
    assert takeover_timers(state, now=4200) == []
