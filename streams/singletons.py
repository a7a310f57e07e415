"""Singleton functions: at most one running run per key value, decided in Kafka.

A run of a singleton function does not go straight to its own partition: the trigger
sends a ``SingletonClaim`` to the runs topic keyed by the singleton key, so that one
orchestrator task decides for each key, against its ``singletons`` table (the holder of
each key, on a compacted changelog), in the transaction that sends what it decides:

- the key is free: the run holds it, and its ``RunStarted`` goes to its partition;
- ``skip``: the new run never runs; its history says so (``cancelled``,
  ``SingletonSkipped``);
- ``cancel``: the holder is asked to cancel, and the new run waits in the table until
  the holder has ended (a newer event in the meantime replaces it, recorded as skipped).

A run that holds a key says ``SingletonReleased`` when it ends (``streams.machine``);
the entry then leaves the table, or passes to the waiting run. So the table holds the
keys whose runs are running, no more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from schemas.messages import (
    CancelRequested,
    ErrorInfo,
    HistoryRecord,
    RunStarted,
    SingletonClaim,
    SingletonHolder,
    SingletonReleased,
)
from stepstream.errors import ExpressionError
from stepstream.function import FunctionDef
from streams.expression_failures import report
from streams.flow.keys import key_value
from streams.flow.trigger import never_ran
from streams.kafka.task import Record
from streams.processors.outputs import Outputs

SINGLETONS = "singletons"
"""The name of the singletons table (one ``SingletonHolder`` per held key)."""

SKIPPED = "SingletonSkipped"
"""The error type of the ``cancelled`` runs a singleton did not start."""

Output = RunStarted | CancelRequested | HistoryRecord
Decision = tuple[SingletonHolder | None, list[Output]]
"""The key's holder after a message (None: the key is free), and what to send."""


def claim_of(function: FunctionDef, start: RunStarted) -> SingletonClaim | RunStarted:
    """What the trigger sends for ``start``: a claim if the function is a singleton.

    Raises:
        ExpressionError: the key expression failed on the run's event.
    """
    singleton = function.singleton
    if singleton is None:
        return start
    key = f"singleton:{function.id}:{key_value(singleton.key, start.event)}"
    return SingletonClaim(key=key, mode=singleton.mode,
                          start=replace(start, singleton_key=key))


def start_records(outputs: Outputs, functions: Mapping[str, FunctionDef],
                  starts: Iterable[RunStarted]) -> list[Record]:
    """The records that start ``starts``: each to its run's partition, or, for a
    singleton function, a claim to its key's. A run whose key expression fails fails at
    once (as a concurrency key's would), its history saying why."""
    records = []
    for start in starts:
        function = functions.get(start.function_id)
        try:
            message = start if function is None else claim_of(function, start)
        except ExpressionError as error:
            report(outputs.metrics, start.function_id, "key", error)
            records += [outputs.history(r) for r in never_ran(
                start.function_id, start.event, start.run_id, "failed",
                ErrorInfo(type=type(error).__name__, message=str(error)))]
            continue
        key = message.key if isinstance(message, SingletonClaim) else start.run_id
        records.append(outputs.to("runs", key, message))
    return records


def on_claim(holder: SingletonHolder | None, claim: SingletonClaim, ts: int) -> Decision:
    """A run asks for its key."""
    start = claim.start
    if holder is None:
        return SingletonHolder(run_id=start.run_id), [start]
    if start.run_id in (holder.run_id, holder.waiting and holder.waiting.run_id):
        return holder, []  # the same event again
    if claim.mode == "skip":
        return holder, skipped(start, holder.run_id, ts)
    if holder.waiting is not None:  # the holder is being cancelled already
        return replace(holder, waiting=start), skipped(holder.waiting, start.run_id, ts)
    cancel = CancelRequested(run_id=holder.run_id, ts=ts, reason=(
        f"cancelled: run {start.run_id} took its singleton key"))
    return replace(holder, waiting=start), [cancel]


def on_release(holder: SingletonHolder | None, released: SingletonReleased,
               ts: int) -> Decision:
    """A run that held the key ended: the waiting run starts (now: not when its event
    came, so its history shows it started after the run it replaced), or the key is
    free."""
    if holder is None or holder.run_id != released.run_id:
        return holder, []  # a late or repeated release
    if holder.waiting is None:
        return None, []
    start = replace(holder.waiting, ts=max(ts, released.ts))
    return SingletonHolder(run_id=start.run_id), [start]


def skipped(start: RunStarted, holder: str, ts: int) -> list[Output]:
    """The history of a run a singleton did not start: ``cancelled`` at once."""
    return [*never_ran(start.function_id, start.event, start.run_id, "cancelled", ErrorInfo(
        type=SKIPPED, message=f"skipped: run {holder} holds its singleton key "
                              f"{start.singleton_key!r}"), ts)]
