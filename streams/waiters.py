"""Matching events against waiting runs (``wait_for_event``, ``cancel_on``); pure.

The waiters of one event name live in one ``WaiterSet`` (the value of the waiters
table, keyed by event name). An event is matched against the set of its name;
a condition sees the run's triggering event as ``event`` and the incoming one as
``async``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from schemas.messages import CancelRequested, Event, EventMatched, Waiter, WaiterSet
from stepstream.expressions import matches


def event_context(event: Event) -> dict[str, Any]:
    """An event as CEL sees it."""
    return {"id": event.id, "name": event.name, "data": json.loads(event.data_json),
            "ts": event.ts}


def change(waiters: WaiterSet, waiter: Waiter, active: bool, now_ms: int) -> WaiterSet:
    """The set with ``waiter`` added (``active``) or removed, and expired waiters dropped."""
    kept = [w for w in waiters.waiters
            if (w.run_id, w.step_id) != (waiter.run_id, waiter.step_id) and w.expires_at > now_ms]
    if active:
        kept.append(waiter)
    return WaiterSet(waiters=kept)


@dataclass(frozen=True, slots=True)
class Match:
    """What an event does to the runs waiting for it."""

    messages: list[EventMatched | CancelRequested]
    remaining: WaiterSet


def match(waiters: WaiterSet, event: Event) -> Match:
    """The messages for the runs ``event`` wakes or cancels; matched waiters are removed.

    A waiter that expired before the event happened does not match (its timeout fired).
    """
    incoming = event_context(event)
    messages: list[EventMatched | CancelRequested] = []
    remaining = []
    for waiter in waiters.waiters:
        context = {"event": event_context(waiter.trigger), "async": incoming}
        if waiter.expires_at > event.ts and matches(waiter.condition, context):
            if waiter.kind == "cancel":
                messages.append(CancelRequested(
                    run_id=waiter.run_id, ts=event.ts,
                    reason=f"cancelled by event {event.name} ({event.id})"))
            else:
                messages.append(EventMatched(run_id=waiter.run_id, step_id=waiter.step_id,
                                             event=event, ts=event.ts))
        else:
            remaining.append(waiter)
    return Match(messages, WaiterSet(waiters=remaining))
