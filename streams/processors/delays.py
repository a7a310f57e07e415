"""The delay forwarder: each record waiting in a delay tier is sent on when it is due.

A retry's backoff, a sleep, a deferred step, a debounce or batch timer travels as a
``Delayed`` record in a tier topic (``streams.delays``). The forwarder holds each one on
a timer of its own (a short retry behind a long timer in the same tier leaves on time)
and, when it is due, sends it to its topic, or to the tier that fits what is left of its
delay, in a transaction that also releases it: the tier partition's committed offset
never passes a record not yet sent on, and a record is sent on once.

Memory does not grow with the number of timers pending: a record stays at most its
tier's hold in a tier, and every record of a tier partition waits the same hold from
its write, so a partition is in the order of wake times (the 1 s tier aside, whose hold
is within the window). The forwarder reads a partition only ``WINDOW_S`` ahead: once it
takes a record that wakes later than that, the runtime holds the partition back until
the record is that near (``Runtime.hold_back``), and the records behind it stay in
Kafka. A week's sleep hops through the 1 h tier; 200,000 sleeping runs cost the records
of one window in memory, not 200,000.

It runs on a runtime of its own (its own group and tasks): forwarding needs no state,
and the tiers carry few records and no deadline tighter than their fetch wait, while in
the engine's group their partitions would be named in every 5 ms fetch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Container
from typing import Any

from schemas.codec import DecodeError
from schemas.messages import Delayed
from stepstream.step import now_ms
from streams.kafka.task import Fenced, Record, Task
from streams.processors.outputs import Outputs

log = logging.getLogger("stepstream.delays")

HoldBack = Callable[[str, int, float], None]

WINDOW_S = 30.0
"""How far ahead of now the forwarder reads each tier partition."""
FETCH_WAIT_MS = 20
"""Longest wait of a fetch, and of a ``consume`` call for a batch (librdkafka's waits the
whole timeout unless the batch fills): a record is sent on at its due time if it arrives
before, so only a delay shorter than twice this can leave late, by at most this much."""


class DelayForwarder:
    """Processes the namespace's delay tiers."""

    def __init__(self, outputs: Outputs, *, targets: Container[str],
                 hold_back: HoldBack | None = None) -> None:
        """``hold_back(topic, partition, until_s)``: read no more of that partition
        until then (monotonic seconds)."""
        self.outputs, self.targets, self.hold_back = outputs, targets, hold_back
        settings = outputs.settings
        self.holds_ms = {settings.topic(f"delay.{name}"): int(hold.total_seconds() * 1000)
                         for name, hold in outputs.tiers.tiers}
        self.topics = list(self.holds_ms)
        self._timers: dict[Task, dict[tuple[str, int], asyncio.TimerHandle]] = {}

    def __len__(self) -> int:
        """Records held, waiting to be sent on."""
        return sum(len(timers) for timers in self._timers.values())

    async def process(self, task: Task, message: Any) -> None:
        try:
            delayed = self.outputs.codec.decode_as(message.value(), Delayed)
        except DecodeError as exc:
            task.send(self.outputs.quarantined(message, str(exc)))
            return
        topic, offset = message.topic(), message.offset()
        task.hold(topic, offset)
        wake_ms = min(delayed.due_ms, message.timestamp()[1] + self.holds_ms[topic])
        timers = self._timers.setdefault(task, {})
        wait_s = max(0.0, (wake_ms - now_ms()) / 1000)
        timers[(topic, offset)] = asyncio.get_running_loop().call_later(
            wait_s, self._due, task, message, delayed)
        if wait_s > WINDOW_S and self.hold_back is not None:  # what follows wakes later
            self.hold_back(topic, message.partition(), time.monotonic() + wait_s - WINDOW_S)

    def _due(self, task: Task, message: Any, delayed: Delayed) -> None:
        release = (message.topic(), message.offset())
        self._timers.get(task, {}).pop(release, None)
        committed = task.send_later([self._onward(message, delayed)], release=release)
        committed.add_done_callback(_seen)

    def _onward(self, message: Any, delayed: Delayed) -> Record:
        """Where ``delayed`` goes now: its topic, or the tier that fits what is left."""
        out = self.outputs
        if delayed.topic not in self.targets:
            return out.quarantined(message, f"delay target {delayed.topic!r} is unknown")
        if delayed.due_ms <= now_ms():
            return out.raw(delayed.topic, delayed.key, delayed.value)
        tier, again = out.tiers.wrap(delayed.topic, delayed.key, delayed.value,
                                     due_ms=delayed.due_ms)
        return out.raw(out.settings.topic(f"delay.{tier}"), delayed.key,
                       out.codec.encode(again))

    def task_ended(self, task: Task) -> None:
        """Revoked or fenced: its records are sent on by the partition's next owner."""
        for timer in self._timers.pop(task, {}).values():
            timer.cancel()


def _seen(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and isinstance(future.exception(), Fenced):
        log.info("a delayed record was not sent on before its partition moved; its next "
                 "owner sends it")
