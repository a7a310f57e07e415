"""Waiting for a run's result from the SDK (``Stepstream.result``, ``send(wait=...)``).

It reads the run read model in Redis, woken by the projector's announcement of each run
that ends (``streams.run_waits``): no polling, and no worker URL to know.
"""

from __future__ import annotations

import asyncio
from typing import Any

from stepstream.errors import RunFailed, StepstreamError
from stepstream.settings import Settings


def run_result(settings: Settings, run_id: str, timeout: float) -> Any:
    """The output of ``run_id`` once it has completed.

    Raises:
        RunFailed: it failed or was cancelled.
        TimeoutError: it had not ended within ``timeout`` seconds.
    """
    doc = _waited(settings, lambda waits: waits.run(run_id, timeout))
    if doc is None:
        raise TimeoutError(f"run {run_id} not seen within {timeout}s (is a worker running "
                           f"for namespace {settings.namespace!r}?)")
    return _output(doc, timeout)


def event_result(settings: Settings, event_id: str, timeout: float) -> Any:
    """The output of the one run ``event_id`` started, once it has completed.

    Raises:
        RunFailed: it failed or was cancelled.
        TimeoutError: no run had ended within ``timeout`` seconds.
        StepstreamError: the event started several runs (wait for each with its run id).
    """
    docs = _waited(settings, lambda waits: waits.event_runs(event_id, timeout))
    if len(docs) > 1:
        raise StepstreamError(
            f"event {event_id} started {len(docs)} runs "
            f"({', '.join(sorted(d['function_id'] for d in docs))}): name the function "
            "(send(..., function=...)) or wait for each run with result(run_id)")
    if not docs:
        raise TimeoutError(f"event {event_id} started no run within {timeout}s (does a "
                           f"function of namespace {settings.namespace!r} take it?)")
    return _output(docs[0], timeout)


def _output(doc: dict[str, Any], timeout: float) -> Any:
    if doc["status"] == "running":
        raise TimeoutError(f"run {doc['run_id']} still running after {timeout}s")
    if doc["status"] != "completed":
        error = doc.get("error") or {}
        raise RunFailed(doc["run_id"], doc["status"], error.get("type", ""),
                        error.get("message", ""))
    return doc["output"]


def _waited(settings: Settings, wait: Any) -> Any:
    async def waited() -> Any:
        from streams.readmodel import RunStore
        from streams.redis_client import connect
        from streams.run_waits import RunWaits

        client = connect(settings.redis_url)
        waits = RunWaits(RunStore(client, settings.namespace))
        try:
            return await wait(waits)
        finally:
            await waits.close()
            await client.aclose()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(waited())
    raise RuntimeError("called inside an event loop: use await Stepstream.result_async(...) "
                       "or await Stepstream.send_async(..., wait=...)")
