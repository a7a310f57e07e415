"""Property tests of the run state machine in a simulated world of faults.

A ``World`` plays every part around ``advance``: the orchestrator (apply a message,
perform the commands, then store the state — in that order, as the engine does),
the executor (the real ``execute`` with a real handler) and the topics between
them. Hypothesis decides which in-flight message is delivered next (a timer, a
retry's or a sleep's, fires whenever the world picks it), whether it is delivered
again later (duplicates), and whether the orchestrator crashes after performing
some or all of a transition's commands but before storing the state; the crashed
message is then redelivered against the old state, as Kafka redelivers an
uncommitted offset. The handler runs segments one after another: a single step,
steps in parallel (``asyncio.gather`` of ``step.run``), a sleep, or steps in
parallel with a sleep. Steps follow a script that depends only on the step and its
attempt number, so every run has one right answer: the fault-free run's.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.messages import (
    ChildFinished,
    DeadLetter,
    ErrorInfo,
    Event,
    EventMatched,
    FunctionFinished,
    HistoryRecord,
    PlannedStep,
    RunStarted,
    RunState,
    StepCompleted,
    StepFailed,
    StepPlanned,
    StepRequest,
    TimerFired,
)
from stepstream.client import Stepstream
from stepstream.context import Context
from stepstream.errors import NonRetriableError, StepError
from stepstream.execution import execute
from stepstream.retry import RetryPolicy
from stepstream.settings import Settings
from streams.machine import (
    FINAL_STATUSES,
    Dispatch,
    Emit,
    Record,
    RunPolicy,
    Schedule,
    SendToDlq,
    advance,
)
from streams.readmodel import apply_record

FUNCTION_ID = "world-fn"
RUN_ID = "world-run"
EVENT = Event(id="evt", name="world/go", data_json="{}", ts=1)


@dataclass(frozen=True)
class Segment:
    """What the handler awaits next: ``steps`` steps (in parallel if several), and a sleep."""

    steps: int
    sleep: bool

    def parallel(self) -> bool:
        return self.steps + self.sleep > 1


@dataclass(frozen=True)
class Script:
    """How each step of the run behaves: step ``i`` fails its first ``fail_times[i]`` attempts."""

    segments: tuple[Segment, ...]
    fail_times: tuple[int, ...]
    non_retriable: tuple[bool, ...]
    """A failing step raises NonRetriableError instead of RuntimeError."""
    catches: tuple[bool, ...]
    """The handler catches the StepError of a step that failed for good, and goes on."""
    retries: int

    def step_id(self, i: int) -> str:
        # Every step is called "work": replay must tell them apart by their ":n" suffix.
        return "work" if i == 0 else f"work:{i}"

    def result(self, i: int) -> tuple[Any, str | None]:
        """What step ``i`` gives the handler: (value, None), or (None, uncaught error)."""
        k = self.fail_times[i]
        if k == 0 or (not self.non_retriable[i] and k <= self.retries):
            return {"step": i, "attempt": k}, None
        if self.catches[i]:
            return f"caught {self.step_id(i)}", None
        last = 0 if self.non_retriable[i] else self.retries
        kind = "NonRetriableError" if self.non_retriable[i] else "RuntimeError"
        return None, f"step {self.step_id(i)!r} failed: {kind}: step {i} attempt {last} failed"

    def expected(self) -> tuple[str, Any]:
        """The final status and the output (or error message) of the run."""
        outputs: list[Any] = []
        first = 0
        for segment in self.segments:
            results = [self.result(i) for i in range(first, first + segment.steps)]
            first += segment.steps
            # gather() raises the error of the first failed step in call order: at
            # replay, every step of the segment is saved and fails in that order.
            errors = [error for _, error in results if error is not None]
            if errors:
                return "failed", errors[0]
            outputs += [value for value, _ in results]
            if segment.sleep:
                outputs.append("slept")
        return "completed", outputs

    def planned(self) -> list[list[tuple[str, str]]]:
        """The steps the executor reports together, segment by segment, as the run goes."""
        found, first, naps = [], 0, 0
        for segment in self.segments:
            members = [(self.step_id(i), "run") for i in range(first, first + segment.steps)]
            if segment.sleep:
                members.append(("nap" if naps == 0 else f"nap:{naps}", "sleep"))
                naps += 1
            if segment.sleep or len(members) > 1:
                found.append(members)
            if any(self.result(i)[1] for i in range(first, first + segment.steps)):
                break
            first += segment.steps
        return found


segments = st.lists(
    st.builds(Segment, steps=st.integers(min_value=0, max_value=3), sleep=st.booleans()).map(
        lambda s: s if s.steps else Segment(steps=0, sleep=True)),
    min_size=1, max_size=4).filter(lambda ss: 0 < sum(s.steps for s in ss) <= 8)


@st.composite
def scripts(draw: st.DrawFn) -> Script:
    plan = draw(segments)
    n = sum(s.steps for s in plan)
    return Script(
        segments=tuple(plan),
        fail_times=draw(st.tuples(*[st.integers(min_value=0, max_value=3)] * n)),
        non_retriable=draw(st.tuples(*[st.booleans()] * n)),
        catches=draw(st.tuples(*[st.booleans()] * n)),
        retries=draw(st.integers(min_value=0, max_value=3)),
    )


class Chooser:
    """Where the world's nondeterminism comes from; the fault-free one is FIFO."""

    def pick(self, n: int) -> int:
        return 0

    def duplicate(self) -> bool:
        return False

    def crash(self, n_commands: int) -> int | None:
        """None to store the state; else how many commands were performed before the crash."""
        return None


class FaultyChooser(Chooser):
    def __init__(self, data: st.DataObject, duplicates: int, crashes: int) -> None:
        self.data, self.duplicates, self.crashes = data, duplicates, crashes

    def pick(self, n: int) -> int:
        return self.data.draw(st.integers(min_value=0, max_value=n - 1), label="deliver")

    def duplicate(self) -> bool:
        if self.duplicates and self.data.draw(st.booleans(), label="duplicate"):
            self.duplicates -= 1
            return True
        return False

    def crash(self, n_commands: int) -> int | None:
        if self.crashes and self.data.draw(st.booleans(), label="crash"):
            self.crashes -= 1
            return self.data.draw(st.integers(min_value=0, max_value=n_commands),
                                  label="commands performed before the crash")
        return None


@dataclass
class World:
    script: Script
    chooser: Chooser
    state: RunState | None = None
    pool: list[tuple[str, Any]] = field(default_factory=list)
    """In-flight messages: ("runs", message) for the orchestrator, ("steps", request)."""
    redeliver: Any = None
    """The runs message a crashed orchestrator has not committed; it comes back first."""
    history: list[HistoryRecord] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    executions: list[tuple[int, int]] = field(default_factory=list)
    requests: list[StepRequest] = field(default_factory=list)
    dispatched_by: dict[int, RunState] = field(default_factory=dict)
    """seq -> the state whose transition dispatched it."""
    stored: list[RunState] = field(default_factory=list)
    emitted: list[Event] = field(default_factory=list)
    outcomes: list[Any] = field(default_factory=list)
    """What the executor reported, in order."""
    awaited_timers: set[TimerFired] = field(default_factory=set)
    """Timers scheduled by stored transitions and not fired yet: only these move the run."""
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    """The executor's event loop: step discovery turns it (gather, the gate)."""

    def __post_init__(self) -> None:
        ss = Stepstream(app_id="world", settings=Settings())
        script, executions = self.script, self.executions

        def behave(i: int, attempt: int) -> dict[str, int]:
            executions.append((i, attempt))
            if attempt < script.fail_times[i]:
                message = f"step {i} attempt {attempt} failed"
                raise NonRetriableError(message) if script.non_retriable[i] else RuntimeError(
                    message)
            return {"step": i, "attempt": attempt}

        async def work(ctx: Context, i: int) -> Any:
            try:
                return await ctx.step.run("work", behave, i, ctx.attempt)
            except StepError as exc:
                if not script.catches[i]:
                    raise
                return f"caught {exc.step_id}"

        async def nap(ctx: Context) -> str:
            await ctx.step.sleep("nap", timedelta(seconds=5))
            return "slept"

        @ss.function(id=FUNCTION_ID, trigger=EVENT.name,
                     retry=RetryPolicy(retries=script.retries, jitter=0.5))
        async def handler(ctx: Context) -> list[Any]:
            outputs: list[Any] = []
            first = 0
            for segment in script.segments:
                calls = [work(ctx, i) for i in range(first, first + segment.steps)]
                calls += [nap(ctx)] if segment.sleep else []
                first += segment.steps
                if segment.parallel():
                    outputs += await asyncio.gather(*calls)
                else:
                    outputs.append(await calls[0])
            return outputs

        self.function = ss.functions[FUNCTION_ID]
        self.policy = RunPolicy(retry=self.function.retry)
        self.pool.append(("runs", RunStarted(run_id=RUN_ID, function_id=FUNCTION_ID,
                                             event=EVENT, ts=1)))

    def run(self) -> RunState:
        try:
            for _ in range(5_000):
                if not self.pool and self.redeliver is None:
                    assert self.state is not None
                    return self.state
                self.tick()
            raise AssertionError("the run did not settle")
        finally:
            self.close()

    def close(self) -> None:
        """Let the executor's leftover tasks (discovery, released siblings) finish."""
        pending = asyncio.all_tasks(self.loop)
        if pending:
            self.loop.run_until_complete(asyncio.wait(pending))
        self.loop.close()

    def tick(self) -> None:
        # A crashed orchestrator resumes at its uncommitted message before any later
        # one on the runs topic; the executor and delay tiers go on meanwhile.
        if self.redeliver is not None:
            candidates = [-1] + [i for i, item in enumerate(self.pool) if item[0] == "steps"]
        else:
            candidates = list(range(len(self.pool)))
        index = candidates[self.chooser.pick(len(candidates))]
        if index < 0:
            topic, message = "runs", self.redeliver
        else:
            topic, message = self.pool[index]
            if not self.chooser.duplicate():
                del self.pool[index]
        if topic == "steps":
            self.requests.append(message)
            message = self.with_state(message)
            outcome = self.loop.run_until_complete(
                execute(self.function, message, max_output_bytes=10_000))
            self.outcomes.append(outcome)
            self.pool.append(("runs", outcome))
        else:
            self.orchestrate(message)

    def orchestrate(self, message: Any) -> None:
        old = self.state
        new, commands = advance(old, message, self.policy)
        # Applying the same message again straight away changes nothing.
        assert advance(new, message, self.policy) == (new, [])
        if new is old:
            assert commands == []
        crash_after = self.chooser.crash(len(commands))
        for command in commands if crash_after is None else commands[:crash_after]:
            self.perform(command, new)
        if crash_after is not None:
            self.redeliver = message
            return
        self.redeliver = None
        if new is not None and new is not old:
            self.check_stored(old, new)
            if isinstance(message, TimerFired):
                assert message in self.awaited_timers, "a timer nobody awaits moved the run"
                self.awaited_timers.discard(message)
            self.state = new
            self.stored.append(new)
            for command in commands:
                if isinstance(command, Schedule):
                    self.awaited_timers.add(command.timer)

    def with_state(self, request: StepRequest) -> StepRequest:
        """The request with its run's memo, as the executor reads it from the run's
        state. Under transactions that state is at least the one that dispatched the
        request; the crashes here are harsher (commands out, state not stored), so the
        dispatching state stands in when the stored one is older."""
        state = self.state
        if state is None or state.seq < request.seq:
            state = self.dispatched_by[request.seq]
        return replace(request, memo=state.memo, batch=state.batch)

    def perform(self, command: Any, state: RunState | None) -> None:
        match command:
            case Record(record):
                self.history.append(record)
            case Dispatch(request):
                assert state is not None
                self.dispatched_by[request.seq] = state
                self.pool.append(("steps", request))
            case Schedule(_, timer):
                self.pool.append(("runs", timer))
            case SendToDlq(letter):
                self.dead_letters.append(letter)
            case Emit(event):
                self.emitted.append(event)
            case _:
                raise AssertionError(f"unknown command {command!r}")

    def check_stored(self, old: RunState | None, new: RunState) -> None:
        # Each outstanding request has its own seq; the handler is dispatched alone.
        assert all(int(seq) <= new.seq for seq in new.dispatched)
        untargeted = [d for d in new.dispatched.values() if not d.step_id]
        assert not untargeted or (len(new.dispatched), len(new.pending)) == (1, 0)
        assert not set(new.pending) & {d.step_id for d in new.dispatched.values()}
        assert not set(new.pending) & set(new.memo)
        if old is None:
            return
        assert new.seq >= old.seq, "seq went back"
        assert new.history_seq >= old.history_seq, "history seq went back"
        if new.status == "completed":  # what the table keeps: completed_marker
            assert not new.memo and not new.batch and new.event.data_json == "{}"
            return
        for step_id, entry in old.memo.items():
            assert new.memo.get(step_id) == entry, f"memo lost or changed {step_id!r}"
        if old.status in FINAL_STATUSES:
            raise AssertionError("a finished run changed")


def fault_free(script: Script) -> World:
    world = World(script, Chooser())
    world.run()
    return world


def outcome(state: RunState) -> tuple[str, Any]:
    if state.status == "completed":
        return state.status, json.loads(state.output_json or "null")
    assert state.error is not None
    return state.status, state.error.message


def deduplicated(history: list[HistoryRecord]) -> list[HistoryRecord]:
    """The history as the projector keeps it: one record per seq."""
    by_seq: dict[int, HistoryRecord] = {}
    for record in history:
        if record.seq in by_seq:
            assert by_seq[record.seq] == record, f"two different records with seq {record.seq}"
        by_seq[record.seq] = record
    return [by_seq[seq] for seq in sorted(by_seq)]


def read_model(history: list[HistoryRecord]) -> dict[str, Any]:
    """What the run page shows, without the wall-clock times the executor stamps."""
    doc: dict[str, Any] | None = None
    for record in history:
        doc = apply_record(doc, record)
    assert doc is not None
    return {"status": doc["status"], "output": doc["output"],
            "error": doc["error"] and doc["error"]["message"],
            # Parallel steps finish in any order: compare them by id.
            "steps": sorted((s["id"], s["status"], s["attempts"], json.dumps(s["output"]),
                             [(h["attempt"], h["outcome"]) for h in s["history"]])
                            for s in doc["steps"])}


@settings(max_examples=200, deadline=None)
@given(script=scripts())
def test_the_fault_free_run_gives_the_scripted_answer(script: Script) -> None:
    world = fault_free(script)

    assert outcome(world.state) == script.expected()
    assert [r.seq for r in world.history] == list(range(1, len(world.history) + 1))
    # Parallel steps and sleeps are planned together, one replay for each segment.
    planned = [[(p.step_id, p.kind) for p in outcome.steps] for outcome in world.outcomes
               if isinstance(outcome, StepPlanned)]
    assert planned == script.planned()


@settings(max_examples=200, deadline=None)
@given(script=scripts(), data=st.data(),
       duplicates=st.integers(min_value=0, max_value=12),
       crashes=st.integers(min_value=0, max_value=4))
def test_duplicates_reordering_and_crashes_do_not_change_the_run(
        script: Script, data: st.DataObject, duplicates: int, crashes: int) -> None:
    reference = fault_free(script)
    world = World(script, FaultyChooser(data, duplicates, crashes))

    state = world.run()

    # The same answer as without faults.
    assert state.status in FINAL_STATUSES
    assert outcome(state) == outcome(reference.state) == script.expected()
    assert state.memo == reference.state.memo
    # The history topic only ever moves forward, and a redelivered transition writes
    # the very same records again, so the projector's dedupe by seq is enough.
    assert [r.seq for r in world.history] == sorted(r.seq for r in world.history)
    history = deduplicated(world.history)
    assert [r.seq for r in history] == list(range(1, state.history_seq + 1))
    assert read_model(world.history) == read_model(reference.history)
    # Each step's result is applied exactly once.
    completed = [r.step_id for r in history if r.kind == "step.completed"]
    failed_for_good = [r.step_id for r in history
                       if r.kind == "step.failed" and r.next_attempt_at is None]
    assert len(completed) == len(set(completed))
    if state.status == "completed":  # its memo is gone (completed_marker): the reference's
        expected = deduplicated(reference.history)
        assert sorted(completed) == sorted(
            r.step_id for r in expected if r.kind == "step.completed")
        assert sorted(failed_for_good) == sorted(
            r.step_id for r in expected if r.kind == "step.failed" and r.next_attempt_at is None)
    else:
        assert sorted(completed) == sorted(
            k for k, v in state.memo.items() if v.error is None)
        assert sorted(failed_for_good) == sorted(k for k, v in state.memo.items() if v.error)
    assert {(d.step_id, d.attempt) for d in world.dead_letters} == {
        (d.step_id, d.attempt) for d in reference.dead_letters}
    assert len([r for r in history if r.kind.startswith("run.")]) == 2  # started, finished
    # A failed run tells on_failure handlers once (the same event however often sent).
    sent = {(e.id, e.name, e.data_json) for e in world.emitted}
    assert sent == {(e.id, e.name, e.data_json) for e in reference.emitted}
    assert len(sent) == (state.status == "failed")
    # No step runs more attempts than its policy allows, even when run twice.
    attempts: dict[int, set[int]] = defaultdict(set)
    for i, attempt in world.executions:
        attempts[i].add(attempt)
    for i, seen in attempts.items():
        assert seen <= set(range(script.retries + 1))
        assert seen <= set(range(script.fail_times[i] + 1))
        if script.non_retriable[i]:
            assert seen == {0}
    assert all(r.attempt <= script.retries for r in world.requests)
    # Whatever order they arrive in, the stored states only move forward.
    seqs = [s.seq for s in world.stored]
    assert seqs == sorted(seqs)


@settings(max_examples=200, deadline=None)
@given(script=scripts(), data=st.data())
def test_stale_messages_are_ignored_in_every_reachable_state(
        script: Script, data: st.DataObject) -> None:
    world = fault_free(script)
    state = data.draw(st.sampled_from(world.stored), label="state")
    old_seq = data.draw(st.integers(min_value=0, max_value=state.seq + 2).filter(
        lambda seq: str(seq) not in state.dispatched), label="stale seq")
    step_id = data.draw(st.sampled_from(["work", "work:1", "nap", "nap:1"]), label="step")
    attempt = data.draw(st.integers(min_value=0, max_value=4), label="attempt")
    waiting = {p.timer_id for p in state.pending.values()}
    stale = [
        StepCompleted(run_id=RUN_ID, seq=old_seq, step_id=step_id, attempt=attempt,
                      output_json='"stale"', started_at=0, ended_at=0),
        StepFailed(run_id=RUN_ID, seq=old_seq, step_id=step_id, attempt=attempt,
                   error=ErrorInfo(type="RuntimeError", message="stale"), retriable=True,
                   started_at=0, ended_at=0),
        StepPlanned(run_id=RUN_ID, seq=old_seq, ts=0,
                    steps=[PlannedStep(step_id="new", kind="run")]),
        FunctionFinished(run_id=RUN_ID, seq=old_seq, ts=0, output_json='"stale"'),
        *[TimerFired(run_id=RUN_ID, timer_id=timer_id, ts=0)
          for timer_id in (f"retry:{step_id}:{attempt}", f"sleep:{step_id}", "")
          if timer_id not in waiting],
        # This world neither waits for events nor invokes functions.
        EventMatched(run_id=RUN_ID, step_id=step_id, event=EVENT, ts=0),
        ChildFinished(run_id=RUN_ID, step_id=step_id, child_run_id=f"{RUN_ID}.{step_id}",
                      ts=0, output_json="1"),
        RunStarted(run_id=RUN_ID, function_id=FUNCTION_ID, event=EVENT, ts=0),
    ]
    for message in stale:
        assert advance(state, message, world.policy) == (state, [])
