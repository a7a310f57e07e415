"""A Kafka-protocol proxy in front of the dev broker that lets one write in at a time.

Tansu 0.6 with memory storage (DESIGN §8) appends a batch in two steps: it raises the
partition's high watermark, then stores the batch. A fetch that runs between the two
steps of one write, after a later write to the same partition has finished both, lists
the later batch but not the earlier one, and the consumer moves past the earlier
records for good. Measured: a consumer tailing a partition that five producers write
at once skips about one record in five thousand, with ``read_committed`` or not; read
again later, the records are there (tansu-storage/src/dynostore.rs, ``produce`` and
``fetch``). A lost record is a lost run, so the engine cannot live with it.

With one write at a time, a fetch can miss only the newest batch, and then nothing
after it: the consumer reads it on its next fetch. So this proxy holds every request
that appends to a partition (Produce; EndTxn and InitProducerId, which write
transaction markers) until the write before it has been answered. Nothing else waits.
Real Kafka needs none of this; only the dev broker runs behind it.

Run as ``python -m stepstream.tansu_gate LISTEN_PORT BROKER_PORT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import sys

PRODUCE, INIT_PRODUCER_ID, END_TXN = 0, 22, 26
_WRITES = frozenset({PRODUCE, INIT_PRODUCER_ID, END_TXN})
_FLEXIBLE_PRODUCE = 9  # Produce versions from here on use compact strings
_HEADER = struct.Struct(">hhi")  # api key, api version, correlation id


class WriteGate:
    """Forwards ``listen_port`` to the broker at ``broker_port``, one write at a time."""

    def __init__(self, listen_port: int, broker_port: int, host: str = "127.0.0.1") -> None:
        self.listen_port, self.broker_port, self.host = listen_port, broker_port, host
        self._write = asyncio.Lock()
        self._releasing: set[asyncio.Task[None]] = set()

    async def start(self) -> asyncio.Server:
        """Listen (port 0: any free port); the server serves from here on."""
        return await asyncio.start_server(self._connection, self.host, self.listen_port,
                                          reuse_address=True)

    async def serve(self) -> None:
        async with await self.start() as server:
            await server.serve_forever()

    async def _connection(self, client_r: asyncio.StreamReader,
                          client_w: asyncio.StreamWriter) -> None:
        try:
            broker_r, broker_w = await asyncio.open_connection(self.host, self.broker_port)
        except OSError:
            client_w.transport.abort()
            return
        answered: dict[int, asyncio.Event] = {}  # correlation id -> its response came
        requests = asyncio.create_task(self._requests(client_r, broker_w, answered))
        responses = asyncio.create_task(self._responses(broker_r, client_w, answered))
        await asyncio.wait({requests, responses}, return_when=asyncio.FIRST_COMPLETED)
        for task in (requests, responses):
            task.cancel()
        for event in answered.values():  # the connection is gone: no answer will come
            event.set()
        for writer in (client_w, broker_w):
            writer.close()

    async def _requests(self, reader: asyncio.StreamReader, broker: asyncio.StreamWriter,
                        answered: dict[int, asyncio.Event]) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                frame = await _frame(reader)
                api_key, api_version, correlation_id = _HEADER.unpack_from(frame, 4)
                if api_key not in _WRITES or _acks_none(frame, api_key, api_version):
                    broker.write(frame)
                    await broker.drain()
                    continue
                await self._write.acquire()
                # Released once the broker has answered (the batch is stored), while
                # this connection's next requests go on being read; armed before the
                # write, so that a connection lost while writing releases it too.
                done = answered[correlation_id] = asyncio.Event()
                releasing = asyncio.create_task(self._release_when(done))
                self._releasing.add(releasing)
                releasing.add_done_callback(self._releasing.discard)
                broker.write(frame)
                await broker.drain()

    async def _release_when(self, answered: asyncio.Event) -> None:
        try:
            await answered.wait()
        finally:
            self._write.release()

    @staticmethod
    async def _responses(reader: asyncio.StreamReader, client: asyncio.StreamWriter,
                         answered: dict[int, asyncio.Event]) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                frame = await _frame(reader)
                client.write(frame)
                await client.drain()
                (correlation_id,) = struct.unpack_from(">i", frame, 4)
                event = answered.pop(correlation_id, None)
                if event is not None:
                    event.set()


async def _frame(reader: asyncio.StreamReader) -> bytes:
    """One size-prefixed protocol frame, prefix included."""
    size = await reader.readexactly(4)
    return size + await reader.readexactly(struct.unpack(">i", size)[0])


def _acks_none(frame: bytes, api_key: int, api_version: int) -> bool:
    """Whether ``frame`` is a Produce with ``acks=0``: the broker will not answer it."""
    if api_key != PRODUCE:
        return False
    at = 4 + _HEADER.size
    (client_id_length,) = struct.unpack_from(">h", frame, at)
    at += 2 + max(client_id_length, 0)
    if api_version >= _FLEXIBLE_PRODUCE:
        at = _skip_tagged_fields(frame, at)
        transactional_id_length, at = _varint(frame, at)
        at += max(transactional_id_length - 1, 0)  # compact: length + 1, 0 for null
    elif api_version >= 3:
        (transactional_id_length,) = struct.unpack_from(">h", frame, at)
        at += 2 + max(transactional_id_length, 0)
    (acks,) = struct.unpack_from(">h", frame, at)
    return bool(acks == 0)


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """An unsigned varint at ``at``, and the offset after it."""
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _skip_tagged_fields(data: bytes, at: int) -> int:
    count, at = _varint(data, at)
    for _ in range(count):
        _tag, at = _varint(data, at)
        size, at = _varint(data, at)
        at += size
    return at


def main(argv: list[str]) -> None:
    listen_port, broker_port = (int(arg) for arg in argv)
    asyncio.run(WriteGate(listen_port, broker_port).serve())


if __name__ == "__main__":
    main(sys.argv[1:])
