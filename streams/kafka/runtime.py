"""The runtime: one consumer-group member per worker, its partitions grouped into tasks,
each committed in Kafka transactions (DESIGN §4).

The loop is: take a batch of records (``read_committed``), hand each to the processor
of its topic inside its task, then commit every task that did something, each in one
transaction (outputs, changelog records, input offsets). An aborted transaction rewinds
its task's inputs to its last commit; a fenced task makes the worker rejoin the group.

Assignment: every input topic has the same number of partitions, and partition ``p``
of all of them forms task ``p`` (a run's runs and steps records and its state are one
task). librdkafka's ``range`` assignor gives one member the same partition number of
every topic it subscribes to, which is what co-partitioning needs; its cooperative
assignor balances each topic on its own and would split a task between workers, and
librdkafka takes no assignor written in Python. So rebalances are eager: every task is
committed and closed when a rebalance starts. A task assigned again keeps its in-memory
store and only reads the changelog's tail.

A new task starts paused: its producer is initialised first (fencing the previous
owner's, whose open transaction ends there), then its stores are restored from their
changelogs, then its partitions are read from their committed offsets.

A processor that meets a record of a newer stepstream (``NewerSchemaError``, in a
rolling upgrade) does not set it aside: its partition stops there, uncommitted past it,
until a newer worker gets the partition or the wait runs out (``streams.kafka.newer``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from schemas.codec import NewerSchemaError
from stepstream.settings import Settings
from streams.kafka.clients import Lag, group_consumer, lag_of, reader, transactional_producer
from streams.kafka.local import LocalMessage, is_local
from streams.kafka.newer import NewerRecords
from streams.kafka.store import Backend, Layout, MemoryBackend, StateStore, open_backend
from streams.kafka.task import Outcome, Record, Task

log = logging.getLogger("stepstream.runtime")
T = TypeVar("T")

_REVOKE_TIMEOUT_S = 60.0
_RESTORE_APPLY_EVERY = 10_000
_RESTORE_REPORT_S = 10.0
"""A restore that takes longer logs what it still waits for this often."""
_LOCAL_ROUNDS = 64
COMMIT_LINGER_S = 0.05
"""While records wait to be taken, tasks commit at most this often: fewer, larger
transactions under load. With nothing waiting, a batch commits at once."""
SETTLE_S = 0.002
"""With nothing waiting, how long a batch waits for work it started (``settle``) before
it commits: a quick step's outcome then shares its request's transaction."""


class Processor(Protocol):
    async def process(self, task: Task, message: Any) -> None:
        """Handle one record of the processor's topic inside ``task``'s transaction."""


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """A table: a store per task, restored from ``changelog``."""

    name: str
    changelog: str
    layout: Layout[Any]


@dataclass(slots=True)
class _Punctuation:
    interval_s: float
    call: Callable[[Task], object]
    due: float = 0.0


TaskHook = Callable[[Task], Awaitable[None] | None]
Quarantine = Callable[[Task, Any, str], None]
Settle = Callable[[float], Awaitable[None]]
FirstOffsets = Callable[[Any, list[tuple[str, int]]], dict[tuple[str, int], int]]


class Runtime:
    """Consumes ``processors``' topics in ``group_id`` and runs them as tasks."""

    def __init__(self, settings: Settings, *, group_id: str, transactional_prefix: str,
                 processors: dict[str, Processor], stores: Sequence[StoreSpec] = (),
                 fetch_wait_ms: int, batch: int = 500, local_topics: Iterable[str] = (),
                 quarantine: Quarantine, settle: Settle | None = None,
                 refused: Callable[[Any, str], Record] | None = None,
                 first_offsets: FirstOffsets | None = None) -> None:
        """``local_topics``: inputs whose records a task hands to their processor as it
        sends them (``streams.kafka.local``). ``settle(within_s)``: called before each
        commit, to let work the batch started send its first records (``SETTLE_S``
        when nothing waits, else 0). ``refused(message, reason)``: what a task sends
        instead of a record the producer refuses for its size, given as a message that
        has no offset (``LocalMessage``). ``first_offsets(consumer, partitions)``: where
        to read partitions the group has no committed offset for (those it leaves out:
        from the beginning)."""
        self.settings, self.group_id = settings, group_id
        self.transactional_prefix = transactional_prefix
        self.processors, self.store_specs = processors, tuple(stores)
        self.fetch_wait_ms, self.batch, self.quarantine = fetch_wait_ms, batch, quarantine
        self.local_topics, self.settle = frozenset(local_topics), settle
        self.refused, self.first_offsets = refused, first_offsets
        self.tasks: dict[int, Task] = {}
        self.started: list[TaskHook] = []
        """Called with each task once it is restored, before it processes anything."""
        self.ended: list[TaskHook] = []
        """Called with each task when it is revoked, lost or fenced."""
        self._punctuations: list[_Punctuation] = []
        self.taken: dict[tuple[str, int], tuple[int, float]] = {}
        """(topic, partition) -> (offset, produce time in s) of the last record taken."""
        self.lag: Lag = {}
        self.newer = NewerRecords(settings.newer_schema_wait_s)
        """Partitions stopped at a record of a newer stepstream (``streams.kafka.newer``)."""
        self.joined = False
        """Whether the consumer has had its first assignment."""
        self._consumer: Any = None
        self._thread = concurrent.futures.ThreadPoolExecutor(1, f"{group_id}-consumer")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[Any] | None = None  # assigned, tasks not started yet
        self._suspended: dict[tuple[str, int], Backend] = {}  # memory stores kept
        self._stopping = False
        self._rejoin = False
        self._throttled: set[str] = set()
        self._held_back: dict[tuple[str, int], float] = {}  # partition -> until (monotonic)
        self._held_lock = threading.Lock()  # held back on the loop, applied on the consumer's
        self._paused: set[tuple[str, int]] = set()  # as applied to the consumer
        self._started_at: dict[tuple[str, int], int] = {}  # offsets at the assignment
        self._committed_at = 0.0  # when the loop last committed its tasks

    # --- what others ask --------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Assigned partitions, every task started, no rebalance under way."""
        return (self.joined and self._pending is None and bool(self.tasks)
                and all(task.live for task in self.tasks.values()))

    def task_for(self, partition: int) -> Task | None:
        """The live task of ``partition`` on this worker, if any."""
        task = self.tasks.get(partition)
        return task if task is not None and task.live else None

    def stop(self) -> None:
        """Finish the current batch, commit, leave the group (``run`` returns)."""
        self._stopping = True

    def every(self, interval_s: float, call: Callable[[Task], object]) -> None:
        """Call ``call(task)`` for each live task about every ``interval_s``, before a
        commit: what it writes to the task's stores goes into that transaction (Kafka
        Streams' wall-clock punctuation)."""
        self._punctuations.append(_Punctuation(interval_s, call))

    def throttle(self, topic: str, paused: bool) -> None:
        """Stop (or go on) taking records of ``topic``: its processor has enough queued."""
        if paused:
            self._throttled.add(topic)
        else:
            self._throttled.discard(topic)

    def hold_back(self, topic: str, partition: int, until_s: float) -> None:
        """Take no more records of ``topic``[``partition``] until ``until_s`` (monotonic):
        its processor has read as far ahead as it needs (the delay forwarder)."""
        with self._held_lock:
            self._held_back[(topic, partition)] = until_s

    def _held_back_now(self, tp: tuple[str, int]) -> bool:
        with self._held_lock:
            return self._held_back.get(tp, 0.0) > time.monotonic()

    def _wanted_paused(self, assigned: Iterable[tuple[str, int]]) -> set[tuple[str, int]]:
        now = time.monotonic()
        with self._held_lock:
            for tp in [tp for tp, until in self._held_back.items() if until <= now]:
                del self._held_back[tp]
            held = set(self._held_back)
        return {tp for tp in assigned if tp[0] in self._throttled or tp in held}

    def _apply_pauses(self) -> None:
        """Pause and resume the partitions of started tasks as ``throttle`` and
        ``hold_back`` say (on the consumer thread, before each batch)."""
        from confluent_kafka import TopicPartition

        if not (self._throttled or self._held_back or self._paused):
            return
        assigned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()
                    if self.task_for(tp.partition) is not None}
        wanted = self._wanted_paused(assigned)
        if wanted == self._paused:
            return
        pause, resume = wanted - self._paused, (self._paused - wanted) & assigned
        if pause:
            self._consumer.pause([TopicPartition(t, p) for t, p in pause])
        if resume:
            self._consumer.resume([TopicPartition(t, p) for t, p in resume])
        self._paused = wanted

    async def in_consumer_thread(self, call: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, call, *args)

    # --- the loop -----------------------------------------------------------------

    async def run(self) -> None:
        """Process until ``stop`` (or cancellation); then commit and leave the group."""
        self._loop = asyncio.get_running_loop()
        consumer = self._consumer = group_consumer(
            self.settings, self.group_id, fetch_wait_ms=self.fetch_wait_ms,
            **{"partition.assignment.strategy": "range"})
        await self.in_consumer_thread(self._subscribe)
        try:
            while not self._stopping:
                if self._rejoin:
                    await self._rejoin_group()
                if self._pending is not None:
                    await self._start_tasks()
                await self._settle()  # work the last commit let go on
                # Work done meanwhile (a step's outcome) waits for no record to arrive.
                wait_s = 0.0 if self._waiting_work() else self.fetch_wait_ms / 1000
                messages, positions = await self.in_consumer_thread(self._take, wait_s)
                if messages:
                    await self._process(messages)
                await self._deliver_local()
                await self._settle()
                await self._deliver_local()  # what the settled work sent to itself
                self._caught_up(positions)
                if (messages and any(self.lag.values()) and not self._stopping
                        and time.monotonic() - self._committed_at < COMMIT_LINGER_S):
                    continue  # more records are there: let the transaction take them too
                self._committed_at = time.monotonic()
                self._punctuate()
                await self._commit_all()
        finally:
            await asyncio.shield(self._leave(consumer))

    def _subscribe(self) -> None:
        self._consumer.subscribe(list(self.processors), on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_lost)

    def _take(self, wait_s: float) -> tuple[list[Any], dict[tuple[str, int], int]]:
        """The next batch, and where the consumer stands after it in each partition.

        Waits at most ``wait_s`` for the first record, then takes what is there without
        waiting: librdkafka's ``consume(n, timeout)`` waits the whole timeout unless n
        records arrive, which added a fetch wait to every hop."""
        self._apply_pauses()
        consumer = self._consumer
        first = consumer.poll(wait_s)
        messages: list[Any] = [] if first is None else [first, *consumer.consume(
            self.batch - 1, 0)]
        positions = {}
        for tp in consumer.position(consumer.assignment()):
            # Nothing taken from it since the assignment: it stands where it started.
            offset = tp.offset if tp.offset >= 0 else self._started_at.get(
                (tp.topic, tp.partition), -1)
            if offset < 0:  # from the beginning: its first offset, once fetched
                offset = consumer.get_watermark_offsets(tp, cached=True)[0]
            if offset >= 0:
                positions[(tp.topic, tp.partition)] = offset
        self.lag = lag_of(consumer, positions)
        return messages, positions

    def _waiting_work(self) -> bool:
        return any(task.live and task.has_later for task in self.tasks.values())

    def _caught_up(self, positions: dict[tuple[str, int], int]) -> None:
        """Every record before ``positions`` is processed: the tasks may commit up to
        there. Past the last record, that includes transaction markers (the commit of
        a partition written by a transactional producer reaches its end). A partition
        that waits at a record of a newer stepstream is processed up to that record."""
        for (topic, partition), offset in positions.items():
            task = self.task_for(partition)
            if task is not None:
                waits_at = self.newer.at((topic, partition))
                task.caught_up(topic, offset if waits_at is None else min(offset, waits_at))

    async def _process(self, messages: list[Any]) -> None:
        stray: dict[tuple[str, int], int] = {}  # read again: from there
        stopped: dict[tuple[str, int], int] = {}  # wait at a record of a newer version
        for message in messages:
            error = message.error()
            if error is not None:
                if not error.name().endswith("PARTITION_EOF"):
                    log.warning("%s: %s", self.group_id, error)
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            tp = (topic, partition)
            if tp in stopped:
                continue
            waits_at = self.newer.at(tp)
            if waits_at is not None and self._held_back_now(tp):  # fetched before the pause
                stopped[tp] = waits_at
                continue
            task = self.task_for(partition)
            if task is None:  # its task is not started, or was fenced: read it again then
                stray.setdefault(tp, offset)
                continue
            self.taken[tp] = (offset, message.timestamp()[1] / 1000)
            # A held record, read again after an abort, is not handled twice.
            if not task.is_held(topic, offset) and not await self._handle(task, message):
                stopped[tp] = offset
                continue
            self.newer.passed(tp, offset)
            task.processed(topic, offset)
        if stray or stopped:
            await self.in_consumer_thread(self._seek, {**stray, **stopped})

    async def _handle(self, task: Task, message: Any) -> bool:
        """Process ``message``; False: its partition waits at it (``streams.kafka.newer``)."""
        try:
            await self.processors[message.topic()].process(task, message)
        except NewerSchemaError as exc:
            return self._newer_record(task, message, exc)
        except Exception as exc:  # a bug must not stop the partition: set it aside
            log.exception("processing %s[%d]@%d failed", message.topic(),
                          message.partition(), message.offset())
            self.quarantine(task, message, f"processing failed: {exc!r}")
        return True

    def _newer_record(self, task: Task, message: Any, error: NewerSchemaError) -> bool:
        """``message`` (or the state it meets) was written by a newer stepstream: its
        partition waits, unless it waited long enough (then it is set aside)."""
        if is_local(message):
            return True  # ours, meeting a newer state: its copy read back waits there
        until_s = self.newer.wait(message, error)
        if until_s is None:
            self.quarantine(task, message, self.newer.reason(error))
            return True
        self.hold_back(message.topic(), message.partition(), until_s)
        return False

    async def _settle(self) -> None:
        """Let the work started since the last call send its first records: up to
        ``SETTLE_S`` when nothing waits to be taken, else not at all."""
        if self.settle is not None:
            await self.settle(0.0 if any(self.lag.values()) else SETTLE_S)

    async def _deliver_local(self) -> None:
        """Hand each task the records it sent to its own inputs (and those they lead
        to, up to a bound; the rest next time), inside its open transaction."""
        for task in list(self.tasks.values()):
            for _ in range(_LOCAL_ROUNDS):
                records = task.take_local() if task.live else []
                if not records:
                    break
                for record in records:
                    await self._handle(task, LocalMessage(record))

    def _punctuate(self) -> None:
        now = time.monotonic()
        for punctuation in self._punctuations:
            if now >= punctuation.due:
                punctuation.due = now + punctuation.interval_s
                for task in list(self.tasks.values()):
                    if not task.live:
                        continue
                    try:
                        punctuation.call(task)
                    except Exception:  # a bug there must not stop the tasks
                        log.exception("%s: punctuation of task %d failed", self.group_id,
                                      task.partition)

    async def _commit_all(self) -> None:
        outcomes = await self._commit(list(self.tasks.values()))
        for task, outcome in outcomes:
            if outcome is Outcome.ABORTED:
                self._stop_waiting(task.partition)  # read again up to the newer record
                await self.in_consumer_thread(self._seek, task.rewind_positions())
            elif outcome is Outcome.FENCED:
                await self._drop(task)
                self._rejoin = True  # another worker owns it, or our producer broke

    @staticmethod
    async def _commit(tasks: list[Task], *, revoking: bool = False
                      ) -> list[tuple[Task, Outcome]]:
        dirty = [task for task in tasks if task.live and (task.dirty or task.refresh_due)]
        outcomes = await asyncio.gather(*(task.commit(revoking=revoking) for task in dirty))
        return list(zip(dirty, outcomes, strict=True))

    def _commit_offsets(self, offsets: list[Any]) -> None:
        """Commit ``offsets`` now (from a task's thread: librdkafka's commit is safe
        beside the consumer thread's poll)."""
        self._consumer.commit(offsets=offsets, asynchronous=False)

    def _seek(self, positions: dict[tuple[str, int], int]) -> None:
        """Read ``positions`` again. A partition revoked meanwhile is skipped: its next
        owner starts from its committed offset, which is at most these."""
        from confluent_kafka import KafkaException, TopicPartition

        assigned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        for (topic, partition), offset in positions.items():
            if (topic, partition) not in assigned:
                continue
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # going on would skip records: start afresh
                log.warning("%s: %s[%d] not rewound to %d (%s); rejoining the group",
                            self.group_id, topic, partition, offset, exc.args[0])
                self._rejoin = True

    def _stop_waiting(self, partition: int) -> None:
        """The partitions numbered ``partition`` that wait at a newer record are read
        again (from the task's last commit: they meet that record once more)."""
        with self._held_lock:
            for tp in self.newer.forget(partition):
                self._held_back.pop(tp, None)

    async def _rejoin_group(self) -> None:
        """Leave and join the group again: the tasks this worker may still own start
        afresh, with new producers, from their committed offsets (KafkaStreams does the
        same on a fenced task)."""
        self._rejoin = False
        log.warning("%s: rejoining the group", self.group_id)
        await self.in_consumer_thread(self._consumer.unsubscribe)
        await self.in_consumer_thread(self._subscribe)

    # --- rebalances (called by librdkafka inside consume, on the consumer thread) ----

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        log.info("%s: partitions %s assigned", self.group_id,
                 sorted({tp.partition for tp in partitions}))
        committed = consumer.committed(partitions, timeout=30) if partitions else []
        fresh = [(tp.topic, tp.partition) for tp in committed if tp.offset < 0]
        first = self.first_offsets(consumer, fresh) if fresh and self.first_offsets else {}
        start = [TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else
                                first.get((tp.topic, tp.partition), OFFSET_BEGINNING))
                 for tp in committed]
        consumer.assign(start)
        self._paused = set()  # a new assignment: nothing held back by ``_apply_pauses``
        self._started_at = {(tp.topic, tp.partition): tp.offset for tp in start}
        if start:
            consumer.pause(start)  # until the tasks are started (producers, stores)
            self._pending = start
        self.joined = True  # last: a reader that is ready has its first offsets

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        numbers = sorted({tp.partition for tp in partitions})
        log.info("%s: tasks %s revoked", self.group_id, numbers)
        self._hand_back(set(numbers), commit=True)
        consumer.unassign()
        log.info("%s: tasks %s handed back", self.group_id, numbers)

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        lost = {tp.partition for tp in partitions}
        log.warning("%s: partitions %s lost (the session expired): their tasks end without "
                    "a commit; their new owner fenced them", self.group_id, sorted(lost))
        self._hand_back(lost, commit=False)
        consumer.unassign()

    def _hand_back(self, partitions: set[int], *, commit: bool) -> None:
        self._pending = None
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        ending = asyncio.run_coroutine_threadsafe(self._end_tasks(partitions, commit), loop)
        try:
            ending.result(_REVOKE_TIMEOUT_S)
        except Exception as exc:  # the loop is stopping: the next owner redoes the work
            log.warning("%s: tasks not ended cleanly: %r", self.group_id, exc)

    async def _end_tasks(self, partitions: set[int], commit: bool) -> None:
        """End the tasks of revoked (or lost) partitions. An aborted last commit needs
        no rewind: the partitions' next owner reads from their committed offsets. (A
        rewind here would wait for the consumer thread, which waits for this.)"""
        ending = [task for p, task in self.tasks.items() if p in partitions]
        if commit:
            await self._commit(ending, revoking=True)
        for task in ending:
            await self._drop(task, keep_stores=True)

    async def _drop(self, task: Task, *, keep_stores: bool = False) -> None:
        if self.tasks.get(task.partition) is task:
            del self.tasks[task.partition]
        self.newer.forget(task.partition)
        with self._held_lock:
            for tp in [tp for tp in self._held_back if tp[1] == task.partition]:
                del self._held_back[tp]
        for topic_partition in list(self.taken):
            if topic_partition[1] == task.partition:
                del self.taken[topic_partition]
        await task.close()
        for hook in self.ended:
            await _called(hook, task)
        for store in task.stores.values():
            if keep_stores and isinstance(store.backend, MemoryBackend):
                self._suspended[(store.changelog, task.partition)] = store.backend
            else:
                store.close()

    # --- starting tasks -------------------------------------------------------------

    async def _start_tasks(self) -> None:
        assigned, self._pending = self._pending or [], None
        numbers = sorted({tp.partition for tp in assigned} - set(self.tasks))
        loop = asyncio.get_running_loop()
        producers = await asyncio.gather(*(loop.run_in_executor(None, self._producer, p)
                                           for p in numbers))
        stores = {p: self._stores(p) for p in numbers}
        for gone in list(self._suspended):  # partitions that went to other workers
            self._suspended.pop(gone).close()
        await loop.run_in_executor(None, self._restore,
                                   [s for by_name in stores.values() for s in by_name.values()])
        for p, producer in zip(numbers, producers, strict=True):
            task = Task(p, producer, stores[p], self._consumer.consumer_group_metadata,
                        commit_offsets=self._commit_offsets,
                        stopping=lambda: self._stopping,
                        retry_for_s=self.settings.session_timeout_s * 2,
                        local_topics=self.local_topics,
                        refused=None if self.refused is None else self._set_aside)
            self.tasks[p] = task
            for hook in self.started:
                await _called(hook, task)
        if self._pending is None:  # no rebalance meanwhile
            await self.in_consumer_thread(self._consumer.resume, [
                tp for tp in assigned if tp.topic not in self._throttled])
            self._paused = {(tp.topic, tp.partition) for tp in assigned
                            if tp.topic in self._throttled}
            log.info("%s: tasks %s started", self.group_id, numbers)

    def _set_aside(self, record: Record, reason: str) -> Record:
        assert self.refused is not None
        return self.refused(LocalMessage(record), reason)

    def _producer(self, partition: int) -> Any:
        """The task's producer, initialised: that fences the previous owner's and ends
        its open transaction. Retried while the broker is away."""
        def initialised() -> Any:
            producer = transactional_producer(
                self.settings, f"{self.transactional_prefix}.{partition}")
            producer.init_transactions(max(30.0, self.settings.session_timeout_s * 3))
            return producer

        return self._until_answered(
            initialised, f"{self.group_id}: task {partition}: producer not initialised")

    def _stores(self, partition: int) -> dict[str, StateStore[Any]]:
        stores: dict[str, StateStore[Any]] = {}
        for spec in self.store_specs:
            backend = self._suspended.pop((spec.changelog, partition), None)
            if backend is None:
                backend = open_backend(self.settings.store, self.settings.data_dir,
                                       f"{self.settings.namespace}/{spec.name}-{partition}",
                                       memory_mb=self.settings.rocksdb_memory_mb)
            stores[spec.name] = StateStore(spec.changelog, partition, backend, spec.layout)
        return stores

    def _restore(self, stores: list[StateStore[Any]]) -> None:
        """Read each store's changelog from where the store is to its end.

        Where to start is asked of the broker (its first offset, when the store has no
        position) rather than left to the consumer's ``OFFSET_BEGINNING``, whose reset
        cost about 0.5 s on the dev broker. Every changelog is read to an end-of-partition,
        even one whose end offset says there is nothing to read: the dev broker reports
        the end of a partition whose last batch holds several records short of it."""
        from confluent_kafka import TopicPartition

        if not stores:
            return
        started = time.monotonic()
        consumer = reader(self.settings, fetch_wait_ms=self.fetch_wait_ms)
        by_tp = {(s.changelog, s.partition): s for s in stores}
        consumer.assign([
            TopicPartition(t, p, max(store.backend.position() or 0,
                                     self._watermarks(consumer, TopicPartition(t, p))[0]))
            for (t, p), store in by_tp.items()])
        changes: dict[tuple[str, int], dict[bytes, bytes | None]] = {tp: {} for tp in by_tp}
        positions: dict[tuple[str, int], int] = {}
        ends: dict[tuple[str, int], int] = {}  # the end each last end-of-partition was held to
        remaining, read = set(by_tp), 0
        report_at = started + _RESTORE_REPORT_S
        try:
            while remaining:
                if time.monotonic() >= report_at:  # say what it waits for, never silently
                    report_at += _RESTORE_REPORT_S
                    log.warning("still restoring after %.0fs: %s", time.monotonic() - started,
                                ", ".join(f"{t}[{p}] at {positions.get((t, p), '?')}"
                                          f" (end {ends.get((t, p), '?')})"
                                          for t, p in sorted(remaining)))
                for message in consumer.consume(1000, 0.1):
                    tp = (message.topic(), message.partition())
                    error = message.error()
                    if error is not None:
                        if error.name().endswith("PARTITION_EOF"):
                            ends[tp] = self._end(consumer, tp)
                            if message.offset() >= ends[tp]:
                                remaining.discard(tp)
                            positions[tp] = message.offset()
                        else:
                            log.warning("restoring %s: %s", tp, error)
                        continue
                    changes[tp][message.key()] = message.value()
                    positions[tp] = message.offset() + 1
                    read += 1
                    if len(changes[tp]) >= _RESTORE_APPLY_EVERY:
                        by_tp[tp].restored(changes[tp], positions[tp])
                        changes[tp] = {}
            for tp, store in by_tp.items():
                if tp in positions:
                    store.restored(changes[tp], positions[tp])
        finally:
            consumer.close()
        log.info("restored %d stores from %d changelog records in %.2fs", len(stores), read,
                 time.monotonic() - started)

    def _watermarks(self, consumer: Any, tp: Any) -> tuple[int, int]:
        """The first and the end offset of ``tp``; asked again while the broker is away."""
        low, high = self._until_answered(
            lambda: consumer.get_watermark_offsets(tp, timeout=10, cached=False),
            f"restoring {tp.topic}[{tp.partition}]: its offsets not known")
        return int(low), int(high)

    def _until_answered(self, call: Callable[[], T], what: str) -> T:
        """``call()``, again after a growing pause while it fails with a Kafka error (the
        broker is away), unless the runtime is stopping."""
        from confluent_kafka import KafkaException

        delay = 0.1
        while True:
            try:
                return call()
            except KafkaException as exc:
                if self._stopping:
                    raise
                log.warning("%s (%s); trying again", what, exc.args[0])
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    @staticmethod
    def _end(consumer: Any, tp: tuple[str, int]) -> int:
        """The partition's end as the broker lists it, which an end-of-partition must
        reach: the dev broker can report a fetch's end short of the records it holds
        (DESIGN §8). Behind the dev broker's gate this is the high watermark, also for a
        ``read_committed`` reader, whose end-of-partition comes at the last stable
        offset: a transaction left open in the partition holds the restore until it
        ends (the "still restoring" report shows the two offsets apart)."""
        from confluent_kafka import TopicPartition

        return int(consumer.get_watermark_offsets(TopicPartition(*tp), timeout=10,
                                                  cached=False)[1])

    # --- leaving ----------------------------------------------------------------------

    async def _leave(self, consumer: Any) -> None:
        await self._commit_all()
        await self.in_consumer_thread(consumer.close)  # revokes: the tasks end there
        for task in list(self.tasks.values()):
            await self._drop(task)
        for backend in self._suspended.values():
            backend.close()
        self._suspended.clear()


async def _called(hook: TaskHook, task: Task) -> None:
    result = hook(task)
    if result is not None:
        await result
