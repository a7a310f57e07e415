"""The write gate lets one write at a time into the broker, and only writes wait; it
tells them from the rest by their header."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator

import pytest

from stepstream.tansu_gate import (
    _BATCH,
    API_VERSIONS,
    END_TXN,
    FETCH,
    JOIN_GROUP,
    LEAVE_GROUP,
    LIST_OFFSETS,
    PRODUCE,
    WriteGate,
    _acks_none,
    _capped,
    _isolation_at,
    _read_committed,
)


def _produce(version: int, acks: int, transactional_id: str | None) -> bytes:
    client_id = b"rdkafka"
    body = struct.pack(">hhih", PRODUCE, version, 7, len(client_id)) + client_id
    txn = None if transactional_id is None else transactional_id.encode()
    if version >= 9:  # flexible: header tagged fields, compact nullable string
        body += b"\x00" + (b"\x00" if txn is None else bytes([len(txn) + 1]) + txn)
    elif version >= 3:
        body += struct.pack(">h", -1) if txn is None else struct.pack(">h", len(txn)) + txn
    body += struct.pack(">hi", acks, 30_000)
    return struct.pack(">i", len(body)) + body


@pytest.mark.parametrize(("version", "transactional_id"), [
    (2, None), (3, None), (3, "ns.engine.3"), (7, "ns.engine.3"), (9, None),
    (9, "ns.engine.3"), (10, "ns.delays.0")])
def test_a_produce_without_acks_is_not_held(version: int, transactional_id: str | None
                                            ) -> None:
    assert _acks_none(_produce(version, 0, transactional_id), PRODUCE, version)
    assert not _acks_none(_produce(version, -1, transactional_id), PRODUCE, version)
    assert not _acks_none(_produce(version, 1, transactional_id), PRODUCE, version)


def _batch(offset: int, producer: int, *, marker: int | None = None) -> bytes:
    """A transactional record batch of one record; ``marker``: a control batch (0 abort,
    1 commit)."""
    attributes = 0x10 | (0x20 if marker is not None else 0)
    key = struct.pack(">hh", 0, marker or 0)
    record = bytes([0, 0, 0, 2 * len(key)]) + key + bytes([0, 0])  # zigzag varints
    record = bytes([2 * len(record)]) + record
    return _BATCH.pack(offset, _BATCH.size - 12 + len(record), 0, 2, 0, attributes, 0, 0, 0,
                       producer, 0, 0, 1) + record


def _fetch_response(records: bytes, *aborted: tuple[int, int], stable_end: int = 9) -> bytes:
    """A Fetch v11 response for one partition whose high watermark is 9; ``aborted``:
    (producer id, first offset)."""
    body = struct.pack(">iihi", 7, 0, 0, 0) + struct.pack(">ih", 1, 1) + b"t"
    body += struct.pack(">iihqqq", 1, 0, 0, 9, stable_end, 0)  # watermark, stable, log start
    body += struct.pack(">i", len(aborted)) + b"".join(struct.pack(">qq", *a) for a in aborted)
    body += struct.pack(">i", -1)  # preferred read replica
    body += struct.pack(">i", len(records)) + records
    return struct.pack(">i", len(body)) + body


def test_a_read_committed_fetch_lists_aborted_transactions_and_waits_for_open_ones(
        ) -> None:
    """Tansu 0.6 lists no aborted transaction: the gate does, from the markers, and its
    stable end is where the first transaction without a marker starts."""
    decided = (_batch(0, 7) + _batch(1, 8) + _batch(2, 7, marker=0) + _batch(3, 8)
               + _batch(4, 8, marker=1))
    frame, all_cut = _read_committed(_fetch_response(decided + _batch(5, 9), stable_end=0), 11)
    # producer 7 aborted from offset 0; producer 9's transaction is open from offset 5
    assert frame == _fetch_response(decided, (7, 0), stable_end=5) and not all_cut


def test_a_fetch_of_open_transactions_only_is_answered_empty_and_said_to_wait() -> None:
    """Answered at once, the reader would fetch again at once until the transaction
    ends: the gate holds such an answer for the fetch's max wait."""
    frame, all_cut = _read_committed(_fetch_response(_batch(5, 9), stable_end=0), 11)

    assert frame == _fetch_response(b"", stable_end=5) and all_cut
    assert not _read_committed(_fetch_response(b""), 11)[1]  # nothing to cut: no wait


def test_a_read_committed_fetch_with_every_transaction_ended_is_stable_to_its_end() -> None:
    """Tansu can report a stable end short of transactions that ended (0 here): with
    every marker in the response, the gate reports the high watermark."""
    decided = _batch(0, 7) + _batch(1, 7, marker=1)
    assert (_read_committed(_fetch_response(decided, stable_end=0), 11)
            == (_fetch_response(decided, stable_end=9), False))


def _request(api_key: int, version: int, body: bytes, *, tagged: bool = False) -> bytes:
    client_id = b"rdkafka"
    frame = struct.pack(">hhih", api_key, version, 7, len(client_id)) + client_id
    frame += (b"\x00" if tagged else b"") + body
    return struct.pack(">i", len(frame)) + frame


@pytest.mark.parametrize(("api_key", "version", "body", "tagged"), [
    (FETCH, 11, struct.pack(">iiiib", -1, 500, 1, 1 << 20, 1), False),
    (LIST_OFFSETS, 5, struct.pack(">ib", -1, 1), False),
    (LIST_OFFSETS, 7, struct.pack(">ib", -1, 1), True)])
def test_the_isolation_level_of_reads_is_found(api_key: int, version: int, body: bytes,
                                                tagged: bool) -> None:
    frame = _request(api_key, version, body, tagged=tagged)
    at = _isolation_at(frame, api_key, version)
    assert at == len(frame) - 1 and frame[at] == 1


def test_other_requests_have_no_isolation_level() -> None:
    assert _isolation_at(_produce(9, -1, "t.0"), PRODUCE, 9) is None
    assert _isolation_at(_request(FETCH, 12, b"\x00" * 30, tagged=True), FETCH, 12) is None


def test_other_writes_are_always_answered() -> None:
    frame = struct.pack(">ihhih", 10, END_TXN, 3, 1, -1)
    assert not _acks_none(frame, END_TXN, 3)


class _Broker:
    """Records the requests it gets; answers each once told to (``answer``)."""

    def __init__(self) -> None:
        self.received: list[int] = []  # correlation ids, in arrival order
        self.api_keys: dict[int, int] = {}  # correlation id -> the request's api key
        self.arrived = asyncio.Condition()
        self._writers: dict[int, asyncio.StreamWriter] = {}

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                size = await reader.readexactly(4)
                frame = await reader.readexactly(struct.unpack(">i", size)[0])
                api_key, correlation_id = struct.unpack_from(">hxxi", frame)
                self._writers[correlation_id] = writer
                self.api_keys[correlation_id] = api_key
                async with self.arrived:
                    self.received.append(correlation_id)
                    self.arrived.notify_all()

    async def wait_for(self, correlation_id: int) -> None:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(
                lambda: correlation_id in self.received), 10)

    async def answer(self, correlation_id: int, body: bytes = b"") -> None:
        writer = self._writers[correlation_id]
        writer.write(struct.pack(">ii", 4 + len(body), correlation_id) + body)
        await writer.drain()


async def _client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


def _fetch(correlation_id: int) -> bytes:
    body = struct.pack(">hhih", 1, 12, correlation_id, -1)
    return struct.pack(">i", len(body)) + body


def _numbered(frame: bytes, correlation_id: int) -> bytes:
    return frame[:8] + struct.pack(">i", correlation_id) + frame[12:]


@contextlib.asynccontextmanager
async def _gated() -> AsyncIterator[tuple[_Broker, int]]:
    """A recording broker and the port of a gate in front of it."""
    broker = _Broker()
    upstream = await asyncio.start_server(broker.serve, "127.0.0.1", 0)
    gate = await WriteGate(0, upstream.sockets[0].getsockname()[1]).start()
    try:
        yield broker, gate.sockets[0].getsockname()[1]
    finally:
        gate.close()
        upstream.close()


async def test_a_write_waits_for_the_write_before_it_to_be_answered() -> None:
    async with _gated() as (broker, gate_port):
        a, b, c, d = [await _client(gate_port) for _ in range(4)]
        a[1].write(_numbered(_produce(9, -1, "t.0"), 1))
        await broker.wait_for(1)
        b[1].write(_numbered(_produce(9, -1, "t.1"), 2))  # held: 1 is not answered
        c[1].write(_fetch(3))  # reads are never held
        await broker.wait_for(3)
        d[1].write(_numbered(_produce(9, 0, None), 4))  # no answer will come: not held
        await broker.wait_for(4)
        assert 2 not in broker.received

        await broker.answer(1)
        assert struct.unpack(">ii", await a[0].readexactly(8)) == (4, 1)  # passed back
        await broker.wait_for(2)  # let in once 1 was answered
        for _, writer in (a, b, c, d):
            writer.close()


async def test_a_write_whose_client_went_away_lets_the_next_one_in() -> None:
    async with _gated() as (broker, gate_port):
        a, b = [await _client(gate_port) for _ in range(2)]
        a[1].write(_numbered(_produce(9, -1, "t.0"), 1))
        await broker.wait_for(1)
        b[1].write(_numbered(_produce(9, -1, "t.1"), 2))  # held behind 1
        a[1].close()  # 1 will never be answered on that connection
        await broker.wait_for(2)
        b[1].close()


def _string(value: bytes) -> bytes:
    return struct.pack(">h", len(value)) + value


def _join(correlation_id: int, group: bytes, member: bytes) -> bytes:
    """A JoinGroup v5 request (its protocols left out: the gate reads up to the group)."""
    body = _string(group) + struct.pack(">ii", 6000, 6000) + _string(member)
    return _numbered(_request(JOIN_GROUP, 5, body), correlation_id)


def _joined(leader: bytes, member: bytes) -> bytes:
    """The body of a JoinGroup v5 response naming ``leader``."""
    return (struct.pack(">ihi", 0, 0, 1) + _string(b"range") + _string(leader)
            + _string(member) + struct.pack(">i", 0))


def _leave(correlation_id: int, group: bytes, member: bytes) -> bytes:
    return _numbered(_request(LEAVE_GROUP, 1, _string(group) + _string(member)),
                     correlation_id)


async def test_the_leader_s_leave_is_answered_by_the_gate_in_its_turn() -> None:
    """Tansu 0.6 would keep a leader that leaves a rebalancing group as its leader for
    good; the member expires instead, as a killed one does. Others leave at once."""
    async with _gated() as (broker, gate_port):
        (leader_r, leader_w), (other_r, other_w) = await _client(gate_port), await _client(
            gate_port)
        leader_w.write(_join(1, b"g", b"m1"))
        other_w.write(_join(2, b"g", b"m2"))
        await broker.wait_for(1)
        await broker.wait_for(2)
        await broker.answer(1, _joined(b"m1", b"m1"))
        await broker.answer(2, _joined(b"m1", b"m2"))
        for reader in (leader_r, other_r):
            await reader.readexactly(struct.unpack(">i", await reader.readexactly(4))[0])

        leader_w.write(_leave(3, b"g", b"m1"))
        other_w.write(_leave(4, b"g", b"m2"))
        await broker.wait_for(3)
        await broker.wait_for(4)
        # in the leader's leave's place, a request the broker answers as is
        assert (broker.api_keys[3], broker.api_keys[4]) == (API_VERSIONS, LEAVE_GROUP)
        await broker.answer(3, b"anything the broker says")
        assert await leader_r.readexactly(14) == struct.pack(">iiih", 10, 3, 0, 0)
        for writer in (leader_w, other_w):
            writer.close()


async def test_a_leave_while_the_member_s_join_is_unanswered_is_answered_by_the_gate(
        ) -> None:
    """The broker may make the joining member leader: its answer is not read yet."""
    async with _gated() as (broker, gate_port):
        _, writer = await _client(gate_port)
        writer.write(_join(1, b"g", b"m1"))
        writer.write(_leave(2, b"g", b"m1"))
        await broker.wait_for(2)
        assert broker.api_keys[2] == API_VERSIONS
        writer.close()


def test_group_requests_are_offered_up_to_the_versions_the_gate_parses() -> None:
    apis = [(PRODUCE, 0, 11), (FETCH, 0, 16), (JOIN_GROUP, 0, 9), (LEAVE_GROUP, 0, 5)]
    body = struct.pack(">ihi", 5, 0, len(apis)) + b"".join(struct.pack(">hhh", *api)
                                                           for api in apis)
    capped = _capped(struct.pack(">i", len(body)) + body, 0)
    assert [struct.unpack_from(">hhh", capped, 14 + 6 * i) for i in range(len(apis))] == [
        (PRODUCE, 0, 11), (FETCH, 0, 11), (JOIN_GROUP, 0, 5), (LEAVE_GROUP, 0, 2)]
