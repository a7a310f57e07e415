"""Faust's aiokafka transport with a configurable consumer fetch max-wait.

Faust hard-codes ``fetch_max_wait_ms=1500`` for its consumer. The dev broker
(Tansu) answers a fetch only when that wait expires, so each hop would cost up
to 1.5 s (DESIGN §8: a 2-hop p50 of 754 ms, against 5.6 ms with 5 ms). Real
Kafka answers as soon as data arrives, so a low value there only costs requests.
The same value bounds aiokafka's prefetch backoff (see ``on_start``).
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka


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


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class FaustApp(faust.App):
    """A Faust app whose consumer waits at most ``fetch_max_wait_ms`` per fetch."""

    fetch_max_wait_ms: int = 5

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)
