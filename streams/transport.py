"""Faust's aiokafka transport with a configurable consumer fetch max-wait.

Faust hard-codes ``fetch_max_wait_ms=1500`` for its consumer. The dev broker
(Tansu) answers a fetch only when that wait expires, so each hop would cost up
to 1.5 s (DESIGN §8: a 2-hop p50 of 754 ms, against 5.6 ms with 5 ms). Real
Kafka answers as soon as data arrives, so a low value there only costs requests.
The same value bounds aiokafka's prefetch backoff (see ``on_start``).

The consumer also refuses to skip messages (``_Consumer.getmany``). Faust 0.15.3 can
lose messages around a rebalance: records aiokafka has handed over (so its position
is past them) are dropped when Faust's loop breaks off a batch (flow stopped,
generation changed), and the next batch starts after them. Faust then records the
hole as a "gap" it treats as acknowledged, meant for compacted topics and transaction
markers, and commits past it: the chaos test lost events and step results this way
(``tests/chaos``). Here every partition's offsets must continue where the last one
delivered (or the committed offset) left off; on a jump the partition is rewound.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger("stepstream.transport")


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
        self._consumer._fetcher._prefetch_backoff = self.app.fetch_max_wait_ms / 1000


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    # Per stream partition: the offset the next message must have (None: not known yet),
    # and the holes seen right after a rewind (a hole that comes back is real).
    _next_offset: dict[Any, int]
    _rewound_at: dict[Any, tuple[int, int]]

    def _expected(self) -> dict[Any, int]:
        if not hasattr(self, "_next_offset"):
            self._next_offset, self._rewound_at = {}, {}
        return self._next_offset

    async def perform_seek(self) -> None:
        await super().perform_seek()
        expected = self._expected()
        for tp in self.assignment():
            if not _compacted(tp):
                expected[tp] = self._read_offset.get(tp) or 0  # the committed offset

    async def seek(self, partition: Any, offset: int) -> None:
        await super().seek(partition, offset)
        self._expected()[partition] = offset

    async def seek_wait(self, partitions: Any) -> None:
        await super().seek_wait(partitions)
        self._expected().update(partitions)

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        expected = self._expected()
        for tp in revoked:
            expected.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        expected = self._expected()
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
                expected[tp] = offset + 1
            yield tp, message
        rewind = {tp: offset for tp, offset in rewind.items() if tp in self.assignment()}
        if rewind:
            # In the consumer's thread (seek_wait), not aiokafka's seek from this one.
            await self.seek_wait(rewind)


def _compacted(tp: Any) -> bool:
    """Changelogs are compacted: holes in their offsets are normal."""
    return bool(tp.topic.endswith("-changelog"))


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class FaustApp(faust.App):
    """A Faust app whose consumer waits at most ``fetch_max_wait_ms`` per fetch."""

    fetch_max_wait_ms: int = 5

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)
