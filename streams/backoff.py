"""Wait out an outage of a service that is not the source of truth (Redis).

An agent that raised would stop consuming (or take the worker down), and one that
skipped would lose the record for good. So an agent whose side effect goes to such a
service retries the same record, with exponential backoff, until the service is
back; its partition stays where it is meanwhile, and nothing is skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger("stepstream.backoff")


async def until_done(call: Callable[[], Awaitable[T]], *, what: str,
                     errors: tuple[type[BaseException], ...], initial: float = 0.1,
                     maximum: float = 5.0) -> T:
    """``await call()`` until it does not raise one of ``errors``; returns its result.

    Logs the first failure and the recovery, not every attempt.
    """
    delay, failures = initial, 0
    while True:
        try:
            result = await call()
        except errors as exc:
            if failures == 0:
                log.warning("%s waits: %s (retrying with backoff)", what, exc)
            failures += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, maximum)
            continue
        if failures:
            log.warning("%s goes on after %d failed attempts", what, failures)
        return result
