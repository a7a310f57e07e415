"""The delay tiers' consumer: each delayed record held until it is due, then sent on.

A retry's backoff, a sleep, a deferred step, a debounce or batch timer travels as a
``Delayed`` record in a tier topic (``streams.delays``). The forwarder holds each one in
memory on a timer of its own (a short retry behind a long timer in the same tier leaves
on time) and, when it is due, sends it to its topic, or to the tier that fits what is
left of its delay.

It is a confluent-kafka consumer in a group of its own, not a Faust agent: the tiers
carry few records and no deadline tighter than the fetch wait here, while on the agents'
consumer their partitions (half of those a worker reads) were named in every fetch, every
5 ms. At-least-once: a partition's committed offset never passes a record not yet sent
on; a crash or a rebalance sends those again, and their receivers dedupe (timers by id,
step outcomes by seq).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from collections.abc import Awaitable, Callable, Container
from dataclasses import dataclass, field
from typing import Any

from schemas.codec import AvroCodec, DecodeError
from schemas.messages import Delayed
from stepstream.settings import Settings
from stepstream.step import now_ms
from streams.delays import DelayTiers
from streams.group_consumer import Lag, commit, group_consumer, lag_of
from streams.sender import Sender

log = logging.getLogger("stepstream.delays")

Quarantine = Callable[[Any, str], Awaitable[None]]
"""Sets aside a confluent-kafka message that cannot be sent on, with the reason."""

FETCH_WAIT_MS = 20
"""Longest wait of a fetch, and of a ``consume`` call for a batch (librdkafka's waits the
whole timeout unless the batch fills): a record is sent on at its due time if it arrives
before, so only a delay shorter than twice this can leave late, by at most this much."""

BATCH = 500
COMMIT_INTERVAL_S = 0.5
_REVOKE_TIMEOUT_S = 10.0

Partition = tuple[str, int]


@dataclass
class _Held:
    """A partition's records taken in and not yet sent on."""

    next_offset: int
    tasks: dict[int, asyncio.Task[None]] = field(default_factory=dict)

    def committable(self) -> int:
        return min(self.tasks, default=self.next_offset)


def _sent_on(held: _Held, offset: int, task: asyncio.Task[None]) -> None:
    """A record sent on is no longer held; one that failed or was stopped still is."""
    if held.tasks.get(offset) is task and not task.cancelled() and task.exception() is None:
        del held.tasks[offset]


class DelayForwarder:
    """Consumes the namespace's delay tiers and sends each record on when it is due."""

    def __init__(self, settings: Settings, tiers: DelayTiers, sender: Sender,
                 codec: AvroCodec, *, targets: Container[str], quarantine: Quarantine,
                 stopping: Callable[[], bool]) -> None:
        self.settings, self.tiers, self.sender, self.codec = settings, tiers, sender, codec
        self.targets, self.quarantine, self.stopping = targets, quarantine, stopping
        self.group_id = f"{settings.namespace}-delays"
        self.holds_ms = {settings.topic(f"delay.{name}"): int(hold.total_seconds() * 1000)
                         for name, hold in tiers.tiers}
        self.topics = list(self.holds_ms)
        self._thread = concurrent.futures.ThreadPoolExecutor(1, "stepstream-delays")
        self._held: dict[Partition, _Held] = {}
        self._committed: dict[Partition, int] = {}
        self._closing = False
        self.lag: Lag = {}
        """Records not yet taken in, by tier partition this worker has."""
        self.joined = False
        """Whether the consumer has joined its group (had its first assignment): before,
        records sent to the tiers wait for it (the worker is not ready)."""

    def __len__(self) -> int:
        """Records held, waiting to be sent on."""
        return sum(len(held.tasks) for held in self._held.values())

    async def run(self) -> None:
        """Forward until cancelled; then commit what was sent on and leave the group."""
        loop = asyncio.get_running_loop()
        consumer = group_consumer(self.settings, self.group_id, fetch_wait_ms=FETCH_WAIT_MS)

        def released(partitions: list[Any]) -> dict[Partition, int]:
            # Called by librdkafka inside consume(), on the consumer's thread; the held
            # records belong to the event loop, which is free meanwhile.
            if self._closing or loop.is_closed():
                return {}
            done = asyncio.run_coroutine_threadsafe(
                self._release({(tp.topic, tp.partition) for tp in partitions}), loop)
            try:
                return done.result(_REVOKE_TIMEOUT_S)
            except Exception:  # the loop is stopping: the next owner sends them again
                return {}

        def revoked(_consumer: Any, partitions: list[Any]) -> None:
            commit(consumer, released(partitions), self._commit_failed)

        def lost(_consumer: Any, partitions: list[Any]) -> None:
            released(partitions)  # no longer ours to commit

        def assigned(_consumer: Any, _partitions: list[Any]) -> None:
            self.joined = True

        try:
            await loop.run_in_executor(self._thread, lambda: consumer.subscribe(
                self.topics, on_assign=assigned, on_revoke=revoked, on_lost=lost))
            committed_at = loop.time()
            while True:
                messages = await loop.run_in_executor(self._thread, self._take, consumer)
                for message in messages:
                    await self._hold(message)
                if loop.time() - committed_at >= COMMIT_INTERVAL_S:
                    committed_at = loop.time()
                    await self._commit(consumer)
        finally:
            for held in self._held.values():
                for task in held.tasks.values():
                    task.cancel()
            await asyncio.shield(self._close(consumer))

    def _take(self, consumer: Any) -> list[Any]:
        messages: list[Any] = consumer.consume(BATCH, FETCH_WAIT_MS / 1000)
        self.lag = lag_of(consumer)
        return messages

    async def _hold(self, message: Any) -> None:
        if message.error() is not None:
            log.warning("delay consumer: %s", message.error())
            return
        partition = (message.topic(), message.partition())
        held = self._held.setdefault(partition, _Held(message.offset()))
        held.next_offset = message.offset() + 1
        try:
            delayed = self.codec.decode_as(message.value(), Delayed)
        except DecodeError as exc:
            task = asyncio.ensure_future(self.quarantine(message, str(exc)))
        else:
            produced_ms = message.timestamp()[1]
            wake_ms = min(delayed.due_ms, produced_ms + self.holds_ms[message.topic()])
            task = asyncio.ensure_future(
                self._forward(message, delayed, max(0.0, (wake_ms - now_ms()) / 1000)))
        held.tasks[message.offset()] = task
        task.add_done_callback(functools.partial(_sent_on, held, message.offset()))

    async def _forward(self, message: Any, delayed: Delayed, wait_s: float) -> None:
        """Send ``delayed`` on (to its topic, or the tier that fits what is left of its
        delay) once ``wait_s`` has passed."""
        await asyncio.sleep(wait_s)
        try:
            if delayed.topic not in self.targets:
                await self.quarantine(message, f"delay target {delayed.topic!r} is unknown")
            elif delayed.due_ms <= now_ms():
                await (await self.sender.send(delayed.topic, delayed.key, delayed.value))
            else:
                tier, again = self.tiers.wrap(delayed.topic, delayed.key, delayed.value,
                                              due_ms=delayed.due_ms)
                await (await self.sender.send(self.settings.topic(f"delay.{tier}"),
                                              delayed.key, self.codec.encode(again)))
        except asyncio.CancelledError:
            raise
        except Exception:
            if not self.stopping():
                log.exception("sending a delayed record on failed; it is sent again by "
                              "the partition's next owner")
            raise  # held: its offset is not committed past

    async def _release(self, partitions: set[Partition]) -> dict[Partition, int]:
        """Partitions revoked: stop their timers; what was sent on may be committed."""
        offsets = {}
        for partition in partitions:
            held = self._held.pop(partition, None)
            if held is None:
                continue
            offsets[partition] = held.committable()
            for task in held.tasks.values():
                task.cancel()
            self._committed.pop(partition, None)
        return offsets

    def _due_commits(self) -> dict[Partition, int]:
        due = {p: held.committable() for p, held in self._held.items()}
        return {p: offset for p, offset in due.items() if self._committed.get(p) != offset}

    async def _commit(self, consumer: Any) -> None:
        offsets = self._due_commits()
        if not offsets:
            return
        loop = asyncio.get_running_loop()
        if await loop.run_in_executor(self._thread, commit, consumer, offsets,
                                      self._commit_failed):
            self._committed.update(offsets)  # a failed commit is tried again next round

    async def _close(self, consumer: Any) -> None:
        self._closing = True  # what close() revokes is committed here, once
        offsets = self._due_commits()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, commit, consumer, offsets, self._commit_failed)
        await loop.run_in_executor(self._thread, consumer.close)

    @staticmethod
    def _commit_failed(exc: Exception) -> None:
        log.info("delay offsets not committed (those records are sent on again): %s", exc)
