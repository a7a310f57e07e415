"""A task: one partition number of a runtime's input topics, its state stores, and the
transactional producer that commits them (Kafka Streams' tasks, EOS).

Everything a task does to Kafka goes into one transaction at a time: the records its
processors send, the changelog records of its stores and the offsets of its inputs.
The transaction commits, or it aborts and the task is processed again from its last
commit against the state of its last commit.

Work that outlives its batch (a step being executed, a timer waiting in a delay tier)
*holds* its input record: the input partition's committed offset stays at the lowest
record still held, and the record is released in the same transaction as its outcome.

Once quiet for ``REFRESH_AFTER_S`` after committing, a task commits its input offsets
once more. The dev broker needs it: Tansu 0.6 holds a transaction that ends while
another producer's overlapping transaction is open, and applies its offsets when that
one ends, possibly after newer offsets of the same task (seen: a committed offset went
back from 24 to 20 and stayed there). On Kafka it is one small commit per burst.

Each task has a producer of its own whose ``transactional.id`` names the task
(``{prefix}.{partition}``). The next owner of the partition initialises a producer with
the same id before it reads the task's state: that ends the previous owner's open
transaction and fences it, so a worker that was frozen and comes back can no longer
write (DESIGN §4, and docs/production.md for why not one producer per worker).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from streams.kafka.store import StateStore

log = logging.getLogger("stepstream.task")

TopicPartition = tuple[str, int]

_FENCED_CODES = frozenset({"_FENCED", "PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH",
                           "INVALID_PRODUCER_ID_MAPPING", "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
                           "_NOT_IMPLEMENTED"})
_CALL_TIMEOUT_S = 10.0
_TRANSACTION_CALLS = 3
"""Producer calls of a transaction that wait up to ``_CALL_TIMEOUT_S`` besides the
retried commit: the bound of ``Task._transacted``'s deadline."""
REFRESH_AFTER_S = 1.0
"""How long a task that committed input offsets waits, quiet, before it commits them
once more (``Task.refresh_due``)."""


_now = time.monotonic


class Outcome(Enum):
    COMMITTED = "committed"
    ABORTED = "aborted"
    """Nothing of the transaction happened; the task goes on from its last commit."""
    FENCED = "fenced"
    """The task's producer is fenced (another worker owns the partition) or broken."""


class Fenced(Exception):
    """The task was fenced or revoked before this record could be committed."""


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    key: bytes | None
    value: bytes | None


Refused = Callable[[Record, str], Record]
"""What to send instead of a record the producer refuses for its size, and why."""


@dataclass
class _Later:
    """Records sent by work that outlives its batch, and the input it releases."""

    records: list[Record]
    release: TopicPartition | None
    offset: int
    committed: asyncio.Future[None]


@dataclass
class _Input:
    """Where one input partition of the task stands."""

    committed: int | None = None
    """The offset committed last (None: none by this task yet)."""
    start: int | None = None
    """Where this task began reading it, if it has not committed it yet."""
    position: int | None = None
    """The offset after the last record processed."""
    held: list[int] = field(default_factory=list)
    """Offsets of records held (a heap; released ones are dropped lazily)."""
    held_set: set[int] = field(default_factory=set)

    def committable(self) -> int | None:
        while self.held and self.held[0] not in self.held_set:
            heapq.heappop(self.held)
        if self.held:
            return self.held[0]
        return self.position

    def rewind_to(self) -> int | None:
        return self.committed if self.committed is not None else self.start


class Task:
    """One partition number of a runtime: its inputs, stores and transactions."""

    def __init__(self, partition: int, producer: Any, stores: dict[str, StateStore[Any]],
                 group_metadata: Callable[[], Any], *,
                 commit_offsets: Callable[[list[Any]], Any], stopping: Callable[[], bool],
                 retry_for_s: float, local_topics: frozenset[str] = frozenset(),
                 refused: Refused | None = None) -> None:
        self.partition, self.producer, self.stores = partition, producer, stores
        self._refused = refused
        self._group_metadata, self._commit_offsets = group_metadata, commit_offsets
        self._stopping, self._retry_for_s = stopping, retry_for_s
        self._records: list[Record] = []
        self._local_topics = local_topics
        self._to_self: list[Record] = []  # sent to its own inputs: see streams.kafka.local
        self._later: list[_Later] = []
        self._inputs: dict[TopicPartition, _Input] = {}
        self._lock = asyncio.Lock()
        self._thread = concurrent.futures.ThreadPoolExecutor(
            1, f"stepstream-task-{partition}")
        self.live = True
        """False once fenced or revoked: nothing more is processed or committed."""
        self._changelog_ends: dict[str, int] = {}
        self._refresh_at: float | None = None  # see REFRESH_AFTER_S
        self._changelogs = frozenset(store.changelog for store in stores.values())

    def __repr__(self) -> str:
        return f"Task({self.partition})"

    # --- processing (the runtime's loop) ----------------------------------------

    def send(self, record: Record) -> None:
        """Add ``record`` to the open transaction."""
        self._records.append(record)
        self._keep_if_local(record)

    def _keep_if_local(self, record: Record) -> None:
        if record.partition == self.partition and record.topic in self._local_topics:
            self._to_self.append(record)

    def take_local(self) -> list[Record]:
        """The records sent to the task's own inputs since the last call, to hand to
        their processors now (``streams.kafka.local``)."""
        records, self._to_self = self._to_self, []
        return records

    def processed(self, topic: str, offset: int) -> None:
        """The record at ``offset`` is processed: commit past it with this transaction."""
        state = self._inputs.setdefault((topic, self.partition), _Input())
        if state.start is None and state.committed is None:
            state.start = offset
        state.position = offset + 1

    def caught_up(self, topic: str, position: int) -> None:
        """Every record of ``topic`` before ``position`` is processed (the consumer's
        position, which passes transaction markers)."""
        state = self._inputs.setdefault((topic, self.partition), _Input())
        if state.position is None or position > state.position:
            state.position = position

    def hold(self, topic: str, offset: int) -> None:
        """Keep the committed offset of ``topic`` at or below ``offset`` until released."""
        state = self._inputs.setdefault((topic, self.partition), _Input())
        if offset not in state.held_set:
            state.held_set.add(offset)
            heapq.heappush(state.held, offset)

    def is_held(self, topic: str, offset: int) -> bool:
        state = self._inputs.get((topic, self.partition))
        return state is not None and offset in state.held_set

    def send_later(self, records: list[Record], *, release: tuple[str, int] | None = None
                   ) -> asyncio.Future[None]:
        """Send ``records`` (and release the held input ``release``: topic, offset) in the
        next transaction; the future resolves once it has committed, and fails with
        ``Fenced`` if the task ends first."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self.live:
            done.set_exception(Fenced(f"task {self.partition} is gone"))
            done.exception()  # seen: not everybody awaits it
            return done
        topic, offset = release if release is not None else (None, -1)
        for record in records:
            self._keep_if_local(record)
        self._later.append(_Later(records, None if topic is None else (topic, self.partition),
                                  offset, done))
        return done

    @property
    def has_later(self) -> bool:
        """Whether work that outlived its batch, or records sent to the task's own inputs,
        wait for the next transaction."""
        return bool(self._later or self._to_self)

    @property
    def dirty(self) -> bool:
        """Whether there is anything to commit."""
        return self._writes or any(state.committable() != state.committed
                                   for state in self._inputs.values())

    @property
    def _writes(self) -> bool:
        """Whether the open transaction has records to write (outputs, changelog)."""
        return bool(self._records or self._later
                    or any(store.written for store in self.stores.values()))

    @property
    def refresh_due(self) -> bool:
        """Whether the task should commit its offsets once more (REFRESH_AFTER_S)."""
        return self._refresh_at is not None and _now() >= self._refresh_at

    def rewind_positions(self) -> dict[TopicPartition, int]:
        """Where each input must be read again from after an abort."""
        return {tp: offset for tp, state in self._inputs.items()
                if (offset := state.rewind_to()) is not None}

    # --- the transaction ----------------------------------------------------------

    async def commit(self, *, revoking: bool = False) -> Outcome:
        """Commit what the task did since its last commit, in one transaction.

        ``revoking``: the task's partitions are being revoked, and this runs inside the
        consumer's revoke callback, where the consumer cannot commit (librdkafka holds
        the commit until the callback returns: a deadlock). Offsets that come with no
        record are then left: the next owner reads those records again, and they write
        nothing again."""
        async with self._lock:
            if not self.live:
                return Outcome.FENCED
            refresh = self.refresh_due
            if not (self.dirty or refresh) or (revoking and not self._writes):
                return Outcome.COMMITTED
            records, self._records = self._records, []
            later, self._later = self._later, []
            changes = {name: store.changes() for name, store in self.stores.items()}
            released = [(item.release, item.offset) for item in later if item.release]
            for tp, offset in released:  # released if the transaction commits
                self._inputs[tp].held_set.discard(offset)
            offsets = {tp: at for tp, state in self._inputs.items()
                       if (at := state.committable()) is not None and at != state.committed}
            for tp, offset in released:
                self._inputs[tp].held_set.add(offset)
            if refresh:
                offsets = {**{tp: state.committed for tp, state in self._inputs.items()
                              if state.committed is not None}, **offsets}
            out = records + [r for item in later for r in item.records]
            for name, store in self.stores.items():
                out += [Record(store.changelog, store.partition, key, value)
                        for key, value in changes[name].items()]
            outcome = await self._transacted(out, offsets)
            if outcome is Outcome.COMMITTED:
                for name, store in self.stores.items():
                    store.committed(changes[name], self._changelog_ends.get(store.changelog))
                for tp, offset in released:
                    self._inputs[tp].held_set.discard(offset)
                for tp, offset in offsets.items():
                    state = self._inputs[tp]
                    state.committed, state.start = offset, None
                if refresh:
                    self._refresh_at = None
                elif offsets:
                    self._refresh_at = _now() + REFRESH_AFTER_S
                for item in later:
                    if not item.committed.done():
                        item.committed.set_result(None)
                return outcome
            for store in self.stores.values():
                store.rolled_back()
            self._to_self = []  # what they did is undone: their copies are read back
            if outcome is Outcome.ABORTED:
                self._later = later + self._later  # their work is done: send it again
                for state in self._inputs.values():
                    state.position = state.rewind_to()
            else:
                self._end(later)
            return outcome

    async def _transacted(self, records: list[Record], offsets: dict[TopicPartition, int]
                          ) -> Outcome:
        """``_transact`` on the task's thread, given up after a deadline: seen after a
        broker outage on the dev broker, a producer call can hang far past its timeout,
        and the runtime loop, which waits for every commit, with it. Given up, the task
        ends as fenced: the runtime rejoins the group, and the partition's next producer
        (``init_transactions``) ends the transaction whatever became of it. Everything
        the task holds is derived from Kafka, so a transaction that commits after all
        is read back by the next owner."""
        loop = asyncio.get_running_loop()
        call = loop.run_in_executor(self._thread, self._transact, records, offsets)
        deadline_s = self._retry_for_s + _TRANSACTION_CALLS * _CALL_TIMEOUT_S
        try:
            return await asyncio.wait_for(asyncio.shield(call), deadline_s)
        except TimeoutError:
            log.warning("task %d: the transaction did not end within %.0fs (a producer call "
                        "hangs); giving the task up", self.partition, deadline_s)
            call.add_done_callback(lambda done: done.cancelled() or done.exception())
            return Outcome.FENCED

    def _transact(self, records: list[Record], offsets: dict[TopicPartition, int]) -> Outcome:
        """One transaction, on the task's thread (librdkafka's calls block)."""
        from confluent_kafka import KafkaException, TopicPartition

        producer = self.producer
        self._changelog_ends = {}
        if not records:
            return self._commit_offsets_alone(offsets)
        try:
            producer.begin_transaction()
            for record in records:
                self._produce(record)
            if offsets:
                producer.send_offsets_to_transaction(
                    [TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                    self._group_metadata(), _CALL_TIMEOUT_S)
            producer.flush(_CALL_TIMEOUT_S)  # serves the delivery reports (changelog ends)
            self._retrying(producer.commit_transaction)
            return Outcome.COMMITTED
        except KafkaException as exc:
            error = exc.args[0]
            if error.fatal() or error.name() in _FENCED_CODES:
                log.warning("task %d: producer fenced or failed (%s); its partition "
                            "belongs to another worker now", self.partition, error)
                return Outcome.FENCED
            log.warning("task %d: transaction aborted (%s); processing again from the "
                        "last commit", self.partition, error)
            try:
                self._retrying(producer.abort_transaction)
            except KafkaException as again:
                log.warning("task %d: abort failed (%s); giving the task up",
                            self.partition, again)
                return Outcome.FENCED
            return Outcome.ABORTED
        except Exception as exc:
            # Not a KafkaException: the client binding failed (seen right after a broker
            # outage: confluent-kafka 2.16's flush raised "SystemError: _PyErr_SetObject:
            # exception <class 'str'> is not a BaseException subclass"). The producer's
            # state is unknown: give the task up as fenced (the worker used to exit here).
            log.warning("task %d: producer call failed (%r); giving the task up",
                        self.partition, exc)
            return Outcome.FENCED

    def _commit_offsets_alone(self, offsets: dict[TopicPartition, int]) -> Outcome:
        """Offsets with nothing written: the consumer commits them. It is the same commit
        on Kafka (a zombie's fails on its stale generation); on Tansu 0.6 a transaction
        that writes nothing, after one that wrote, loses its offsets (README, "The dev
        broker")."""
        from confluent_kafka import KafkaException, TopicPartition

        try:
            self._commit_offsets([TopicPartition(t, p, o) for (t, p), o in offsets.items()])
        except KafkaException as exc:
            log.info("task %d: offsets not committed (%s); processing again from the last "
                     "commit", self.partition, exc.args[0])
            return Outcome.ABORTED
        return Outcome.COMMITTED

    def _produce(self, record: Record) -> None:
        from confluent_kafka import KafkaError, KafkaException

        def delivered(error: Any, message: Any) -> None:
            if error is None and record.topic in self._changelogs:
                end = message.offset() + 1
                if end > self._changelog_ends.get(record.topic, 0):
                    self._changelog_ends[record.topic] = end

        replaced = False
        while True:
            try:
                self.producer.produce(record.topic, record.value, record.key,
                                      partition=record.partition, on_delivery=delivered)
                return
            except BufferError:  # the local queue is full: let it drain
                self.producer.poll(0.05)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                    raise
                # Sending it again would fail the same way forever. Outputs are held to
                # their limits where they are made; what still passes the producer's is
                # set aside in its place (cut), a final and visible error; a replacement
                # refused too is dropped.
                reason = (f"a record of {len(record.value or b'')} bytes for "
                          f"{record.topic} is over the producer's size limit")
                refused = None if replaced else self._refused
                log.error("task %d: %s; %s", self.partition, reason,
                          "dropped" if refused is None else "set aside")
                if refused is None:
                    return
                record, replaced = refused(record, reason), True

    def _retrying(self, call: Callable[[float], Any]) -> None:
        """``call(timeout)`` again while it fails with a retriable error (a broker outage),
        for up to ``retry_for_s``; then the error is raised."""
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + self._retry_for_s
        while True:
            try:
                call(_CALL_TIMEOUT_S)
                return
            except KafkaException as exc:
                error = exc.args[0]
                if (not error.retriable() or time.monotonic() > deadline
                        or self._stopping()):
                    raise
                log.info("task %d: %s; trying again", self.partition, error)
                time.sleep(0.1)

    # --- the end ------------------------------------------------------------------

    def _end(self, later: list[_Later]) -> None:
        self.live = False
        for item in later + self._later:
            if not item.committed.done():
                item.committed.set_exception(Fenced(f"task {self.partition} ended"))
                item.committed.exception()
        self._later = []

    async def close(self) -> None:
        """The partition is revoked (after a last commit) or the task was fenced."""
        async with self._lock:
            self._end([])
        self._thread.shutdown(wait=False)
        # Not awaited, on a thread that does not hold the process up at exit: closing
        # a fenced producer waits on its transaction coordinator for a long while.
        threading.Thread(target=self._close_producer, name=f"close-task-{self.partition}",
                         daemon=True).start()

    def _close_producer(self) -> None:
        """Drop what is still queued (nothing after a commit; a fenced task's records may
        not go out) and free the producer's threads and connections."""
        from confluent_kafka import KafkaException

        try:
            self.producer.purge()
            self.producer.close()
        except (KafkaException, RuntimeError) as exc:  # fenced: it cannot close cleanly
            log.info("task %d: producer closed with %s", self.partition, exc)
