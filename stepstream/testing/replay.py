"""``replay``: would new code take the path a recorded run took? The check to run in CI
before deploying a change while runs are in flight (docs/production.md).

The recorded run's steps, in its order, are given back to the new code one by one: each
dispatch replays the handler with the memo of the steps before (as the engine did) and
the first step(s) the new code asks for must be the run's next ones (the steps of one
``asyncio.gather`` in any order). No step body runs. A memo entry that stands for "the
run went on from here" makes ``ctx.patched`` answer as it would for the run in flight
(False, unless the run recorded the patch).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from schemas.messages import (
    ErrorInfo,
    Event,
    FunctionFinished,
    HistoryRecord,
    MemoEntry,
    StepCompleted,
    StepFailed,
    StepRequest,
)
from stepstream.errors import ConfigError, NondeterminismError, ReplayMismatch
from stepstream.execution import execute
from stepstream.function import FunctionDef
from stepstream.patching import RESERVED_PREFIX, is_marker
from stepstream.replay import ReplayPaths
from stepstream.settings import Settings
from stepstream.testing.harness import function_of
from streams.timeline import apply_record

_LATER = RESERVED_PREFIX + "replay:later"
"""A memo entry no handler asks for: the recorded run has steps beyond this point."""

Entry = tuple[str, MemoEntry | None]
"""A recorded step and its saved result; None: the run still waits on it."""


async def replay(fn: Callable[..., Awaitable[Any]] | FunctionDef,
                 history: Mapping[str, Any] | Sequence[HistoryRecord]) -> None:
    """Check that ``fn`` (new code) takes the path of a recorded run.

    Args:
        fn: the handler as it will be deployed (or its ``FunctionDef``).
        history: the run: the JSON of ``GET /v1/runs/{id}`` (``stepstream runs show ID
            --json``), or its records from the history topic.

    Raises:
        ReplayMismatch: the new code asks for another step than the run took at some
            point (or ends before the run's last step); it names both steps.
        NondeterminismError: the handler does not even replay the same way twice.
    """
    function = function_of(fn)
    doc = dict(history) if isinstance(history, Mapping) else _fold(history)
    event, run_id = _event(doc), str(doc["run_id"])
    steps, markers = _recorded(doc)
    paths, limit = ReplayPaths(), Settings().max_payload_bytes
    done = 0
    while done < len(steps):
        memo = {**markers, **{s: e for s, e in steps[:done] if e is not None},
                _LATER: MemoEntry(output_json="null")}
        outcome = await execute(function, StepRequest(
            run_id=run_id, seq=done + 1, function_id=function.id, event=event, attempt=0,
            memo=memo), max_output_bytes=limit, paths=paths, stub=_no_body,
            send_events=_nowhere)
        asked = _asked(outcome, run_id, done, steps[done][0])
        window = steps[done:done + len(asked)]
        stray = next((i for i, (s, _) in enumerate(window) if s not in asked), None)
        if stray is not None:
            taken = {s for s, _ in window}
            raise ReplayMismatch(run_id, done + stray, window[stray][0],
                                 next(s for s in asked if s not in taken))
        if any(entry is None for _, entry in window):
            return  # the run waits there: the new code gets there too
        done += len(window)


def _asked(outcome: Any, run_id: str, position: int, recorded: str) -> list[str]:
    """The steps the new code asks for next."""
    if isinstance(outcome, StepCompleted | StepFailed):
        return [outcome.step_id]
    if isinstance(outcome, FunctionFinished):
        error = outcome.error
        if error is not None and error.type == NondeterminismError.__name__:
            raise NondeterminismError(error.message)
        detail = "it returns" if error is None else f"it raises {error.type}: {error.message}"
        raise ReplayMismatch(run_id, position, recorded, None, detail)
    return [planned.step_id for planned in outcome.steps]


def _fold(records: Sequence[HistoryRecord]) -> dict[str, Any]:
    """History records as the run document the API serves."""
    doc: dict[str, Any] | None = None
    for record in sorted(records, key=lambda r: r.seq):
        doc = apply_record(doc, record)
    if doc is None:
        raise ConfigError("replay needs at least the run's run.started record")
    return doc


def _event(doc: Mapping[str, Any]) -> Event:
    event = doc.get("event")
    if not event:
        raise ConfigError(f"run {doc.get('run_id')!r}: no triggering event in its history")
    return Event(id=event["id"], name=event["name"], data_json=json.dumps(event["data"]),
                 ts=event["ts"])


def _recorded(doc: Mapping[str, Any]) -> tuple[list[Entry], dict[str, MemoEntry]]:
    """The run's steps in its order, and its patch markers."""
    steps: list[Entry] = []
    markers: dict[str, MemoEntry] = {}
    for step in doc["steps"]:
        entry = None
        if step["status"] == "completed":
            entry = MemoEntry(output_json=json.dumps(step["output"]))
        elif step["status"] == "failed":
            entry = MemoEntry(error=ErrorInfo(**step["error"]))
        if is_marker(step["id"]):
            markers[step["id"]] = MemoEntry(output_json="true")
        else:
            steps.append((step["id"], entry))
    return steps, markers


def _no_body(_step_id: str, _attempt: int, _body: Callable[..., Any]) -> Callable[..., Any]:
    return lambda *_: None  # replay checks the path: no step runs


async def _nowhere(_events: list[Event]) -> None:
    """``send_event`` steps do not run on replay (their bodies are stubbed)."""
