"""A run's live events, derived from its read-model document (pure; no I/O).

The stream of ``GET /v1/runs/{id}/stream`` (``streams.http_stream``) reads the run's
document each time the run changes and sends what a ``Cursor`` has not sent yet:

- ``step``: each outcome of a step (completed, failed or retrying, sleeping, waiting,
  invoking), in the order of the run's history;
- ``progress``: what a running step last said (``ctx.progress``), when it changed;
- ``end``: the run's final status, output and error; the stream ends with it.

Every event's id is the run's history position (``seq``) the client has everything up
to. History records of a run carry strictly increasing ``seq`` values and the projector
applies them in order, so a client that comes back with ``Last-Event-ID: N`` gets
exactly the outcomes after ``N``: no gap, no duplicate. Progress is not history: it
carries the id of the history sent before it, and a client that comes back gets each
running step's last value again. It reaches Redis at once while outcomes go through the
history topic, so a step's first progress can come before the outcome of the step that
ran before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streams.timeline import FINAL, summary

DONE_STEP = frozenset({"completed", "failed"})
"""Step statuses after which progress means nothing any more."""


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """One server-sent event."""

    event: str
    data: dict[str, Any]
    id: int


def end_seq(doc: dict[str, Any]) -> int:
    """The history position of the run's end (documents older than ``end_seq`` have
    none: their last position)."""
    seq = doc.get("end_seq")
    return int(doc["seq"] if seq is None else seq)


def ended_before(doc: dict[str, Any], seq: int) -> bool:
    """Whether a client that has everything up to ``seq`` has the run's end already."""
    return doc["status"] in FINAL and end_seq(doc) <= seq


def _status(entry: dict[str, Any]) -> str:
    if entry["outcome"] == "failed":
        return "retrying" if entry["next_attempt_at"] is not None else "failed"
    return str(entry["outcome"])


def _step_event(doc: dict[str, Any], step: dict[str, Any], entry: dict[str, Any]
                ) -> dict[str, Any]:
    return {"run_id": doc["run_id"], "step_id": step["id"], "seq": entry.get("seq", 0),
            "status": _status(entry), "attempt": entry["attempt"], "replay": entry["replay"],
            "ts": entry["ts"], "started_at": entry["started_at"], "ended_at": entry["ended_at"],
            "duration_ms": entry["duration_ms"], "error": entry["error"],
            "next_attempt_at": entry["next_attempt_at"],
            "output": step["output"] if entry["outcome"] == "completed" else None}


@dataclass
class Cursor:
    """What one stream has sent of one run.

    Args:
        seq: the history position sent up to (the client's ``Last-Event-ID``; 0: none).
    """

    seq: int = 0
    progress: dict[str, int] = field(default_factory=dict)
    """Step id ("" for the run's own) -> ``ts`` of the progress sent last."""
    ended: bool = False

    def opening(self, doc: dict[str, Any]) -> LiveEvent:
        """The first event of a connection: the run as it stands (no history in it)."""
        return LiveEvent("run", {**summary(doc), "seq": doc["seq"]}, self.seq)

    def advance(self, doc: dict[str, Any], progress: dict[str, dict[str, Any]]
                ) -> list[LiveEvent]:
        """The events of ``doc`` (and of the steps' ``progress``) not sent yet, in order;
        ``ended`` once the run's end is among them (or was sent before)."""
        if self.ended:
            return []
        entries = sorted(((entry.get("seq", 0), step, entry) for step in doc["steps"]
                          for entry in step["history"] if entry.get("seq", 0) > self.seq),
                         key=lambda found: found[0])
        events = []
        final = doc["status"] in FINAL
        for seq, step, entry in entries:
            if final and seq > end_seq(doc):
                break  # written after the end (a replay under way): a later stream's
            self.seq = max(self.seq, seq)
            events.append(LiveEvent("step", _step_event(doc, step, entry), self.seq))
        if final:
            self.ended = True
            if end_seq(doc) > self.seq:
                self.seq = end_seq(doc)
                events.append(LiveEvent("end", {
                    "run_id": doc["run_id"], "status": doc["status"], "output": doc["output"],
                    "error": doc["error"], "ended_at": doc["ended_at"],
                    "duration_ms": doc["duration_ms"], "seq": self.seq}, self.seq))
            return events
        statuses = {step["id"]: step["status"] for step in doc["steps"]}
        for step_id, said in sorted(progress.items(), key=lambda item: item[1]["ts"]):
            if statuses.get(step_id) in DONE_STEP or said["ts"] <= self.progress.get(
                    step_id, -1):
                continue
            self.progress[step_id] = said["ts"]
            events.append(LiveEvent("progress", {"run_id": doc["run_id"], **said}, self.seq))
        return events
