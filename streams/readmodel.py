"""The run read model in Redis, projected from the history topic.

Kafka is the source of truth; this is a view that can be dropped and rebuilt by
replaying the history topic. Each run is one JSON document plus index entries.
Records of one run arrive in order (the history topic is keyed by run id), and
each carries its run's ``seq``: a record at or below the stored ``seq`` was
applied already, so a redelivered record changes nothing.
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from schemas.messages import ErrorInfo, HistoryRecord


def _error(error: ErrorInfo | None) -> dict[str, str] | None:
    if error is None:
        return None
    return {"type": error.type, "message": error.message, "traceback": error.traceback}


def _output(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def apply_record(doc: dict[str, Any] | None, record: HistoryRecord) -> dict[str, Any]:
    """The run document after ``record`` (pure; unit tested)."""
    if doc is None:
        doc = {"run_id": record.run_id, "function_id": record.function_id, "status": "running",
               "event": None, "started_at": record.ts, "ended_at": None, "output": None,
               "error": None, "steps": [], "seq": 0}
    if record.seq <= doc["seq"]:
        return doc
    doc["seq"] = record.seq
    kind = record.kind
    if kind == "run.started" and record.event is not None:
        doc["event"] = {"id": record.event.id, "name": record.event.name,
                        "data": json.loads(record.event.data_json), "ts": record.event.ts}
        doc["started_at"] = record.ts
    elif kind.startswith("step."):
        _apply_step(doc, record)
    elif kind.startswith("run."):
        doc["status"] = kind.removeprefix("run.")
        doc["ended_at"] = record.ts
        doc["output"] = _output(record.output_json)
        doc["error"] = _error(record.error)
    return doc


def _apply_step(doc: dict[str, Any], record: HistoryRecord) -> None:
    step = next((s for s in doc["steps"] if s["id"] == record.step_id), None)
    if step is None:
        step = {"id": record.step_id, "status": "running", "attempts": 0, "output": None,
                "error": None, "started_at": record.started_at, "ended_at": None,
                "history": []}
        doc["steps"].append(step)
    step["attempts"] = max(step["attempts"], record.attempt + 1)
    step["history"].append({"attempt": record.attempt, "started_at": record.started_at,
                            "ended_at": record.ended_at,
                            "outcome": record.kind.removeprefix("step."),
                            "error": _error(record.error),
                            "next_attempt_at": record.next_attempt_at})
    step["ended_at"] = record.ended_at
    step["error"] = _error(record.error)
    step["next_attempt_at"] = record.next_attempt_at
    if record.kind == "step.completed":
        step["status"], step["output"] = "completed", _output(record.output_json)
    elif record.kind == "step.failed":
        step["status"] = "retrying" if record.next_attempt_at is not None else "failed"
    else:  # step.sleeping, step.waiting, step.invoking
        step["status"] = record.kind.removeprefix("step.")


class RunStore:
    """Reads and writes the read model under ``{namespace}:`` keys."""

    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        self.redis = client
        self.prefix = f"{namespace}:"

    def _run_key(self, run_id: str) -> str:
        return f"{self.prefix}run:{run_id}"

    async def apply(self, record: HistoryRecord) -> None:
        """Project one history record; idempotent."""
        key = self._run_key(record.run_id)
        raw = await self.redis.get(key)
        doc = json.loads(raw) if raw else None
        if doc is not None and record.seq <= doc["seq"]:
            return
        doc = apply_record(doc, record)
        async with self.redis.pipeline(transaction=True) as tx:
            tx.set(key, json.dumps(doc, separators=(",", ":")))
            tx.zadd(f"{self.prefix}runs", {record.run_id: doc["started_at"]})
            tx.zadd(f"{self.prefix}runs:fn:{record.function_id}",
                    {record.run_id: doc["started_at"]})
            if record.event is not None:
                tx.sadd(f"{self.prefix}event:{record.event.id}:runs", record.run_id)
            await tx.execute()

    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The run document, or None when the read model has not seen the run."""
        raw = await self.redis.get(self._run_key(run_id))
        if raw is None:
            return None
        doc: dict[str, Any] = json.loads(raw)
        return doc

    async def runs_for_event(self, event_id: str) -> list[dict[str, Any]]:
        """Every run the event started."""
        run_ids = sorted(await self.redis.smembers(f"{self.prefix}event:{event_id}:runs"))
        docs = [await self.get_run(r.decode() if isinstance(r, bytes) else r) for r in run_ids]
        return [d for d in docs if d is not None]
