"""Finished runs leave the read model ``Settings.readmodel_retention_s`` after they ended.

The read model is a view of the history topic, whose retention (30 days) bounds what a
rebuild could bring back; without this, Redis would keep every run ever finished. Every
worker sweeps once a minute: a run is deleted once, by whichever worker gets to it
first, and a run replayed meanwhile stays (``RunStore.expire_finished``).
"""

from __future__ import annotations

import asyncio
import functools

from stepstream.step import now_ms
from streams.backoff import until_done
from streams.readmodel import RunStore
from streams.redis_client import STORE_ERRORS

SWEEP_EVERY_S = 60.0
_BATCH = 500


async def expire_finished_runs(store: RunStore, retention_s: float, *,
                               every_s: float = SWEEP_EVERY_S) -> None:
    """Until cancelled: every ``every_s``, delete the runs that ended more than
    ``retention_s`` ago. Redis down: the sweep waits for it."""
    while True:
        cutoff = now_ms() - int(retention_s * 1000)
        await until_done(functools.partial(sweep, store, cutoff),
                         what="read-model retention", errors=STORE_ERRORS)
        await asyncio.sleep(every_s)


async def sweep(store: RunStore, ended_before: int) -> int:
    """Delete every run that ended before ``ended_before`` (ms), in batches; how many."""
    total = 0
    while True:
        deleted = await store.expire_finished(ended_before, limit=_BATCH)
        total += deleted
        if deleted < _BATCH:
            return total
