"""Bearer-token authentication for the worker's HTTP API.

With ``STEPSTREAM_HTTP_TOKEN`` set, every route but the probes and the metrics
(``/healthz``, ``/readyz``, ``/metrics``: what orchestrators and Prometheus
reach without credentials) needs ``Authorization: Bearer <token>``: 401 without
one, 403 with a wrong one. Sending events, cancelling and replaying runs, and
reading run histories (which hold event data and step outputs) are never open
while a token is set.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import typedefs, web

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Paths served without a token: liveness, readiness and Prometheus scrapes."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = typedefs.Middleware


def _problem(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def bearer_auth(token: str) -> Middleware:
    """An aiohttp middleware that requires ``token``; lets everything through when empty."""
    expected = token.encode()

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not expected or request.path in PUBLIC_PATHS:
            return await handler(request)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return _problem(401, "this API needs 'Authorization: Bearer <token>'",
                            **{"WWW-Authenticate": 'Bearer realm="stepstream"'})
        # Constant time: the comparison must not tell how many leading bytes matched.
        if not hmac.compare_digest(given.strip().encode(), expected):
            return _problem(403, "wrong token")
        return await handler(request)

    return authenticate


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the API on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def exposure_warning(host: str, token: str) -> str | None:
    """What to warn about when the API is reachable from other hosts without a token."""
    if token or is_loopback(host):
        return None
    return (f"STEPSTREAM_HTTP_HOST={host} exposes the HTTP API beyond this machine WITHOUT "
            "authentication: anyone who reaches it can send events, read run histories and "
            "cancel or replay runs. Set STEPSTREAM_HTTP_TOKEN, or bind 127.0.0.1.")
