"""Cron schedules: each one's ticks start runs from one task, exactly once.

A cron function's schedule belongs to the engine task of the partition its function id
hashes to (``partition_of``), so one worker at a time starts its ticks. That task keeps
a ``ScheduleState`` in its functions table (``streams.pauses``, under
``schedule_key``): every tick up to ``done_until`` was started or skipped. A punctuation
(``Runtime.every``) sends the runs of the ticks that are due and moves ``done_until`` in
the same transaction, so a tick is started once however many workers run, die or
restart; its run id is fixed by the tick too, as a second guard (a rolling upgrade from
a version where every worker sent every tick).

A worker that takes the partition over restores the table and starts the ticks missed
meanwhile, if they are recent enough: within the function's ``Cron.catch_up`` window
(at most ``MAX_CATCH_UP_TICKS``, the latest), or, without one, within
``HANDOVER_GRACE_MS`` (a partition moving from a worker that left). Older ticks are
skipped, with a warning. A schedule seen for the first time starts from now: nothing
before it was missed.

A paused function (``FunctionControl`` in the same table) starts no tick; on resume, the
ticks of the pause are skipped, catch-up or not (as Kubernetes' suspended CronJobs and
Temporal's paused schedules do): a resume does not start a burst of stale runs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.messages import Event, FunctionControl, RunStarted, ScheduleState
from stepstream.clock import Clock, now_ms
from stepstream.cron import MAX_CATCH_UP_TICKS, Cron
from stepstream.events import run_id_for
from stepstream.function import FunctionDef
from streams.kafka.task import Task
from streams.partitioner import partition_of
from streams.pauses import FUNCTIONS
from streams.processors.outputs import Outputs
from streams.singletons import start_records

log = logging.getLogger("stepstream.schedules")

HANDOVER_GRACE_MS = 60_000
"""Without a catch-up window, how late a tick may still start: the time a schedule's
partition takes to move from a worker that left (the session timeout, a restore)."""
TICK_EVERY_S = 0.2
"""How often each task looks for due ticks: a tick starts at most this late."""
CRON_EVENT = "stepstream/cron"
"""The name of the events of cron runs."""


def schedule_key(function_id: str) -> bytes:
    """Where a schedule's state is in the functions table ('@' is in no function id)."""
    return f"{function_id}@schedule".encode()


@dataclass(frozen=True)
class Due:
    """What a schedule does now: the ticks it starts, where it then stands, and why
    earlier ticks were skipped, if they were."""

    ticks: list[int]
    done_until: int
    skipped: str | None = None


def due(cron: Cron, done_until: int | None, control: FunctionControl | None,
        now: int) -> Due:
    """The ticks of ``cron`` to start at ``now``, given where it stands (None: a new
    schedule) and its function's latest pause or resume."""
    if done_until is None:
        return Due([], now)
    if control is not None and control.paused:
        return Due([], done_until)
    after = done_until if control is None else max(done_until, control.ts)
    first = cron.next_tick(after)
    if first is None or first > now:
        return Due([], done_until)
    window = cron.catch_up_ms or HANDOVER_GRACE_MS
    start = max(after, now - window - 1)  # ticks at most ``window`` old
    ticks, capped = cron.latest(start, now, MAX_CATCH_UP_TICKS)
    skipped = None
    if start > after and first <= start:
        skipped = (f"ticks from {_iso(first)} to {_iso(start)} were missed and are older "
                   f"than its catch-up window ({timedelta(milliseconds=window)}): skipped")
    if capped:
        skipped = (f"more than {MAX_CATCH_UP_TICKS} ticks were missed within its catch-up "
                   f"window: the latest {MAX_CATCH_UP_TICKS} start, from {_iso(ticks[0])}, "
                   "the earlier ones are skipped")
    return Due(ticks, now, skipped)


def cron_start(function_id: str, cron: Cron, tick: int, now: int) -> RunStarted:
    """The run of one tick; its event (id, data, ``ts``) depends on the tick alone."""
    data = {"cron": cron.expression, "tz": cron.tz, "tick": tick,
            "scheduled_at": datetime.fromtimestamp(tick / 1000, cron.zone).isoformat()}
    event = Event(id=f"cron:{function_id}:{tick}", name=CRON_EVENT, data_json=json.dumps(data),
                  ts=tick)
    # Started now: a caught-up run's timeouts count from its start, not from its tick.
    return RunStarted(run_id=run_id_for(function_id, event.id), function_id=function_id,
                      event=event, ts=max(now, tick))


class Schedules:
    """Starts the ticks of the cron functions whose ids fall in each task's partition.

    Args:
        outputs: where records go.
        functions: the app's functions (those with ``cron`` have schedules).
        partitions: the partition count of the runs topic.
        clock: epoch ms; the wall clock unless told otherwise (a test's virtual one).
    """

    def __init__(self, outputs: Outputs, functions: Mapping[str, FunctionDef],
                 partitions: int, *, clock: Clock = now_ms) -> None:
        self.outputs, self.functions, self.clock = outputs, functions, clock
        self.by_partition: dict[int, list[tuple[str, Cron]]] = {}
        for function in functions.values():
            if function.cron is not None:
                self.by_partition.setdefault(partition_of(function.id.encode(), partitions),
                                             []).append((function.id, function.cron))

    def __bool__(self) -> bool:
        return bool(self.by_partition)

    def tick(self, task: Task) -> None:
        """Start the task's due ticks, in its open transaction (a punctuation)."""
        table = task.stores[FUNCTIONS]
        now = self.clock()
        for function_id, cron in self.by_partition.get(task.partition, ()):
            key = schedule_key(function_id)
            state: Any = table.get(key)
            control: Any = table.get(function_id.encode())
            now_due = due(cron, state.done_until if isinstance(state, ScheduleState) else None,
                          control if isinstance(control, FunctionControl) else None, now)
            if now_due.skipped:
                log.warning("schedule of %s (%s): %s", function_id, cron.describe(),
                            now_due.skipped)
            if state is None or now_due.done_until != state.done_until:
                table.put(key, ScheduleState(function_id=function_id,
                                             done_until=now_due.done_until))
            starts = [cron_start(function_id, cron, tick, now) for tick in now_due.ticks]
            for record in start_records(self.outputs, self.functions, starts):
                task.send(record)
            for tick in now_due.ticks:
                self.outputs.metrics.cron_ticks.labels(
                    function_id, "late" if now - tick > 1000 else "on_time").inc()


def next_ticks(functions: Mapping[str, FunctionDef], now: int) -> dict[str, int | None]:
    """Each cron function's next tick after ``now`` (for the API)."""
    return {f.id: f.cron.next_tick(now) for f in functions.values() if f.cron is not None}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")
