"""A handler that calls its steps in another order on replay fails with NondeterminismError."""

from __future__ import annotations

import collections
from typing import Any

from schemas.messages import Event, FunctionFinished, MemoEntry, StepCompleted, StepRequest
from stepstream import Context, Settings, Stepstream
from stepstream.execution import execute
from stepstream.replay import ReplayPaths

EVENT = Event(id="e", name="t/go", data_json="{}", ts=1)


def _function(flip: bool) -> Any:
    ss = Stepstream(app_id="t", settings=Settings())
    dispatches: collections.Counter[str] = collections.Counter()

    async def handler(ctx: Context) -> list[str]:
        dispatches[ctx.run_id] += 1
        order = ["b", "a"] if flip and dispatches[ctx.run_id] % 2 == 0 else ["a", "b"]
        return [await ctx.step.run(s, lambda s=s: s) for s in order]

    ss.function(id="fn", trigger="t/go", eager=False)(handler)
    return ss.functions["fn"]


async def _dispatch(function: Any, run_id: str, seq: int, memo: dict[str, MemoEntry]) -> Any:
    request = StepRequest(run_id=run_id, seq=seq, function_id="fn", event=EVENT, attempt=0,
                          memo=memo)
    return await execute(function, request, max_output_bytes=10_000)


async def test_steps_in_another_order_on_the_second_dispatch_fail_the_run() -> None:
    function = _function(flip=True)
    first = await _dispatch(function, "r-flip", 1, {})
    assert isinstance(first, StepCompleted) and first.step_id == "a"
    second = await _dispatch(function, "r-flip", 2, {"a": MemoEntry(output_json='"a"')})
    assert isinstance(second, FunctionFinished)
    assert second.error is not None and second.error.type == "NondeterminismError"
    assert "'b' was called where an earlier dispatch of this run called 'a'" in (
        second.error.message)


async def test_a_deterministic_handler_replays_without_complaint() -> None:
    function = _function(flip=False)
    memo: dict[str, MemoEntry] = {}
    for seq, step_id in enumerate(["a", "b"], start=1):
        outcome = await _dispatch(function, "r-same", seq, memo)
        assert isinstance(outcome, StepCompleted) and outcome.step_id == step_id
        memo = {**memo, step_id: MemoEntry(output_json=outcome.output_json)}
    done = await _dispatch(function, "r-same", 3, memo)
    assert isinstance(done, FunctionFinished) and done.error is None


def test_a_replay_that_forgot_memo_entries_starts_afresh() -> None:
    paths, handler = ReplayPaths(), object()
    paths.record("r", handler, ["a", "b", "c"], memo=["a", "b"])
    assert paths.expected("r", handler, ["a", "b", "x"]) == ("a", "b", "c")
    assert paths.expected("r", handler, ["b"]) == ()  # "a" was forgotten: a replay
    assert paths.expected("r", object(), ["a", "b"]) == ()  # other code, same run id
    paths.record("r", handler, ["a"], memo=["a", "b"])  # a shorter parallel dispatch
    assert paths.expected("r", handler, ["a", "b"]) == ("a", "b", "c")
