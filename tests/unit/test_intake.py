"""Run starts wait while a worker has many active runs (``streams.intake``)."""

from __future__ import annotations

from dataclasses import replace

from schemas.messages import Dispatched, Event, Pending, RunState
from streams.intake import RunIntake
from streams.machine import COMPLETED, RUNNING


def run(run_id: str, *, dispatched: bool = True, status: str = RUNNING) -> RunState:
    return RunState(run_id=run_id, function_id="fn", event=Event(
        id=f"evt-{run_id}", name="test/e", data_json="{}", ts=0), status=status, seq=1,
        started_at=0, dispatched={1: Dispatched(step_id="", attempt=0)} if dispatched else {})


def intake(limit: int) -> tuple[RunIntake, list[bool]]:
    calls: list[bool] = []
    return RunIntake(limit, calls.append), calls


def test_intake_pauses_at_the_limit_and_resumes_at_half() -> None:
    gate, calls = intake(4)
    for i in range(4):
        gate.written(0, f"r{i}".encode(), run(f"r{i}"))
    assert calls == [True] and gate.paused

    gate.written(0, b"r0", run("r0", status=COMPLETED))
    assert calls == [True]  # 3 active: still above half
    gate.written(0, b"r1", None)  # a deleted run
    assert calls == [True, False] and not gate.paused and len(gate) == 2


def test_a_run_counts_once_however_often_it_is_written() -> None:
    gate, calls = intake(2)
    for _ in range(5):
        gate.written(0, b"r0", run("r0"))
    assert len(gate) == 1 and calls == []


def test_sleeping_and_waiting_runs_are_not_active() -> None:
    gate, calls = intake(1)
    asleep = replace(run("r0", dispatched=False),
                     pending={"nap": Pending(kind="sleep", timer_id="nap")})
    gate.written(0, b"r0", asleep)
    gate.written(1, b"r1", run("r1", dispatched=False))
    assert len(gate) == 0 and calls == []

    gate.written(0, b"r0", run("r0"))  # woke up, its next step is requested
    assert calls == [True]


def test_a_partition_restored_or_revoked_changes_the_count() -> None:
    gate, calls = intake(3)
    gate.rebuild(0, [(f"r{i}".encode(), run(f"r{i}")) for i in range(3)])
    gate.rebuild(1, [(b"x", run("x", dispatched=False))])
    assert len(gate) == 3 and calls == [True]

    gate.rebuild(0, [(b"r0", run("r0"))])  # restored again, with fewer active runs
    assert len(gate) == 1 and calls == [True, False]

    gate.written(1, b"y", run("y"))
    gate.forget(0)
    assert len(gate) == 1 and not gate.paused
