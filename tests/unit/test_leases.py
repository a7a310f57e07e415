"""The lease clock: chain leases timed in memory, sent only while the run holds them."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from schemas.messages import Dispatched, Event, RunState, TimerFired
from stepstream.step import now_ms
from streams.leases import LeaseClock
from streams.machine import holds_lease, lease_timer

EVENT = Event(id="e", name="t/go", data_json="{}", ts=1)


class Runs:
    """The runs' current states, and the lease timers sent to the runs topic."""

    def __init__(self) -> None:
        self.states: dict[str, RunState] = {}
        self.sent: list[TimerFired] = []
        self.arrived = asyncio.Event()
        self.clock = LeaseClock(self.held, self.send)

    def held(self, timer: TimerFired) -> bool:
        state = self.states.get(timer.run_id)
        return state is not None and holds_lease(state, timer)

    async def send(self, timer: TimerFired) -> None:
        self.sent.append(timer)
        self.arrived.set()

    def chain(self, run_id: str, due: int) -> RunState:
        """A run whose dispatch 1 is a chain holding the lease due at ``due``."""
        state = RunState(run_id=run_id, function_id="fn", event=EVENT, status="running",
                         seq=1, started_at=0,
                         dispatched={"1": Dispatched(step_id="", attempt=0, chain=2,
                                                     lease_due=due, alive_at=due - 50)})
        self.states[run_id] = state
        return state


async def test_a_held_lease_is_sent_once_when_due_even_if_armed_twice() -> None:
    runs = Runs()
    due = now_ms() + 30
    timer = lease_timer("r", 1, due)
    runs.chain("r", due)
    runs.clock.arm(timer)
    runs.clock.arm(timer)  # a replayed message performs the same command again
    await asyncio.wait_for(runs.arrived.wait(), 5)
    assert now_ms() >= due
    await asyncio.sleep(0.05)
    assert runs.sent == [timer]
    assert len(runs.clock) == 0


async def test_a_lease_the_run_no_longer_holds_sends_nothing() -> None:
    runs = Runs()
    due = now_ms() + 10
    ended, renewed = runs.chain("ended", due), runs.chain("renewed", due)
    runs.states["ended"] = replace(ended, dispatched={})
    later = Dispatched(step_id="", attempt=0, chain=3, lease_due=due + 5000)
    runs.states["renewed"] = replace(renewed, dispatched={"1": later})
    runs.clock.arm(lease_timer("ended", 1, due))
    runs.clock.arm(lease_timer("renewed", 1, due))
    runs.clock.arm(lease_timer("gone", 1, due))  # no state here (another worker's run)
    await asyncio.sleep(0.2)
    assert runs.sent == []
    assert len(runs.clock) == 0


async def test_the_leases_of_a_recovered_run_are_armed_from_its_state() -> None:
    runs = Runs()
    overdue = now_ms() - 1000  # expired while nobody owned the partition
    runs.clock.arm_held(runs.chain("r", overdue))
    await asyncio.wait_for(runs.arrived.wait(), 5)
    assert runs.sent == [lease_timer("r", 1, overdue)]
