"""A run's live events from its document (``streams.run_events``): ordered by history
position, resumed after a ``Last-Event-ID`` without gap or duplicate, progress only for
running steps, and the end last."""

from __future__ import annotations

from typing import Any

from schemas.messages import ErrorInfo, Event, HistoryRecord
from stepstream.sse import read_events
from streams.http_stream import sse
from streams.run_events import Cursor, ended_before
from tests.projection import project

BOOM = ErrorInfo(type="RuntimeError", message="boom", traceback="tb")


def record(seq: int, kind: str, **fields: Any) -> HistoryRecord:
    return HistoryRecord(run_id="r", seq=seq, ts=seq * 10, kind=kind, function_id="fn",
                         event=Event(id="e", name="x") if kind == "run.started" else None,
                         **fields)


HISTORY = [
    record(1, "run.started"),
    record(2, "step.failed", step_id="a", error=BOOM, started_at=1, ended_at=2,
           next_attempt_at=50),
    record(3, "step.completed", step_id="b", output_json='"B"', started_at=3, ended_at=4),
    record(4, "step.completed", step_id="a", attempt=1, output_json='"A"', started_at=5,
           ended_at=6),
    record(5, "run.completed", output_json='"done"'),
]


def kinds(events: list[Any]) -> list[tuple[str, str | None, str, int]]:
    return [(e.event, e.data.get("step_id"), e.data["status"], e.id) for e in events]


def test_outcomes_come_in_history_order_and_the_end_last() -> None:
    cursor = Cursor()
    events = cursor.advance(project(*HISTORY), {})
    # a's retry and b's completion interleave as they happened, not grouped by step
    assert kinds(events) == [("step", "a", "retrying", 2), ("step", "b", "completed", 3),
                             ("step", "a", "completed", 4), ("end", None, "completed", 5)]
    assert events[2].data["output"] == "A" and events[0].data["error"]["message"] == "boom"
    assert cursor.ended and cursor.advance(project(*HISTORY), {}) == []


def test_a_reconnect_resumes_after_its_last_event_id_whatever_was_written_meanwhile() -> None:
    for cut in range(1, len(HISTORY)):
        first = Cursor()
        seen = first.advance(project(*HISTORY[:cut]), {})
        again = Cursor(first.seq)
        rest = again.advance(project(*HISTORY), {})
        assert kinds(seen + rest) == kinds(Cursor().advance(project(*HISTORY), {}))
    assert ended_before(project(*HISTORY), 5) and not ended_before(project(*HISTORY), 4)


def test_progress_is_sent_when_it_changes_and_only_for_steps_still_running() -> None:
    doc = project(*HISTORY[:3])  # a retrying, b completed, c not reported yet
    cursor = Cursor()
    cursor.advance(doc, {})
    said = {"a": {"step_id": "a", "attempt": 1, "fraction": 0.3, "message": "", "ts": 100},
            "b": {"step_id": "b", "attempt": 0, "fraction": 0.9, "message": "", "ts": 100},
            "c": {"step_id": "c", "attempt": 0, "fraction": 0.1, "message": "hi", "ts": 90}}
    events = cursor.advance(doc, said)
    assert [(e.event, e.data["step_id"], e.id) for e in events] == [
        ("progress", "c", 3), ("progress", "a", 3)]
    assert cursor.advance(doc, said) == []  # nothing new
    said["c"] = {**said["c"], "fraction": 0.2, "ts": 120}
    assert [e.data["fraction"] for e in cursor.advance(doc, said)] == [0.2]
    assert [e.event for e in cursor.advance(project(*HISTORY), said)] == ["step", "end"]


def test_events_read_back_as_sent() -> None:
    events = Cursor().advance(project(*HISTORY), {})
    lines = b"".join([b": keep-alive\n\n", *map(sse, events)]).splitlines(keepends=True)
    assert [(e.event, e.data, e.id) for e in read_events(lines)] == [
        (e.event, e.data, str(e.id)) for e in events]
