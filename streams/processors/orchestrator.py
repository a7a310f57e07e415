"""The orchestrator: each runs message advances its run's state machine
(``streams.machine.advance``, pure), and the commands it returns become records
(DESIGN §4). The new state and the commands commit in the same transaction, so a
crash can neither store a state whose commands were lost nor send commands twice
from one state."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from schemas.codec import DecodeError
from schemas.messages import (
    RUN_MESSAGES,
    ChildFinished,
    ErrorInfo,
    FunctionControl,
    FunctionFinished,
    HistoryRecord,
    RunStarted,
    RunState,
    SingletonClaim,
    SingletonHolder,
    SingletonReleased,
)
from stepstream.step import now_ms
from streams.kafka.store import StateStore
from streams.kafka.task import Record, Task
from streams.leases import LeaseClock
from streams.machine import (
    FINAL_STATUSES,
    CancelChild,
    Command,
    Dispatch,
    Emit,
    NotifyParent,
    Release,
    RunPolicy,
    Schedule,
    SendToDlq,
    StartChild,
    Watch,
    advance,
    is_lease,
    resume,
)
from streams.machine import (
    Record as HistoryCommand,
)
from streams.pauses import FUNCTIONS, apply_control, held_runs, paused
from streams.processors.outputs import Outputs
from streams.singletons import SINGLETONS, on_claim, on_release

log = logging.getLogger("stepstream.orchestrator")

RUNS = "runs"
"""The name of the run-state store."""

INPUTS = (*RUN_MESSAGES, FunctionControl, SingletonClaim, SingletonReleased)


def _owner(record: Any) -> str | None:
    """What a record is about: its run, or its singleton key (None: a
    ``FunctionControl``, on every partition)."""
    if isinstance(record, SingletonClaim | SingletonReleased):
        return record.key
    return None if isinstance(record, FunctionControl) else str(record.run_id)


class Orchestrator:
    """Processes ``{namespace}.runs`` against the runs store of its task."""

    def __init__(self, outputs: Outputs, policies: dict[str, RunPolicy], leases: LeaseClock,
                 app_id: str) -> None:
        self.outputs, self.policies, self.leases, self.app_id = (
            outputs, policies, leases, app_id)
        self.codec, self.metrics = outputs.codec, outputs.metrics

    async def process(self, task: Task, message: Any) -> None:
        decoded = self.outputs.decoded(task, message, INPUTS, owner=_owner)
        if decoded is None:
            return
        if isinstance(decoded, FunctionControl):
            self._control(task, decoded)
            return
        if isinstance(decoded, SingletonClaim | SingletonReleased):
            self._singleton(task, decoded)
            return
        store: StateStore[RunState] = task.stores[RUNS]
        key = decoded.run_id.encode()
        try:
            state = store.get(key)
        except DecodeError as exc:
            # Nothing can advance a run whose state is unreadable (a corrupt changelog
            # record): its messages are set aside, visibly, until the state is repaired;
            # the partition goes on. A state a newer stepstream wrote is not a
            # DecodeError: the runtime waits for a newer worker (streams.kafka.newer).
            task.send(self.outputs.quarantined(
                message, f"the state of run {decoded.run_id} cannot be decoded: {exc}"))
            return
        function_id = state.function_id if state else getattr(decoded, "function_id", "")
        policy = self.policies.get(function_id)
        if policy is None and state is None and isinstance(decoded, RunStarted):
            for record in self._reject_unknown(decoded):
                task.send(record)
            return
        policy = policy or RunPolicy()
        if paused(task.stores[FUNCTIONS], function_id):
            policy = replace(policy, paused=True)
        new_state, commands = advance(state, decoded, policy)
        if new_state is state or new_state is None:
            log.debug("%s of %s at %s[%d]@%d changes nothing (state seq %s, pending %s)",
                      type(decoded).__name__, decoded.run_id, message.topic(),
                      message.partition(), message.offset(), state and state.seq,
                      state and list(state.pending.values()))
            return  # a duplicate or stale message: nothing changes
        self._apply(task, state, new_state, commands)

    def _apply(self, task: Task, old: RunState | None, new: RunState,
               commands: list[Command]) -> None:
        for command in commands:
            output = self._perform(new, command)
            if output is not None:
                task.send(output)
        task.stores[RUNS].put(new.run_id.encode(), new)
        self._count_transition(old, new)

    def _control(self, task: Task, control: FunctionControl) -> None:
        """A pause or resume of a function (``streams.pauses``); a resume dispatches the
        runs the pause held, in this same transaction."""
        if not apply_control(task.stores[FUNCTIONS], control) or control.paused:
            return
        held = held_runs(task.stores[RUNS], control.function_id, lambda exc: log.warning(
            "undecodable run state in the store: %s", exc))
        for state in held:
            new_state, commands = resume(state, control.ts)
            self._apply(task, state, new_state, commands)
        if held:
            log.info("resumed %d runs of %s on partition %d", len(held),
                     control.function_id, task.partition)

    def _singleton(self, task: Task, message: SingletonClaim | SingletonReleased) -> None:
        """A run claims or releases a singleton key (``streams.singletons``)."""
        table: StateStore[SingletonHolder] = task.stores[SINGLETONS]
        key = message.key.encode()
        holder = table.get(key)
        if isinstance(message, SingletonClaim):
            new, outputs = on_claim(holder, message, now_ms())
        else:
            new, outputs = on_release(holder, message, now_ms())
        if new is None:
            if holder is not None:
                table.delete(key)
        elif new != holder:
            table.put(key, new)
        for output in outputs:
            task.send(self.outputs.history(output) if isinstance(output, HistoryRecord)
                      else self.outputs.to("runs", output.run_id, output))

    def _perform(self, state: RunState, command: Command) -> Record | None:
        run_id, out = state.run_id, self.outputs
        match command:
            case Dispatch(request):
                return out.to("steps", run_id, request)
            case HistoryCommand(record):
                return out.history(record)
            case SendToDlq(letter):
                self.metrics.dead_letters.labels(state.function_id).inc()
                return out.to("steps.dlq", run_id, letter)
            case Schedule(_, timer) if is_lease(timer):
                self.leases.arm(timer)  # timed here, not through a delay tier (leases.py)
                return None
            case Schedule(delay_ms, timer):
                return out.delayed("runs", run_id, timer, delay_ms)
            case Watch(change):
                return out.to("waiters", change.waiter.event_name, change)
            case StartChild(start):
                return out.to("runs", start.run_id, start)
            case NotifyParent(finished):
                return out.to("runs", finished.run_id, finished)
            case CancelChild(cancel):
                return out.to("runs", cancel.run_id, cancel)
            case Release(released):
                return out.to("runs", released.key, released)
            case Emit(event):
                return out.to("events", event.id, event)
        raise TypeError(f"unknown command {command!r}")

    def _reject_unknown(self, start: RunStarted) -> list[Record]:
        """A run of a function no worker registers (``step.invoke`` of a typo)."""
        error = unknown_function(start.function_id, self.app_id)
        log.warning("%s", error.message)
        if not (start.parent_run_id and start.parent_step_id):
            return []
        return [self.outputs.to("runs", start.parent_run_id, ChildFinished(
            run_id=start.parent_run_id, step_id=start.parent_step_id,
            child_run_id=start.run_id, ts=now_ms(), error=error))]

    def _count_transition(self, old: RunState | None, new: RunState) -> None:
        if old is None:
            self.metrics.runs_started.labels(new.function_id).inc()
        if new.status in FINAL_STATUSES and (old is None or old.status not in FINAL_STATUSES):
            self.metrics.runs_finished.labels(new.function_id, new.status).inc()
            seconds = ((new.ended_at or new.started_at) - new.started_at) / 1000
            self.metrics.run_duration.labels(new.function_id, new.status).observe(seconds)


def unknown_function(function_id: str, app_id: str) -> ErrorInfo:
    return ErrorInfo(type="UnknownFunction",
                     message=f"function {function_id!r} is not registered in app {app_id!r} "
                             "on this worker")


def unknown_function_finished(request: Any, app_id: str) -> FunctionFinished:
    """The answer to a step request of a function this worker does not register."""
    return FunctionFinished(run_id=request.run_id, seq=request.seq, ts=now_ms(),
                            error=unknown_function(request.function_id, app_id))
