"""Step progress (``ctx.progress``) from a worker's executor into the read model.

How it travels, and why not through Kafka: progress is advisory (no step result, never
replayed, only the last value of a step matters), so it goes straight to Redis, beside
the read model (``progress:{run}``, a hash of step id to the last value), outside any
transaction, and the stream listeners are told on the ``changed`` channel. A history
record instead would put chatter on a topic that is a public contract (the lifecycle
topic and outside readers derive from it), would need a run sequence number that only
the orchestrator gives (in its transaction), and would cost a transaction per report;
and a rebuild would bring back values that no longer mean anything. What is lost with
Redis (a restart, a rebuild) is only the last progress of steps still running, said
again at their next report.

Bounded: a worker keeps the last report of each (run, step) and writes them together at
most every ``INTERVAL_S``, so a tight loop costs a dict assignment per call and Redis a
few writes a second per worker. A write that fails is dropped (best-effort); a hash
expires ``TTL_S`` after its last write and the projector deletes it when the run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from stepstream.progress import StepProgress
from streams.readmodel import CHANGED_CHANNEL, RunStore
from streams.redis_client import STORE_ERRORS

log = logging.getLogger("stepstream.progress")

INTERVAL_S = 0.25
"""Least time between two writes of a worker's progress reports."""
TTL_S = 24 * 3600
"""A run's progress goes this long after its last report (the run's end removes it
sooner)."""
RUN_LEVEL = ""
"""The hash field of progress reported outside any step."""


def progress_doc(report: StepProgress) -> dict[str, object]:
    """A report as the read model keeps it and the stream shows it."""
    return {"step_id": report.step_id, "attempt": report.attempt,
            "fraction": report.fraction, "message": report.message, "ts": report.ts}


class ProgressBoard:
    """Collects the executor's progress reports and writes the latest to Redis.

    Args:
        store: the read model (its keys and Redis client).
        interval_s: least time between two writes.
    """

    def __init__(self, store: RunStore, interval_s: float = INTERVAL_S) -> None:
        self.store, self.interval_s = store, interval_s
        self._latest: dict[tuple[str, str], StepProgress] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: asyncio.Task[None] | None = None
        self._next_write = 0.0
        self._failed = False

    def report(self, progress: StepProgress) -> None:
        """Keep ``progress`` for the next write (a ``ReportProgress``); callable from the
        worker's event loop or from a step's thread."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if self._loop is None and running is not None:
            self._loop = running
        if running is not self._loop:  # a step's thread: hand it to the loop
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._keep, progress)
            return
        self._keep(progress)

    def _keep(self, progress: StepProgress) -> None:
        self._latest[(progress.run_id, progress.step_id or RUN_LEVEL)] = progress
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write_soon())

    async def _write_soon(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.sleep(max(0.0, self._next_write - loop.time()))
            batch, self._latest = self._latest, {}
            self._next_write = loop.time() + self.interval_s
            await self._write(batch)
        except STORE_ERRORS as exc:
            if not self._failed:  # once per outage, not once per write
                log.warning("step progress not written to Redis (dropped): %s", exc)
            self._failed = True
        finally:
            self._writer = None
        if self._latest:  # reported while this write ran
            self._writer = asyncio.ensure_future(self._write_soon())

    async def _write(self, batch: dict[tuple[str, str], StepProgress]) -> None:
        store = self.store
        async with store.redis.pipeline(transaction=False) as pipe:
            for (run_id, field), report in batch.items():
                key = store.progress_key(run_id)
                pipe.hset(key, field, json.dumps(progress_doc(report), separators=(",", ":")))
                pipe.expire(key, TTL_S)
            runs = sorted({run_id for run_id, _ in batch})
            pipe.publish(store.key(CHANGED_CHANNEL), json.dumps(runs, separators=(",", ":")))
            await pipe.execute()
        self._failed = False

    async def close(self) -> None:
        """Drop what is not written yet (the worker stops)."""
        self._latest.clear()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
