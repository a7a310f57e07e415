"""The worker's Redis client: reconnects by itself after Redis restarts.

Redis holds the read model, flow-control counters and idempotency keys, never a run's
state, so an outage must cost a retry, not a crash: pooled connections are checked
before use when they have been idle (a restart leaves them closed by the server), and
commands that hit a dropped connection are retried a few times with a short backoff
before the caller's own handling (a 503, a projector that waits) takes over.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

STORE_ERRORS: tuple[type[BaseException], ...] = (aioredis.RedisError, OSError)
"""What a Redis call raises when Redis is down or restarting."""


def connect(url: str) -> aioredis.Redis:
    """A client for ``url`` that survives Redis restarts (see the module docstring)."""
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=2.0,
        health_check_interval=5,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=4),
        retry_on_error=[ConnectionError, TimeoutError, BusyLoadingError],
    )
