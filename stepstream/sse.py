"""Reading a text/event-stream (Server-Sent Events), as ``GET /v1/runs/{id}/stream``
writes it: ``event``, ``data`` (JSON here) and ``id`` fields, comment lines skipped."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """One event of the stream."""

    event: str
    data: Any
    """Its ``data`` lines, decoded as JSON."""
    id: str | None
    """The last ``id`` the stream gave, as the client's ``Last-Event-ID`` would be."""


def read_events(lines: Iterable[bytes]) -> Iterator[ServerEvent]:
    """The events of a stream's ``lines`` (as a file object of the response yields them),
    each once its blank line has come."""
    event, last_id = "message", None
    data: list[str] = []
    for raw in lines:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield ServerEvent(event, json.loads("\n".join(data)), last_id)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue  # a comment: heartbeats
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            last_id = value
