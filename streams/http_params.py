"""Checking what API clients send: query filters and JSON bodies, with 4xx answers that say
what is wrong.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from streams.paging import MAX_LIMIT
from streams.timeline import STATUSES


def problem(status: int, message: str) -> web.Response:
    """An error answer: ``{"error": message}``."""
    return web.json_response({"error": message}, status=status)


class BadInput(Exception):
    """What a client sent cannot be used; ``status`` is the 4xx to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def parse_time(name: str, text: str) -> int:
    """Epoch milliseconds from ``text``: an integer (ms) or an ISO 8601 date-time (UTC
    unless it says otherwise)."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"{name}={text!r}: expected epoch milliseconds or an ISO 8601 "
                       "date-time such as 2026-01-31T12:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def time_range(query: Any) -> tuple[int | None, int | None]:
    """``since`` and ``until`` from a query string."""
    since = parse_time("since", query["since"]) if query.get("since") else None
    until = parse_time("until", query["until"]) if query.get("until") else None
    if since is not None and until is not None and since > until:
        raise BadInput("since must not be after until")
    return since, until


def status_filter(query: Any, allowed: tuple[str, ...] = STATUSES) -> str | None:
    """``status`` from a query string (or body), checked."""
    status = query.get("status") or None
    if status is not None and status not in allowed:
        raise BadInput(f"status={status!r}: expected one of {', '.join(allowed)}")
    return status


def limit_of(query: Any, default: int = 50, maximum: int = MAX_LIMIT) -> int:
    """``limit`` from a query string (or body), 1..maximum."""
    raw = query.get("limit")
    if raw is None or raw == "":
        return default
    try:
        limit = int(raw)
    except (TypeError, ValueError):
        raise BadInput(f"limit={raw!r}: expected an integer 1..{maximum}") from None
    if not 1 <= limit <= maximum:
        raise BadInput(f"limit={limit}: expected 1..{maximum}")
    return limit


async def json_body(request: web.Request, *, required: bool = True) -> dict[str, Any]:
    """The request's JSON object; an empty body is ``{}`` unless ``required``."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BadInput(f"body over {request.client_max_size} bytes", status=413) from None
    if not raw.strip():
        if required:
            raise BadInput("body must be a JSON object")
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadInput("body must be a JSON object")
    return body


def optional_str(body: dict[str, Any], name: str) -> str | None:
    """A string field of a body that may be absent."""
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise BadInput(f'"{name}" must be a string')
    return value
