"""Faust's aiokafka transport with a configurable consumer fetch max-wait.

Faust hard-codes ``fetch_max_wait_ms=1500`` for its consumer. The dev broker
(Tansu) answers a fetch only when that wait expires, so each hop would cost up
to 1.5 s (DESIGN §8: a 2-hop p50 of 754 ms, against 5.6 ms with 5 ms). Real
Kafka answers as soon as data arrives, so a low value there only costs requests.
aiokafka's prefetch backoff is bounded on its own (see ``on_start``).

The consumer also refuses to skip messages (``_Consumer.getmany``). Faust 0.15.3 can
lose messages around a rebalance: records aiokafka has handed over (so its position
is past them) are dropped when Faust's loop breaks off a batch (flow stopped,
generation changed), and the next batch starts after them. Faust then records the
hole as a "gap" it treats as acknowledged, meant for compacted topics and transaction
markers, and commits past it: the chaos test lost events and step results this way
(``tests/chaos``). Here every partition's offsets must continue where the last one
delivered (or the committed offset) left off; on a jump the partition is rewound.

A jump shows only when a later message arrives, and the chaos test also found stream
partitions that stopped being delivered altogether after a rebalance, with messages
waiting on the broker, and messages handed to an agent's queue that the agent never
saw (Faust clears the queues when a rebalance starts). So a timer
(``FaustApp._unstick``) looks at partitions that have been quiet for a few seconds while
their agent has nothing queued or in progress: if messages were delivered but never
acknowledged, if the broker holds messages past what was delivered, or if aiokafka's
position ran past it, the partition is put back in Faust's fetch set and rewound to the
first message the agents did not process.

Commits and recovery have their own guards, each commented where it is: no commit past
an unacknowledged head (``_new_offset``, ``_floor``), no commit of messages acked under
an earlier group generation (``ack``), and changelog recovery up to the partition's real
end, which the dev broker can report short (``highwaters``). These patch Faust 0.15.3's
internals: run tests/chaos after upgrading Faust.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger("stepstream.transport")

_PREFETCH_BACKOFF_S = 0.005


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its Fetcher.
        consumer._fetch_max_wait_ms = self.app.fetch_max_wait_ms
        return consumer

    async def on_start(self) -> None:
        await super().on_start()
        # aiokafka stops fetching from a broker while any partition it serves holds
        # records the application has not taken yet, for up to prefetch_backoff (100 ms).
        # Faust leaves the changelog partitions it writes to in that state, so every
        # table write stalled the next hop by 100 ms. Measured: 103 ms -> 4 ms per hop.
        # Not tied to the fetch max-wait: on Kafka that is best long (it answers as soon
        # as data arrives), and a long backoff would bring the stall back.
        self._consumer._fetcher._prefetch_backoff = _PREFETCH_BACKOFF_S


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Per stream partition: the offset the next message must have, when it was last
        # delivered, the holes seen right after a rewind (a hole that comes back is
        # real), the start of a partition never committed, and when its end was probed.
        self._next_offset: dict[Any, int] = {}
        self._delivered_at: dict[Any, float] = {}
        self._rewound_at: dict[Any, tuple[int, int]] = {}
        self._first_offset: dict[Any, int] = {}
        self._probed_at: dict[Any, float] = {}
        super().__init__(*args, **kwargs)

    def _expect(self, tp: Any, offset: int) -> None:
        if _compacted(tp):
            return  # changelogs belong to Faust's recovery, and may have holes
        self._next_offset[tp] = offset
        self._delivered_at[tp] = time.monotonic()

    async def perform_seek(self) -> None:
        await super().perform_seek()
        never = []
        for tp in self.assignment():
            committed = self._read_offset.get(tp)  # None: no commit yet
            if committed is not None:
                self._expect(tp, committed)
            elif not _compacted(tp):
                never.append(tp)
        if never:  # they are read from their start: that is where the agents must begin
            try:
                starts = await self.earliest_offsets(*never)
            except Exception as exc:  # the broker is away: no commits there until next time
                log.warning("could not read where %d partitions start: %s", len(never), exc)
                starts = {}
            for tp in never:
                if starts.get(tp) is not None:
                    self._first_offset[tp] = starts[tp]
                    self._expect(tp, starts[tp])

    async def seek(self, partition: Any, offset: int) -> None:
        await super().seek(partition, offset)
        self._expect(partition, offset)

    async def seek_wait(self, partitions: Any) -> None:
        await super().seek_wait(partitions)
        for tp, offset in partitions.items():
            self._expect(tp, offset)

    async def on_partitions_assigned(self, assigned: set[Any], generation_id: int = 0) -> None:
        await super().on_partitions_assigned(assigned, generation_id)
        now = time.monotonic()
        for tp in assigned:  # quiet since now, until something is delivered
            if not _compacted(tp):
                self._delivered_at.setdefault(tp, now)

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        expected = self._next_offset
        for tp in revoked:
            expected.pop(tp, None)
            self._delivered_at.pop(tp, None)
            self._first_offset.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    async def highwaters(self, *partitions: Any) -> Any:
        found = dict(await super().highwaters(*partitions))
        config = getattr(self.app, "client_config", None)
        changelogs = {tp: end for tp, end in found.items() if _compacted(tp)}
        if config and changelogs:
            # The dev broker (Tansu) at times reports a partition's end short, by one
            # record or several, while a fetch still returns them. Recovery reads a
            # changelog up to the end it is told, so the newest state of a run was left
            # out and the run went back a step (a step applied twice in the chaos test).
            # Read on from there to the real end.
            fetched = await asyncio.to_thread(_ends_by_fetch, config, changelogs)
            found.update({tp: max(end, found[tp]) for tp, end in fetched.items()})
        return found

    def _new_offset(self, tp: Any) -> int | None:
        # Faust commits past an unacknowledged head when the offsets after it are acked:
        # its check is ``min(acked) - committed > 1`` (and skipped when committed is 0),
        # one short, so the message at the committed offset itself was lost (a StepRequest
        # in the chaos test, never executed). Wait until the head is acked.
        # Never committed, it committed past whatever was lost before the first ack:
        # the partition's start is the head then.
        acked, floor = self._acked[tp], self._floor(tp)
        if acked and not _compacted(tp) and (floor is None or min(acked) > floor) and not any(
                gap.begin <= (floor or 0) < gap.end for gap in self._gap[tp]):
            return None
        result: int | None = super()._new_offset(tp)
        return result

    def ack(self, message: Any) -> bool:
        if message.generation_id != self.app.consumer_generation_id:
            # Faust "acks" the messages of an earlier group generation that a stream skips
            # unseen after a rebalance; when the partition stayed here, that ack would be
            # committed and the message never processed (a StepRequest lost in the chaos
            # test). Not counted, it is read again from the committed offset.
            message.acked = True
            self._unacked_messages.discard(message)
            return False
        return bool(super().ack(message))

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        expected = self._next_offset
        rewind: dict[Any, int] = {}
        async for tp, message in super().getmany(timeout):
            if tp in rewind:
                continue  # re-read after the rewind, in order
            offset, want = message.offset, expected.get(tp)
            if want is not None and offset > want and not _compacted(tp):
                if self._rewound_at.get(tp) != (want, offset):
                    self._rewound_at[tp] = (want, offset)
                    log.warning("%s[%d]: got offset %d, expected %d: rewinding (Faust "
                                "dropped fetched messages)", tp.topic, tp.partition,
                                offset, want)
                    rewind[tp] = want
                    continue
                log.warning("%s[%d]: offsets %d-%d are missing from the topic", tp.topic,
                            tp.partition, want, offset - 1)
            if want is None or offset >= want:
                self._expect(tp, offset + 1)
            yield tp, message
        rewind = {tp: offset for tp, offset in rewind.items() if tp in self.assignment()}
        if rewind:
            # In the consumer's thread (seek_wait), not aiokafka's seek from this one.
            await self.seek_wait(rewind)

    async def unstick(self, idle: float) -> None:
        """Deliver again from partitions quiet for ``idle`` s with messages undelivered."""
        now = time.monotonic()
        quiet = [tp for tp in list(self._delivered_at) if tp in self.assignment()
                 and now - self._delivered_at[tp] >= idle and self._agent_idle(tp)]
        if not quiet:
            return
        ends = await self.highwaters(*quiet)
        starts: Any = None
        stuck, unsure = {}, {}
        for tp in quiet:
            # What the agent must see next: after the last delivery, else the committed
            # offset or (never committed) the start of the partition.
            want = self._next_offset.get(tp, self._floor(tp))
            if want is None:
                starts = starts if starts is not None else await self.earliest_offsets(*quiet)
                want = starts.get(tp)
            position, end = await self.position(tp), ends.get(tp)
            lost = self._lost_from(tp)
            if lost is not None:  # handed to the agent, then dropped before it took them
                stuck[tp] = (lost, position, end)
            elif want is not None and ((position is not None and position > want)
                                       or (end is not None and end > want)):
                stuck[tp] = (want, position, end)
            elif want is not None:
                unsure[tp] = (want, position, end)
        for tp in await self._holding_records(unsure):  # the end the broker gave is short
            stuck[tp] = unsure[tp]
        if not stuck or not self.flow_active or self.app.rebalancing:
            return
        log.warning("partitions with undelivered messages, delivering again: %s", ", ".join(
            f"{tp.topic}[{tp.partition}] from {want} (position {position}, end {end}, "
            f"{self._fetch_state(tp)})" for tp, (want, position, end) in stuck.items()))
        for tp in stuck:
            self.on_buffer_drop(tp)  # a back-pressure pause whose release was lost
        self.resume_partitions([tp for tp in stuck if tp in self._paused_partitions])
        await self.seek_wait({tp: want for tp, (want, _, _) in stuck.items()})

    async def _holding_records(self, quiet: dict[Any, tuple[int, Any, Any]]) -> list[Any]:
        """Those of ``quiet`` (partition -> offset wanted next, ...) with a record there.

        The dev broker at times reports a partition's end short of its last records, so
        "nothing past what was delivered" is checked with a fetch, at most every
        ``_PROBE_EVERY_S`` per partition.
        """
        config = getattr(self.app, "client_config", None)
        now = time.monotonic()
        probed = self._probed_at
        due = {tp: want for tp, (want, _, _) in quiet.items()
               if now - probed.get(tp, 0.0) >= _PROBE_EVERY_S}
        if not config or not due:
            return []
        probed.update(dict.fromkeys(due, now))
        ends = await asyncio.to_thread(_ends_by_fetch, config, due)
        return [tp for tp, end in ends.items() if end > due[tp]]

    def _floor(self, tp: Any) -> int | None:
        """The offset every message from which on must be acked before a commit: the
        committed offset, or for a partition never committed its start."""
        committed = self._committed_offset.get(tp)
        return committed if committed is not None else self._first_offset.get(tp)

    def _lost_from(self, tp: Any) -> int | None:
        """The first offset delivered to the agents but neither acked nor in progress.

        Faust clears its agents' queues when a rebalance starts and counts on seeking
        back to the committed offset afterwards; when that seek came first, the
        messages were gone for good (seen in the chaos test: events never triggered).
        """
        committed, delivered = self._floor(tp), self._next_offset.get(tp)
        if committed is None or delivered is None or committed >= delivered:
            return None
        if any(message.tp == tp for message in list(self._unacked_messages)):
            return None  # an agent still works on one of them
        acked = self._acked_index.get(tp, ())
        return next((o for o in range(committed, delivered) if o not in acked), None)

    def _agent_idle(self, tp: Any) -> bool:
        """Whether no agent reading ``tp`` has messages queued (a busy agent is no stall)."""
        channels = getattr(self.app.topics, "_tp_index", {}).get(tp, ())
        return all(channel.queue.empty() for channel in channels)

    def _fetch_state(self, tp: Any) -> str:
        if tp in self._paused_partitions:
            return "paused"
        return "held back" if tp in self._buffered_partitions else "active"


_PROBE_EVERY_S = 10.0
_UNSTICK_FAILURES_LOGGED = 5  # every 5th consecutive failure of the stall check is a warning


def _ends_by_fetch(config: dict[str, Any], ends: dict[Any, int]) -> dict[Any, int]:
    """Per partition, the offset after the last record found from its given ``end`` on
    (``end`` itself when there is none): what the broker's own end should have said."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**config, "group.id": "stepstream-end-probe",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    found = dict(ends)
    try:
        consumer.assign([TopicPartition(tp.topic, tp.partition, end) for tp, end in ends.items()])
        by_name = {(tp.topic, tp.partition): tp for tp in ends}
        now = time.monotonic()
        deadline, quiet_until = now + 1.5, now + 0.2
        while (now := time.monotonic()) < min(deadline, quiet_until):
            message = consumer.poll(0.05)
            if message is None or message.error() is not None:
                continue
            tp = by_name[(message.topic(), message.partition())]
            found[tp] = max(found[tp], message.offset() + 1)
            quiet_until = now + 0.2  # more may follow: read until the partitions are quiet
        return found
    finally:
        consumer.close()


def _compacted(tp: Any) -> bool:
    """Changelogs are compacted: holes in their offsets are normal."""
    return bool(tp.topic.endswith("-changelog"))


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


def owns(consumer: Any, tp: Any) -> bool:
    """Whether ``tp`` is assigned to ``consumer`` (the app's) now.

    Faust's ``assignment()`` converts every assigned partition to its own tuple type on
    each call, and the orchestrator asks twice per message. aiokafka's set holds equal
    tuples, so a lookup in it gives the same answer at a fraction of the cost.
    """
    if isinstance(consumer, _Consumer):
        return tp in consumer._thread._ensure_consumer().assignment()
    return tp in consumer.assignment()


class FaustApp(faust.App):
    """A Faust app whose consumer waits at most ``fetch_max_wait_ms`` per fetch."""

    fetch_max_wait_ms: int = 5
    unstick_idle_s: float = 5.0
    client_config: dict[str, Any] | None = None
    """confluent-kafka settings (brokers, security) for the changelog end probe."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unstick_failures = 0
        self.timer(2.0, name="stepstream.unstick")(self._unstick)

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)

    async def _unstick(self) -> None:
        consumer = self.consumer
        recovered = self.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
        if (isinstance(consumer, _Consumer) and consumer.flow_active and recovered
                and not self.rebalancing):
            try:
                await consumer.unstick(self.unstick_idle_s)
            except Exception:  # a rebalance under our feet: the next tick looks again
                self._unstick_failures += 1
                # Once is a rebalance; a check that keeps failing leaves stalls unseen.
                quiet = self._unstick_failures % _UNSTICK_FAILURES_LOGGED
                log.log(logging.DEBUG if quiet else logging.WARNING,
                        "the stall check failed %d times in a row", self._unstick_failures,
                        exc_info=True)
            else:
                self._unstick_failures = 0
