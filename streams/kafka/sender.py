"""Records that belong to no task: events and controls from the HTTP API, cron starts,
events a step sends, what the history projector sets aside.

They go through one idempotent producer that never gives a record up
(``streams.kafka.clients.plain_producer``): ``send`` resolves once the broker has it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any

from streams.kafka.task import Record

log = logging.getLogger("stepstream.sender")


class Sender:
    """Sends records outside any transaction and tells when the broker has them."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self._thread = concurrent.futures.ThreadPoolExecutor(1, "stepstream-sender")
        self._polling: asyncio.Future[None] | None = None
        self._closed = False

    async def send(self, record: Record) -> None:
        """Send ``record``; returns once the broker acknowledged it."""
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[None] = loop.create_future()

        def report(error: Any, _message: Any) -> None:
            loop.call_soon_threadsafe(_settle, delivered, error)

        while True:
            try:
                self.producer.produce(record.topic, record.value, record.key,
                                      partition=record.partition, on_delivery=report)
                break
            except BufferError:  # the local queue is full: wait for it to drain
                await asyncio.sleep(0.05)
        self._poll(loop)
        await delivered

    def _poll(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve delivery reports on a thread of their own (from the first send on)."""
        if self._polling is None:
            self._polling = loop.run_in_executor(self._thread, self._serve)

    def _serve(self) -> None:
        while not self._closed:
            self.producer.poll(0.1)  # returns at once when a report is served

    async def close(self) -> None:
        """Wait a little for what is still queued, then stop."""
        await asyncio.to_thread(self.producer.flush, 5.0)
        self._closed = True
        self._thread.shutdown(wait=False)


def _settle(delivered: asyncio.Future[None], error: Any) -> None:
    if delivered.done():
        return
    if error is None:
        delivered.set_result(None)
    else:  # only fatal errors reach here: the producer retries the others forever
        delivered.set_exception(ConnectionError(f"record not delivered: {error}"))
