"""Keyset pagination over a Redis sorted set, newest (highest score) first.

A cursor names the last item of a page (its score and member), so the next page
starts right after it however many items were added at the top meanwhile: an
offset would shift and repeat items. Equal scores are ordered by member, as
Redis orders them.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

MAX_LIMIT = 500


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list, and the cursor of the next one (None: this is the last)."""

    items: list[Any]
    next_cursor: str | None


def encode_cursor(score: float, member: str) -> str:
    """An opaque cursor for the item after (``score``, ``member``)."""
    raw = json.dumps([score, member], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The (score, member) a cursor names.

    Raises:
        ValueError: not a cursor this module made.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        score, member = json.loads(raw)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise ValueError(f"bad cursor {cursor!r}") from None
    if not isinstance(score, int | float) or not isinstance(member, str):
        raise ValueError(f"bad cursor {cursor!r}")
    return float(score), member


async def page(client: aioredis.Redis, key: str, *, since: int | None = None,
               until: int | None = None, limit: int = 50, cursor: str | None = None) -> Page:
    """Members of ``key`` with ``since <= score <= until``, highest first.

    Raises:
        ValueError: a bad cursor, or a limit out of 1..MAX_LIMIT.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1..{MAX_LIMIT}")
    after = decode_cursor(cursor) if cursor else None
    high: float | str = "+inf" if until is None else until
    if after is not None:
        high = after[0] if high == "+inf" else min(float(high), after[0])
    low: float | str = "-inf" if since is None else since
    want, offset = limit + 1, 0
    found: list[tuple[str, float]] = []
    while len(found) < want:
        batch: list[Any] = await client.zrange(key, high, low, byscore=True, desc=True,
                                               offset=offset, num=want, withscores=True)
        offset += len(batch)
        for raw, score in batch:
            member = raw.decode() if isinstance(raw, bytes) else raw
            # Equal scores come in descending member order: skip up to the cursor's item.
            if after is not None and score == after[0] and member >= after[1]:
                continue
            found.append((member, score))
            if len(found) == want:
                break
        if len(batch) < want:
            break
    more = len(found) > limit
    found = found[:limit]
    next_cursor = encode_cursor(found[-1][1], found[-1][0]) if more and found else None
    return Page([member for member, _ in found], next_cursor)
