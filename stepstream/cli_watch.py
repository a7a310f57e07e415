"""``stepstream runs watch RUN_ID``: a run's steps and progress as they happen.

Follows the worker's live stream (``GET /v1/runs/{id}/stream``) and prints a line per
event; when the stream breaks (a worker restarts, the network), it connects again with
the last event's id, so no step is printed twice or left out. Exits with the run's
status: 0 completed, 1 failed, 3 cancelled (2 stays the CLI's usage error).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from stepstream.api import ApiClient
from stepstream.errors import ApiError
from stepstream.sse import ServerEvent

EXIT_CODES = {"completed": 0, "failed": 1, "cancelled": 3}
RECONNECT_S = (0.5, 10.0)
"""First and longest wait before connecting again after the stream broke."""
GIVE_UP_AFTER = 8
"""Failed connections in a row before giving up (about a minute of backoff)."""


def follow(client: ApiClient, run_id: str, *, as_json: bool = False) -> int:
    """Print the run's events until its end; returns the exit code of its status.

    Raises:
        ApiError: no such run, a refused request, or no worker answered for
            ``GIVE_UP_AFTER`` tries in a row.
    """
    last, failures = 0, 0
    while True:
        try:
            for event in client.stream_run(run_id, last):
                failures = 0
                last = int(event.id) if event.id else last
                print(json.dumps({"event": event.event, "id": last, "data": event.data})
                      if as_json else line(event), flush=True)
                if event.event == "end":
                    return EXIT_CODES.get(event.data["status"], 1)
        except (ApiError, OSError) as exc:
            retriable = not isinstance(exc, ApiError) or exc.status in (0, 503)
            failures += 1
            if not retriable or failures >= GIVE_UP_AFTER:
                raise
        else:  # closed without the end: a worker shutting down, or the end was had
            run = client.get_run(run_id)
            if run["status"] in EXIT_CODES and (run.get("end_seq") or run["seq"]) <= last:
                return EXIT_CODES[run["status"]]
            failures += 1
        time.sleep(min(RECONNECT_S[0] * 2 ** max(0, failures - 1), RECONNECT_S[1]))


def _clock(ms: int | None) -> str:
    if ms is None:
        return "--:--:--.---"
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone().strftime("%H:%M:%S.%f")[:-3]


def _short(value: Any, width: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[:width - 1] + "…"


def line(event: ServerEvent) -> str:
    """One event as a line of text."""
    data = event.data
    if event.event == "run":
        return (f"run {data['run_id']} of {data['function_id']}: {data['status']}, "
                f"{data['steps']} steps so far")
    if event.event == "step":
        attempt = f" (attempt {data['attempt'] + 1})" if data["attempt"] else ""
        took = "" if data["duration_ms"] is None else f" in {data['duration_ms']} ms"
        detail = ""
        if data["error"] is not None:
            detail = f": {data['error']['type']}: {data['error']['message']}"
        elif data["status"] == "completed":
            detail = f" → {_short(data['output'])}"
        return f"{_clock(data['ts'])}  {data['step_id']}  {data['status']}{attempt}{took}{detail}"
    if event.event == "progress":
        where = data["step_id"] or "(run)"
        message = f"  {data['message']}" if data["message"] else ""
        return f"{_clock(data['ts'])}  {where}  {data['fraction'] * 100:.0f}%{message}"
    if event.event == "end":
        error = data["error"]
        detail = f": {error['type']}: {error['message']}" if error else (
            f" → {_short(data['output'])}" if data["status"] == "completed" else "")
        return f"{_clock(data['ended_at'])}  run {data['status']}{detail}"
    return f"{event.event}: {_short(data)}"
