"""The run read model in Redis, projected from the history topic.

Kafka is the source of truth; this is a view that can be dropped and rebuilt by
replaying the history topic (``streams.rebuild``). Keys, under ``{namespace}:``:

- ``run:{id}``: the run's timeline, one JSON document (``streams.timeline``);
- ``runs``, ``runs:fn:{function}``, ``runs:status:{status}`` and
  ``runs:fn:{function}:status:{status}``: sorted sets of run ids scored by start
  time, one per filter, so a filtered, paginated list is one ``ZRANGE``;
- ``functions``: the functions that have runs; ``event:{id}:runs``: runs an event started;
- ``dlq`` and ``dlq:fn:{function}``: dead letters (``[run id, step id]`` as JSON)
  scored by time, with each entry in the hash ``dlq:entries``. The projector
  indexes them from the history records of steps that failed for good (see
  ``timeline.is_dead_letter``), so they come back in the same order as the
  rest of the run on a rebuild, and go when the run is replayed;
- ``runs:ended``: finished runs scored by end time, for ``expire_finished``: a run
  leaves the read model ``Settings.readmodel_retention_s`` after it ended (the history
  topic's retention), with its index entries and dead letters;
- ``readmodel:rebuilding``: set while a rebuild runs; the projectors wait for it
  to go, so they do not write into a half-rebuilt view;
- ``progress:{id}``: what the run's running steps last said of their progress
  (``ctx.progress``), a hash of step id to JSON. Not from the history topic: the
  executors write it directly, best-effort (``streams.progress``); it expires a day
  after its last write and goes when the run ends.

And two pub/sub channels: ``ended``: each run that reaches a final status is published
there (``[run id, event id]``, in the transaction that writes it), for whoever waits for
a result (``streams.run_waits``); ``changed``: the ids of the runs each projected batch
(or progress write) changed, as a JSON list, for the live streams (``streams.http_stream``).

A run's status index moves with the run (running → failed → running again on a
replay → completed): the old status entry is removed in the same transaction
that writes the document.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from schemas.messages import HistoryRecord
from streams.paging import Page, page
from streams.timeline import (
    FINAL,
    STATUSES,
    apply_record,
    error_doc,
    is_dead_letter,
    starts_again,
    summary,
)

__all__ = ["STATUSES", "RunStore", "apply_record"]

READ_MODEL_PATTERNS = ("run:*", "runs", "runs:*", "functions", "event:*:runs", "dlq",
                       "dlq:*")
"""Key patterns (under the namespace prefix) of everything the read model owns."""
_LOCK_WAIT_S = 0.2
_ENDED = "runs:ended"
ENDED_CHANNEL = "ended"
"""The pub/sub channel (under the namespace prefix) where runs that end are announced."""
CHANGED_CHANNEL = "changed"
"""The pub/sub channel (under the namespace prefix) where changed runs are announced:
one message per projected batch, not one per run."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class _Indexed:
    """What a run's index entries depend on: equal before and after a write, the
    entries written with the stored document stand (most writes are a step's progress)."""

    function_id: str
    status: str
    started_at: int | None
    event_id: str | None
    dead_letters: tuple[str, ...]

    @classmethod
    def of(cls, doc: dict[str, Any] | None) -> _Indexed | None:
        if doc is None:
            return None
        event = doc["event"]
        return cls(doc["function_id"], doc["status"], doc["started_at"],
                   None if event is None else event["id"], tuple(doc.get("dead_letters", ())))


def dlq_member(run_id: str, step_id: str) -> str:
    """A dead letter's member in the ``dlq`` sorted sets."""
    return json.dumps([run_id, step_id], separators=(",", ":"))


class RunStore:
    """Reads and writes the read model under ``{namespace}:`` keys.

    Args:
        client: the Redis client.
        namespace: the stepstream namespace.
        rebuilding: this store is the rebuild's own (it writes while the lock is held).
    """

    def __init__(self, client: aioredis.Redis, namespace: str, *,
                 rebuilding: bool = False) -> None:
        self.redis = client
        self.prefix = f"{namespace}:"
        self.rebuilding = rebuilding
        self.lock_key = f"{self.prefix}readmodel:rebuilding"

    def key(self, suffix: str) -> str:
        """A read-model key of this namespace."""
        return f"{self.prefix}{suffix}"

    def _run_key(self, run_id: str) -> str:
        return f"{self.prefix}run:{run_id}"

    def progress_key(self, run_id: str) -> str:
        """The hash of the run's step progress (``streams.progress``)."""
        return f"{self.prefix}progress:{run_id}"

    def runs_key(self, function: str | None = None, status: str | None = None) -> str:
        """The sorted set of run ids that a filter selects."""
        key = "runs"
        if function is not None:
            key += f":fn:{function}"
        if status is not None:
            key += f":status:{status}"
        return self.key(key)

    # --- writing -------------------------------------------------------------------

    async def apply(self, record: HistoryRecord) -> None:
        """Project one history record; idempotent."""
        await self.apply_many([record])

    async def apply_many(self, records: Sequence[HistoryRecord]) -> None:
        """Project records (in topic order) in one read and one transaction; idempotent."""
        if not records:
            return
        run_ids = list(dict.fromkeys(r.run_id for r in records))
        keys = [self._run_key(r) for r in run_ids]
        while True:
            *raws, lock = await self.redis.mget([*keys, self.lock_key])
            if lock is None or self.rebuilding:
                break
            await asyncio.sleep(_LOCK_WAIT_S)  # a rebuild is under way: write after it
        after = {r: json.loads(raw) if raw else None
                 for r, raw in zip(run_ids, raws, strict=True)}
        # What the stored documents are indexed by (``after`` is folded in place).
        before = {r: _Indexed.of(doc) for r, doc in after.items()}
        changed: set[str] = set()
        letters: list[HistoryRecord] = []
        for record in records:
            doc = after[record.run_id]
            if doc is not None and record.seq <= doc["seq"] and not starts_again(doc, record):
                continue
            after[record.run_id] = apply_record(doc, record)
            changed.add(record.run_id)
            if is_dead_letter(record):
                letters.append(record)
        async with self.redis.pipeline(transaction=True) as tx:
            for run_id in changed:
                self._write(tx, before[run_id], after[run_id])
                self._announce_end(tx, before[run_id], after[run_id])
            for record in letters:
                doc = after[record.run_id]
                if doc is not None and record.step_id in doc["dead_letters"]:
                    self._index_letter(tx, record, doc)
            if changed:
                tx.publish(self.key(CHANGED_CHANNEL),
                           json.dumps(sorted(changed), separators=(",", ":")))
            await tx.execute()

    def _announce_end(self, tx: Any, old: _Indexed | None, doc: dict[str, Any] | None) -> None:
        assert doc is not None
        if doc["status"] in FINAL and (old is None or old.status not in FINAL):
            new = _Indexed.of(doc)
            assert new is not None
            tx.delete(self.progress_key(doc["run_id"]))  # no step runs any more
            tx.publish(self.key(ENDED_CHANNEL),
                       json.dumps([doc["run_id"], new.event_id], separators=(",", ":")))

    def _write(self, tx: Any, old: _Indexed | None, doc: dict[str, Any] | None) -> None:
        assert doc is not None
        run_id, function, status = doc["run_id"], doc["function_id"], doc["status"]
        tx.set(self._run_key(run_id), json.dumps(doc, separators=(",", ":")))
        new = _Indexed.of(doc)
        if new == old:
            return  # a step's progress: the indexes were written with the stored document
        score = {run_id: doc["started_at"]}
        for key in (self.runs_key(), self.runs_key(function), self.runs_key(status=status),
                    self.runs_key(function, status)):
            tx.zadd(key, score)
        if old is not None and old.status != status:
            tx.zrem(self.runs_key(status=old.status), run_id)
            tx.zrem(self.runs_key(function, old.status), run_id)
        tx.sadd(self.key("functions"), function)
        if doc["ended_at"] is not None:
            tx.zadd(self.key(_ENDED), {run_id: doc["ended_at"]})
        elif old is not None and old.status != "running":
            tx.zrem(self.key(_ENDED), run_id)  # replayed: running again
        if doc["event"] is not None:
            tx.sadd(self.key(f"event:{doc['event']['id']}:runs"), run_id)
        if old is not None:  # replayed: no longer dead letters
            for step_id in set(old.dead_letters) - set(doc["dead_letters"]):
                self._unindex_letter(tx, function, dlq_member(run_id, step_id))

    def _index_letter(self, tx: Any, record: HistoryRecord, doc: dict[str, Any]) -> None:
        assert record.step_id is not None
        member = dlq_member(record.run_id, record.step_id)
        event = doc["event"] or {}
        step = next(s for s in doc["steps"] if s["id"] == record.step_id)
        entry = {"run_id": record.run_id, "function_id": record.function_id,
                 "step_id": record.step_id, "attempt": step["attempts"] - 1, "ts": record.ts,
                 "error": error_doc(record.error), "event_id": event.get("id"),
                 "event_name": event.get("name")}
        tx.zadd(self.key("dlq"), {member: record.ts})
        tx.zadd(self.key(f"dlq:fn:{record.function_id}"), {member: record.ts})
        tx.hset(self.key("dlq:entries"), member, json.dumps(entry, separators=(",", ":")))

    async def expire_finished(self, ended_before: int, limit: int = 500) -> int:
        """Delete up to ``limit`` runs that ended before ``ended_before`` (ms), with their
        entries in every index and their dead letters; how many went. A run replayed
        meanwhile (its document changed) is left for the next call."""
        ended = await self.redis.zrangebyscore(self.key(_ENDED), "-inf", ended_before,
                                               start=0, num=limit)
        run_ids = [_text(r) for r in ended if isinstance(r, bytes | str)]
        if not run_ids:
            return 0
        keys = [self._run_key(r) for r in run_ids]
        try:
            async with self.redis.pipeline(transaction=True) as tx:
                await tx.watch(*keys)
                raws = await tx.mget(keys)
                tx.multi()  # type: ignore[no-untyped-call]
                for run_id, raw in zip(run_ids, raws, strict=True):
                    self._forget(tx, run_id, json.loads(raw) if raw else None)
                await tx.execute()
        except WatchError:
            return 0
        return len(run_ids)

    def _forget(self, tx: Any, run_id: str, doc: dict[str, Any] | None) -> None:
        tx.zrem(self.key(_ENDED), run_id)
        tx.delete(self._run_key(run_id), self.progress_key(run_id))
        tx.zrem(self.runs_key(), run_id)
        if doc is None:
            return
        function, status = doc["function_id"], doc["status"]
        for key in (self.runs_key(function), self.runs_key(status=status),
                    self.runs_key(function, status)):
            tx.zrem(key, run_id)
        if doc["event"] is not None:
            tx.srem(self.key(f"event:{doc['event']['id']}:runs"), run_id)
        for step_id in doc["dead_letters"]:
            self._unindex_letter(tx, function, dlq_member(run_id, step_id))

    def _unindex_letter(self, tx: Any, function: str, member: str) -> None:
        tx.zrem(self.key("dlq"), member)
        tx.zrem(self.key(f"dlq:fn:{function}"), member)
        tx.hdel(self.key("dlq:entries"), member)

    # --- reading -------------------------------------------------------------------

    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The run document, or None when the read model has not seen the run."""
        raw = await self.redis.get(self._run_key(run_id))
        if raw is None:
            return None
        doc: dict[str, Any] = json.loads(raw)
        return doc

    async def get_run_live(self, run_id: str) -> tuple[dict[str, Any] | None,
                                                       dict[str, dict[str, Any]]]:
        """The run document and its steps' progress (step id -> what it last said), read
        together."""
        async with self.redis.pipeline(transaction=True) as tx:
            tx.get(self._run_key(run_id))
            tx.hgetall(self.progress_key(run_id))
            raw, progress = await tx.execute()
        doc = json.loads(raw) if raw is not None else None
        return doc, {_text(step): json.loads(value) for step, value in progress.items()}

    async def get_runs(self, run_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The documents of ``run_ids`` that exist, in that order."""
        if not run_ids:
            return []
        raws = await self.redis.mget([self._run_key(r) for r in run_ids])
        return [json.loads(raw) for raw in raws if raw is not None]

    async def runs_for_event(self, event_id: str) -> list[dict[str, Any]]:
        """Every run the event started."""
        members = await self.redis.smembers(self.key(f"event:{event_id}:runs"))
        return await self.get_runs(sorted(_text(m) for m in members))

    async def list_runs(self, *, function: str | None = None, status: str | None = None,
                        since: int | None = None, until: int | None = None, limit: int = 50,
                        cursor: str | None = None) -> Page:
        """Run summaries, newest first, filtered by function, status and start time.

        Raises:
            ValueError: a bad cursor.
        """
        found = await page(self.redis, self.runs_key(function, status), since=since,
                           until=until, limit=limit, cursor=cursor)
        docs = await self.get_runs(found.items)
        return Page([summary(d) for d in docs], found.next_cursor)

    async def run_ids(self, *, function: str | None = None, status: str | None = None,
                      since: int | None = None, until: int | None = None,
                      limit: int = 10_000) -> list[str]:
        """Ids of the runs a filter selects (newest first, at most ``limit``)."""
        low = "-inf" if since is None else since
        high = "+inf" if until is None else until
        members: list[Any] = await self.redis.zrange(
            self.runs_key(function, status), high, low, byscore=True, desc=True, offset=0,
            num=limit)
        return [_text(m) for m in members]

    async def has_function(self, function_id: str) -> bool:
        """Whether the read model has seen runs of ``function_id``."""
        return bool(await self.redis.sismember(self.key("functions"), function_id))

    async def functions(self, *, since: int | None = None,
                        until: int | None = None) -> list[dict[str, Any]]:
        """Each function with runs: counts per status and the failure rate."""
        names = sorted(_text(n) for n in await self.redis.smembers(self.key("functions")))
        low = "-inf" if since is None else since
        high = "+inf" if until is None else until
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                for status in STATUSES:
                    pipe.zcount(self.runs_key(name, status), low, high)
            counts = await pipe.execute()
        out = []
        for i, name in enumerate(names):
            by_status = dict(zip(STATUSES, counts[i * 4:i * 4 + 4], strict=True))
            judged = by_status["completed"] + by_status["failed"]
            out.append({"function_id": name, "runs": sum(by_status.values()), **by_status,
                        "failure_rate": by_status["failed"] / judged if judged else None})
        return out

    async def dead_letters(self, *, function: str | None = None, limit: int = 50,
                           cursor: str | None = None) -> Page:
        """Dead letters not replayed yet, newest first.

        Raises:
            ValueError: a bad cursor.
        """
        key = self.key("dlq" if function is None else f"dlq:fn:{function}")
        found = await page(self.redis, key, limit=limit, cursor=cursor)
        raws = await self.redis.hmget(self.key("dlq:entries"), found.items) \
            if found.items else []
        return Page([json.loads(raw) for raw in raws if raw is not None], found.next_cursor)

    async def dead_letters_of(self, run_id: str) -> list[dict[str, Any]]:
        """The run's dead letters not replayed yet."""
        doc = await self.get_run(run_id)
        if doc is None or not doc.get("dead_letters"):
            return []
        members = [dlq_member(run_id, s) for s in doc["dead_letters"]]
        raws = await self.redis.hmget(self.key("dlq:entries"), members)
        return [json.loads(raw) for raw in raws if raw is not None]

    async def dlq_size(self) -> int:
        """How many dead letters are waiting (namespace-wide)."""
        return int(await self.redis.zcard(self.key("dlq")))

    # --- rebuilding ----------------------------------------------------------------

    async def flush(self) -> int:
        """Delete every read-model key of the namespace (not the rebuild lock); returns
        how many were deleted."""
        deleted = 0
        for pattern in READ_MODEL_PATTERNS:
            batch: list[Any] = []
            async for key in self.redis.scan_iter(match=self.key(pattern), count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    deleted += await self.redis.delete(*batch)
                    batch = []
            if batch:
                deleted += await self.redis.delete(*batch)
        return deleted
