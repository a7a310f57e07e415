"""Chain leases, timed in the memory of the worker that owns the run.

Every eager chain of two steps or more holds a lease (``streams.machine``): if the chain
shows no life for a lease, its worker is presumed dead and the run is dispatched again.
Sent through a delay tier, each lease cost a message to the tier, its forward back to
the runs topic a lease later, and a transition of the orchestrator — for nearly every
chain, one that had ended long before. Here the orchestrator keeps the timer in memory
and, when it is due, sends the lease's ``TimerFired`` to the runs topic only if the
run's state still holds that lease.

The run state is the durable part: the lease is in it (``Dispatched.lease_due``), and
a worker that is assigned runs partitions arms the leases it finds in the table once it
has recovered them, so a kill -9 of the worker that armed a lease loses nothing. A lease
armed twice (a rescan, a replayed message) is timed once; one fired twice is ignored by
the machine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from schemas.messages import RunState, TimerFired
from stepstream.step import now_ms
from streams.machine import lease_timer

log = logging.getLogger("stepstream.leases")


class LeaseClock:
    """Fires lease timers that are still held when they are due."""

    def __init__(self, held: Callable[[TimerFired], bool],
                 fire: Callable[[TimerFired], Awaitable[Any]]) -> None:
        """``held(timer)``: whether the run's current state still holds the lease;
        ``fire(timer)``: send it to the runs topic."""
        self._held, self._fire = held, fire
        self._armed: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._firing: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._armed)

    def arm(self, timer: TimerFired) -> None:
        """Fire ``timer`` at its time (``timer.ts``) if its run still holds it then."""
        key = (timer.run_id, timer.timer_id)
        if key in self._armed:
            return
        delay_s = max(0.0, (timer.ts - now_ms()) / 1000)
        self._armed[key] = asyncio.get_running_loop().call_later(delay_s, self._due, timer)

    def arm_held(self, state: RunState) -> None:
        """Arm the leases ``state`` holds (a run found in a recovered table partition)."""
        for seq, dispatched in state.dispatched.items():
            if dispatched.lease_due is not None:
                self.arm(lease_timer(state.run_id, seq, dispatched.lease_due))

    def _due(self, timer: TimerFired) -> None:
        del self._armed[(timer.run_id, timer.timer_id)]
        if not self._held(timer):
            return  # the chain ended or was renewed: nothing to send (the common case)
        task = asyncio.ensure_future(self._fire(timer))
        self._firing.add(task)
        task.add_done_callback(self._fired)

    def _fired(self, task: asyncio.Task[Any]) -> None:
        self._firing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Only at shutdown (sends retry until the broker has them): the lease stays in
            # the run's state, and the partition's next owner arms it from there.
            log.warning("a chain lease was not sent: %s", task.exception())
