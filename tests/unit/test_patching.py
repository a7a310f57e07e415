"""Versioning inside a function: ``ctx.patched`` / ``ctx.deprecate_patch`` on replay."""

from __future__ import annotations

from typing import Any

from schemas.messages import MemoEntry, StepCompleted, StepRequest
from stepstream import Context
from stepstream.execution import execute
from stepstream.patching import at_frontier, patch_marker
from stepstream.replay import ReplayPaths
from tests.unit.test_execution import EVENT, LIMIT, define

DONE = MemoEntry(output_json='"done"')
MARKER = patch_marker("new-tax")


async def versioned(ctx: Context) -> Any:
    await ctx.step.run("price", lambda: 100)
    if ctx.patched("new-tax"):
        await ctx.step.run("tax", lambda: 20)
    else:
        await ctx.step.run("old-tax", lambda: 10)
    return await ctx.step.run("charge", lambda: "charged")


async def dispatch(handler: Any, memo: dict[str, MemoEntry],
                   target: str | None = None) -> Any:
    request = StepRequest(run_id="run-1", seq=1, function_id="fn", event=EVENT, attempt=0,
                          memo=memo, target=target)
    # Each dispatch on a fresh record of paths: as if on another worker, so only the
    # memo decides (the nondeterminism check is tested elsewhere).
    return await execute(define(handler), request, max_output_bytes=LIMIT,
                         paths=ReplayPaths())


def step_of(outcome: Any) -> str:
    assert isinstance(outcome, StepCompleted), outcome
    return outcome.step_id


async def test_a_run_reaching_the_patch_first_saves_the_decision_then_takes_the_new_path(
        ) -> None:
    marker = await dispatch(versioned, {"price": DONE})

    assert isinstance(marker, StepCompleted)
    assert (marker.step_id, marker.output_json) == (MARKER, "true")
    assert step_of(await dispatch(versioned, {"price": DONE, MARKER: DONE})) == "tax"


async def test_a_run_past_the_patch_point_stays_on_the_old_path() -> None:
    # It ran old-tax on the old code, which had no patch: the charge is next.
    assert step_of(await dispatch(versioned, {"price": DONE, "old-tax": DONE})) == "charge"


async def test_a_retried_step_found_on_the_old_code_keeps_the_old_path() -> None:
    # old-tax failed on the old code and is retried (a targeted dispatch): the run had
    # got past the patch point already, though no memo entry says so.
    assert step_of(await dispatch(versioned, {"price": DONE}, target="old-tax")) == "old-tax"


async def test_a_decision_saved_is_kept_even_with_later_entries() -> None:
    memo = {"price": DONE, MARKER: DONE, "tax": DONE}

    assert step_of(await dispatch(versioned, memo)) == "charge"


async def test_an_old_marker_does_not_make_a_later_patch_look_passed() -> None:
    async def later(ctx: Context) -> Any:
        await ctx.step.run("price", lambda: 100)  # the new-tax patch was removed since
        if ctx.patched("discount"):
            return await ctx.step.run("discount", lambda: 5)
        return None

    outcome = await dispatch(later, {"price": DONE, MARKER: DONE})

    assert step_of(outcome) == patch_marker("discount")


async def test_deprecate_patch_records_at_the_frontier_and_nothing_past_it() -> None:
    async def deprecated(ctx: Context) -> Any:
        await ctx.step.run("price", lambda: 100)
        ctx.deprecate_patch("new-tax")
        await ctx.step.run("tax", lambda: 20)
        return await ctx.step.run("charge", lambda: "charged")

    assert step_of(await dispatch(deprecated, {"price": DONE})) == MARKER
    assert step_of(await dispatch(deprecated, {"price": DONE, MARKER: DONE})) == "tax"
    assert step_of(await dispatch(deprecated, {"price": DONE, "tax": DONE})) == "charge"


async def test_a_step_id_cannot_take_the_reserved_prefix() -> None:
    async def sneaky(ctx: Context) -> Any:
        return await ctx.step.run(MARKER, lambda: 1)

    outcome = await dispatch(sneaky, {})

    assert outcome.error is not None and "reserved" in outcome.error.message


def test_the_frontier_is_where_every_memo_entry_but_markers_was_returned() -> None:
    assert at_frontier(["a", MARKER], returned=["a"], target=None)
    assert not at_frontier(["a", "b"], returned=["a"], target=None)
    assert not at_frontier(["a"], returned=["a"], target="b")
