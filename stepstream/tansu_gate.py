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

Tansu 0.6 also gets ``read_committed`` wrong in two ways, so the proxy does that
isolation itself. It lists no aborted transaction in its Fetch responses, and that list
is what a ``read_committed`` client filters by: an aborted transaction's records that
reached the broker (a SIGKILLed worker's last one, ended when the next owner of its task
fenced it) were read as committed. And it ends a transaction (commit or abort, markers
written) for good only if every transaction overlapping it in some partition is ended
too, and looks again only when a later transaction in one of its partitions ends: until
then its records stay beyond the partition's stable end, a ``read_committed`` reader
sees nothing past them and ListOffsets reports an end of 0 (tansu-storage/src/
dynostore.rs, ``txn_end`` and ``overlapping_transactions``). After a SIGKILL, the
partitions that nobody writes again are held for good (seen in the chaos suite: runs
stuck behind a transaction that had committed). So a ``read_committed`` Fetch or
ListOffsets goes to the broker as ``read_uncommitted``, and in the Fetch response the
proxy lists as aborted each transactional batch whose producer's next control batch is
an abort marker, cuts the records before the first transaction whose marker the
response does not hold (read again by the next fetch), and reports the stable end
there: what Kafka does with its last stable offset, taken from the markers. To parse
the responses as they are, the proxy offers Fetch up to version 11 (the last one
without flexible fields).

And Tansu 0.6 keeps a group's leader after it leaves while the group rebalances: its
LeaveGroup, in a forming group, removes the member but not the group's leader, a new
leader is chosen only when there is none, and an expired session clears the leader only
when the leader is among the members (tansu-broker/src/coordinator/group/
administrator.rs, ``leave``, ``join`` and ``missed_heartbeat`` of ``Inner<O, Forming>``).
Every later JoinGroup names the gone member leader, the followers' SyncGroup is told
``REBALANCE_IN_PROGRESS``, and nobody gets partitions until the broker restarts. Every
member of a group stopping cleanly at once (a deploy's SIGTERM to all workers) gets there
most times; stopped by SIGKILL, the members expire, which Tansu handles. So the proxy
keeps the leader each JoinGroup response names, and answers a LeaveGroup from that
member (or from a member whose JoinGroup is still unanswered) itself instead of passing
it on: the member expires after its session timeout,
as a killed one does, and the group then picks a leader among the members left. Other
members leave at once. The proxy offers JoinGroup up to version 5 and LeaveGroup up to
version 2, the last ones it parses (librdkafka sends 5 and 1 at most).

Run as ``python -m stepstream.tansu_gate LISTEN_PORT BROKER_PORT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import sys

PRODUCE, FETCH, LIST_OFFSETS, API_VERSIONS, INIT_PRODUCER_ID, END_TXN = 0, 1, 2, 18, 22, 26
JOIN_GROUP, LEAVE_GROUP = 11, 13
_WRITES = frozenset({PRODUCE, INIT_PRODUCER_ID, END_TXN})
_FLEXIBLE_PRODUCE = 9  # Produce versions from here on use compact strings
_HEADER = struct.Struct(">hhi")  # api key, api version, correlation id
_READ_COMMITTED_FETCH = 4  # Fetch versions from here on have an isolation level
_READ_COMMITTED_LIST_OFFSETS = 2  # ListOffsets versions from here on have one
_FLEXIBLE_LIST_OFFSETS = 6  # ListOffsets versions from here on have header tagged fields
_LAST_FETCH = 11  # the last Fetch version without flexible fields
_HIGHEST = {FETCH: _LAST_FETCH, JOIN_GROUP: 5, LEAVE_GROUP: 2}
"""The highest versions the proxy offers: the last ones without flexible fields."""
_FLEXIBLE_API_VERSIONS = 3
_BATCH = struct.Struct(">qiibihiqqqhii")
"""A record batch (magic 2) up to its records: base offset, length (of what follows it),
leader epoch, magic, crc, attributes, last offset delta, first and max timestamps,
producer id, producer epoch, base sequence, record count."""
_BATCH_OVERHEAD = 12  # base offset and length, which the length does not count
_TRANSACTIONAL, _CONTROL = 0x10, 0x20  # record batch attributes
_ABORT = 0  # a control record's type (1: commit)
_HIGH_WATERMARK_AT = 4 + 2  # in a Fetch response's partition: after its index, error
_STABLE_END_AT = _HIGH_WATERMARK_AT + 8  # the last stable offset, after the watermark


class WriteGate:
    """Forwards ``listen_port`` to the broker at ``broker_port``, one write at a time."""

    def __init__(self, listen_port: int, broker_port: int, host: str = "127.0.0.1") -> None:
        self.listen_port, self.broker_port, self.host = listen_port, broker_port, host
        self._write = asyncio.Lock()
        self._releasing: set[asyncio.Task[None]] = set()
        self._leaders: dict[bytes, bytes] = {}  # group id -> the member last named its leader

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
        rewrite: dict[int, tuple[int, int, int]] = {}  # correlation id -> key, version, wait
        joining: dict[int, tuple[bytes, int]] = {}  # of a JoinGroup: group id, version
        requests = asyncio.create_task(self._requests(client_r, broker_w, answered, rewrite,
                                                      joining))
        responses = asyncio.create_task(self._responses(broker_r, client_w, answered,
                                                        rewrite, joining))
        await asyncio.wait({requests, responses}, return_when=asyncio.FIRST_COMPLETED)
        for task in (requests, responses):
            task.cancel()
        for event in answered.values():  # the connection is gone: no answer will come
            event.set()
        for writer in (client_w, broker_w):
            writer.close()

    async def _requests(self, reader: asyncio.StreamReader, broker: asyncio.StreamWriter,
                        answered: dict[int, asyncio.Event],
                        rewrite: dict[int, tuple[int, int, int]],
                        joining: dict[int, tuple[bytes, int]]) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                frame = await _frame(reader)
                api_key, api_version, correlation_id = _HEADER.unpack_from(frame, 4)
                if api_key == JOIN_GROUP and api_version <= _HIGHEST[JOIN_GROUP]:
                    joining[correlation_id] = _strings(frame, 1)[0], api_version
                elif api_key == LEAVE_GROUP and api_version <= _HIGHEST[LEAVE_GROUP]:
                    group_id, member_id = _strings(frame, 2)
                    if (self._leaders.get(group_id) == member_id
                            or any(group_id == group for group, _ in joining.values())):
                        # Answered here (see the module's doc); also when the member's
                        # JoinGroup is unanswered, as the broker may make it leader. The
                        # broker is asked its versions in its place, so that the answer
                        # keeps its turn among the connection's responses.
                        frame = _api_versions_request(frame)
                        rewrite[correlation_id] = (api_key, api_version, 0)
                isolation = _isolation_at(frame, api_key, api_version)
                if isolation is not None and frame[isolation] == 1:  # read_committed
                    frame = frame[:isolation] + b"\x00" + frame[isolation + 1:]
                    if api_key == FETCH:
                        (max_wait_ms,) = struct.unpack_from(">i", frame, isolation - 12)
                        rewrite[correlation_id] = (api_key, api_version, max_wait_ms)
                elif api_key == API_VERSIONS:
                    rewrite[correlation_id] = (api_key, api_version, 0)
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

    async def _responses(self, reader: asyncio.StreamReader, client: asyncio.StreamWriter,
                         answered: dict[int, asyncio.Event],
                         rewrite: dict[int, tuple[int, int, int]],
                         joining: dict[int, tuple[bytes, int]]) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                frame = await _frame(reader)
                (correlation_id,) = struct.unpack_from(">i", frame, 4)
                api_key, api_version, max_wait_ms = rewrite.pop(correlation_id, (None, 0, 0))
                join = joining.pop(correlation_id, None)
                if join is not None:
                    leader = _join_leader(frame, join[1])
                    if leader:
                        self._leaders[join[0]] = leader
                if api_key == API_VERSIONS:
                    frame = _capped(frame, api_version)
                elif api_key == LEAVE_GROUP:
                    frame = _left(correlation_id, api_version)
                elif api_key == FETCH:
                    frame, all_cut = _read_committed(frame, api_version)
                    if all_cut:
                        # The broker answered at once, with records of open transactions
                        # only: answered now, the reader would ask again at once, in a
                        # loop, until they end. Kafka waits up to the fetch's max wait
                        # for committed records; so does the gate (the broker itself
                        # waits it out when it has nothing).
                        await asyncio.sleep(max_wait_ms / 1000)
                client.write(frame)
                await client.drain()
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


def _isolation_at(frame: bytes, api_key: int, api_version: int) -> int | None:
    """Where the isolation level of a Fetch (of a version parsed here) or a ListOffsets
    request is in ``frame``; None for other requests."""
    at = 4 + _HEADER.size
    client_id_length: int = struct.unpack_from(">h", frame, at)[0]
    at += 2 + max(client_id_length, 0)
    if api_key == FETCH and _READ_COMMITTED_FETCH <= api_version <= _LAST_FETCH:
        return at + 16  # replica id, max wait, min and max bytes
    if api_key == LIST_OFFSETS and api_version >= _READ_COMMITTED_LIST_OFFSETS:
        if api_version >= _FLEXIBLE_LIST_OFFSETS:
            at = _skip_tagged_fields(frame, at)
        return at + 4  # replica id
    return None


def _capped(frame: bytes, api_version: int) -> bytes:
    """An ApiVersions response that offers each API of ``_HIGHEST`` up to its version
    there at most."""
    data = bytearray(frame)
    at = 4 + 4 + 2  # size, correlation id (the response header has no tagged fields), error
    if api_version >= _FLEXIBLE_API_VERSIONS:
        count, at = _varint(frame, at)
        count -= 1
    else:
        (count,) = struct.unpack_from(">i", data, at)
        at += 4
    for _ in range(max(count, 0)):
        api_key, _, max_version = struct.unpack_from(">hhh", data, at)
        highest = _HIGHEST.get(api_key)
        if highest is not None and max_version > highest:
            struct.pack_into(">h", data, at + 4, highest)
        at += 6
        if api_version >= _FLEXIBLE_API_VERSIONS:
            at = _skip_tagged_fields(frame, at)
    return bytes(data)


def _strings(frame: bytes, count: int) -> list[bytes]:
    """The first ``count`` strings of a request's body (a version without flexible
    fields): a JoinGroup's group id; a LeaveGroup's group id and member id."""
    at = 4 + _HEADER.size
    (client_id_length,) = struct.unpack_from(">h", frame, at)
    at += 2 + max(client_id_length, 0)
    strings = []
    for _ in range(count):
        (length,) = struct.unpack_from(">h", frame, at)
        strings.append(frame[at + 2:at + 2 + max(length, 0)])
        at += 2 + max(length, 0)
    return strings


def _join_leader(frame: bytes, api_version: int) -> bytes:
    """The leader a JoinGroup response (version 0 to 5) names; empty on an error."""
    at = 8 + (4 if api_version >= 2 else 0)  # size, correlation id; throttle time
    error_code, _ = struct.unpack_from(">hi", frame, at)  # and the generation id
    at += 6
    if error_code:
        return b""
    (protocol_length,) = struct.unpack_from(">h", frame, at)
    at += 2 + max(protocol_length, 0)
    (leader_length,) = struct.unpack_from(">h", frame, at)
    return frame[at + 2:at + 2 + max(leader_length, 0)]


def _api_versions_request(frame: bytes) -> bytes:
    """An ApiVersions request (version 0) with the header of the request ``frame``."""
    at = 4 + _HEADER.size
    (client_id_length,) = struct.unpack_from(">h", frame, at)
    (correlation_id,) = struct.unpack_from(">i", frame, 8)
    body = _HEADER.pack(API_VERSIONS, 0, correlation_id)
    body += frame[at:at + 2 + max(client_id_length, 0)]
    return struct.pack(">i", len(body)) + body


def _left(correlation_id: int, api_version: int) -> bytes:
    """A LeaveGroup response (version 0 to 2) without error."""
    body = struct.pack(">i", correlation_id)
    body += (struct.pack(">i", 0) if api_version >= 1 else b"") + struct.pack(">h", 0)
    return struct.pack(">i", len(body)) + body


def _read_committed(frame: bytes, api_version: int) -> tuple[bytes, bool]:
    """A Fetch response (version 4 to 11) for a ``read_committed`` reader, made of the
    broker's ``read_uncommitted`` one: the aborted transactions of its records listed,
    its records cut before the first transaction whose end it does not hold, and its
    stable end there (else at the high watermark); and whether it had records and
    none are left."""
    had_records = kept_records = False
    out = bytearray(frame[:8])  # size (set below), correlation id
    at = 8
    head = 4 + (6 if api_version >= 7 else 0)  # throttle time; error code, session id
    out += frame[at:at + head + 4]  # and the topic count
    (topics,) = struct.unpack_from(">i", frame, at + head)
    at += head + 4
    for _ in range(topics):
        (name_length,) = struct.unpack_from(">h", frame, at)
        out += frame[at:at + 2 + name_length + 4]  # name, partition count
        (partitions,) = struct.unpack_from(">i", frame, at + 2 + name_length)
        at += 2 + name_length + 4
        for _ in range(partitions):
            (high_watermark,) = struct.unpack_from(">q", frame, at + _HIGH_WATERMARK_AT)
            fixed = _STABLE_END_AT + 8 + (8 if api_version >= 5 else 0)  # to the log start
            partition = bytearray(frame[at:at + fixed])
            at += fixed
            (listed,) = struct.unpack_from(">i", frame, at)
            aborted = [struct.unpack_from(">qq", frame, at + 4 + 16 * i)
                       for i in range(max(listed, 0))]
            at += 4 + 16 * max(listed, 0)
            replica = frame[at:at + 4] if api_version >= 11 else b""
            at += len(replica)
            (length,) = struct.unpack_from(">i", frame, at)
            records = frame[at + 4:at + 4 + max(length, 0)]
            at += 4 + max(length, 0)
            stable_end = high_watermark
            if length > 0:
                had_records = True
                records, found, undecided = _decided(records)
                kept_records = kept_records or bool(records)
                aborted += found
                length = len(records)
                stable_end = high_watermark if undecided is None else undecided
            struct.pack_into(">q", partition, _STABLE_END_AT, stable_end)
            out += partition + struct.pack(">i", len(aborted))
            out += b"".join(struct.pack(">qq", *entry) for entry in aborted)
            out += replica + struct.pack(">i", length) + records
    out += frame[at:]
    struct.pack_into(">i", out, 0, len(out) - 4)
    return bytes(out), had_records and not kept_records


def _decided(records: bytes) -> tuple[bytes, list[tuple[int, int]], int | None]:
    """``records`` up to the first transaction whose end they do not hold, the aborted
    transactions among them (producer id, first offset), and the offset of the cut
    (None: not cut)."""
    aborted: list[tuple[int, int]] = []
    open_txns: dict[int, tuple[int, int]] = {}  # producer id -> first offset, position
    at = 0
    while at + _BATCH.size <= len(records):
        (base, length, _, _, _, attributes, _, _, _, producer, _, _,
         _) = _BATCH.unpack_from(records, at)
        if at + _BATCH_OVERHEAD + length > len(records):
            break  # cut at the fetch's size limit
        if attributes & _CONTROL:
            started = open_txns.pop(producer, None)
            if started is not None and _control_type(records, at + _BATCH.size) == _ABORT:
                aborted.append((producer, started[0]))
        elif attributes & _TRANSACTIONAL:
            open_txns.setdefault(producer, (base, at))
        at += _BATCH_OVERHEAD + length
    if open_txns:  # read again once their markers are there
        offset, position = min(open_txns.values())
        return records[:position], aborted, offset
    return records, aborted, None


def _control_type(data: bytes, at: int) -> int:
    """The type of the control record at ``at``: its key is a version and a type."""
    _, at = _varint(data, at)  # record length (varints, skipped whatever their sign)
    at += 1  # attributes
    for _ in range(3):  # timestamp delta, offset delta, key length
        _, at = _varint(data, at)
    return int(struct.unpack_from(">h", data, at + 2)[0])


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
