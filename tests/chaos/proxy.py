"""A TCP proxy the tests can cut: the network path to the broker, not the broker.

The dev broker keeps its data in memory, so stopping it would lose every topic. The
outage test puts this proxy between the workers and the broker instead, and cuts it:
every open connection is closed and new ones are refused (the listening socket is
closed), as when a broker host drops off the network. Restoring listens again on the
same port. It runs its own event loop in a thread, so sync tests can drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any


class CuttableProxy:
    """Forwards ``127.0.0.1:listen_port`` to ``127.0.0.1:target_port`` until cut."""

    def __init__(self, listen_port: int, target_port: int) -> None:
        self.listen_port, self.target_port = listen_port, target_port
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="cuttable-proxy")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> CuttableProxy:
        """Start the loop and listen."""
        self._thread.start()
        self.restore()
        return self

    def cut(self) -> None:
        """Close every connection and refuse new ones."""
        self._call(self._cut())

    def restore(self) -> None:
        """Accept connections again."""
        self._call(self._listen())

    def close(self) -> None:
        """Cut for good and stop the loop thread."""
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _call(self, coro: Any) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1",
                                                      self.listen_port, reuse_address=True)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()  # a reset, not a polite FIN: the path is gone
        self._writers.clear()

    async def _accept(self, client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter) -> None:
        try:
            broker_r, broker_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        self.connections += 1
        self._writers |= {client_w, broker_w}
        await asyncio.gather(self._pipe(client_r, broker_w), self._pipe(broker_r, client_w))
        self._writers -= {client_w, broker_w}

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()  # one side ended: end the other
