"""Shadow runs (``stepstream backfill --shadow``): side-effect steps answered from the
live run, and the comparison of outputs."""

from __future__ import annotations

import json
from typing import Any

from schemas.messages import ErrorInfo, Event
from stepstream import Context, Stepstream
from stepstream.masking import SecretFields
from stepstream.testing import run
from stepstream.testing.harness import run_event
from stepstream.testing.result import RunResult
from streams.shadow import SideEffects
from streams.shadow_report import Example, ShadowReport, compare, differences

ss = Stepstream(app_id="shadow-test")
ran: list[str] = []


def charge(amount: int) -> dict[str, Any]:
    ran.append("charge")
    return {"charged": amount}


@ss.function(id="checkout", trigger="shop/checkout")
async def checkout(ctx: Context) -> Any:
    total = await ctx.step.run("total", lambda: ctx.event.data["amount"] * 2)
    paid = await ctx.step.run("charge", charge, total, side_effect=True)
    mailed = await ctx.step.run("mail", lambda: "sent", side_effect=True, stand_in="skipped")
    return {"total": total, "paid": paid, "mailed": mailed, "token": "t-1"}


def event(amount: int) -> Event:
    return Event(id="e-1", name="shop/checkout", data_json=json.dumps({"amount": amount}),
                 ts=1_800_000_000_000)


async def test_a_side_effect_step_returns_the_live_output_else_its_stand_in() -> None:
    ran.clear()
    stub = SideEffects({"charge": {"charged": 99}})
    result = await run_event(checkout.stepstream_function, event(5), stub=stub,  # type: ignore[attr-defined]
                             events={}, invoked={})
    assert result.output == {"total": 10, "paid": {"charged": 99}, "mailed": "skipped",
                             "token": "t-1"}
    assert (ran, stub.missing) == ([], [])


async def test_a_side_effect_step_with_neither_is_missing() -> None:
    stub = SideEffects({})
    await run_event(checkout.stepstream_function, event(5), stub=stub,  # type: ignore[attr-defined]
                    events={}, invoked={})
    assert stub.missing == ["charge"]


async def test_side_effects_run_outside_a_shadow_run() -> None:
    ran.clear()
    result = await run(checkout, {"amount": 1})
    assert (result.output["paid"], result.output["mailed"], ran) == (
        {"charged": 2}, "sent", ["charge"])


def result(status: str, output: Any = None, error: str | None = None) -> RunResult:
    return RunResult(run_id="r", status=status, output=output,
                     error=None if error is None else ErrorInfo(type=error, message=""))


def test_outputs_are_compared_masked_as_the_live_one_was() -> None:
    live = {"status": "completed", "output": {"total": 10, "token": "***"}}
    secrets = SecretFields()
    assert compare(live, result("completed", {"total": 10, "token": "t-1"}), secrets) == (
        "same", [])
    assert compare(live, result("completed", {"total": 12, "token": "t-2"}), secrets) == (
        "different", ["output.total: 10 -> 12"])
    assert compare(live, result("failed", error="StepError"), secrets) == (
        "different", ["status: completed -> failed"])
    assert compare({"status": "running"}, result("completed", 1), secrets)[0] == "no_live_run"
    assert compare(None, result("completed", 1), secrets)[0] == "no_live_run"
    failed = {"status": "failed", "error": {"type": "StepError"}}
    assert compare(failed, result("failed", error="StepError"), secrets)[0] == "same"
    assert compare(failed, result("failed", error="KeyError"), secrets) == (
        "different", ["error: StepError -> KeyError"])


def test_differences_name_paths_and_stop_after_a_few() -> None:
    assert differences({"a": [1, 2], "b": {"c": True}}, {"a": [1, 3], "b": {"c": 1}, "d": 0},
                       "output") == ["output.a[1]: 2 -> 3", "output.b.c: true -> 1",
                                     "output.d: (absent) -> 0"]
    assert differences([1], [1, 2], "o") == ["o: [1] -> [1, 2]"]
    assert len(differences({str(n): n for n in range(20)}, {}, "o")) == 5


def test_the_report_keeps_the_first_examples_and_counts_all() -> None:
    report = ShadowReport("f", "t", None, None, examples=1)
    for n in range(3):
        report.count("different", Example(f"e-{n}", f"r-{n}", ["output: 1 -> 2"]))
    report.count("same", Example("e-9", "r-9", []))
    assert report.counts["different"] == 3 and report.counts["same"] == 1
    assert [e["event_id"] for e in report.as_json()["differences"]] == ["e-0"]
    assert report.lines()[1:] == ["different: event e-0 (run r-0)", "    output: 1 -> 2"]
