"""The delay forwarder: each record waiting in a delay tier is sent on when it is due.

A retry's backoff, a sleep, a deferred step, a debounce or batch timer travels as a
``Delayed`` record in a tier topic (``streams.delays``). The forwarder holds each one on
a timer of its own (a short retry behind a long timer in the same tier leaves on time)
and, when it is due, sends it to its topic, or to the tier that fits what is left of its
delay, in a transaction that also releases it: the tier partition's committed offset
never passes a record not yet sent on, and a record is sent on once.

It runs on a runtime of its own (its own group and tasks): forwarding needs no state,
and the tiers carry few records and no deadline tighter than their fetch wait, while in
the engine's group their partitions would be named in every 5 ms fetch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Container
from typing import Any

from schemas.codec import DecodeError
from schemas.messages import Delayed
from stepstream.step import now_ms
from streams.kafka.task import Fenced, Record, Task
from streams.processors.outputs import Outputs

log = logging.getLogger("stepstream.delays")

FETCH_WAIT_MS = 20
"""Longest wait of a fetch, and of a ``consume`` call for a batch (librdkafka's waits the
whole timeout unless the batch fills): a record is sent on at its due time if it arrives
before, so only a delay shorter than twice this can leave late, by at most this much."""


class DelayForwarder:
    """Processes the namespace's delay tiers."""

    def __init__(self, outputs: Outputs, *, targets: Container[str]) -> None:
        self.outputs, self.targets = outputs, targets
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
        timers[(topic, offset)] = asyncio.get_running_loop().call_later(
            max(0.0, (wake_ms - now_ms()) / 1000), self._due, task, message, delayed)

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
