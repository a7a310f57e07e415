"""Token authentication for the worker's HTTP API.

With ``STEPSTREAM_HTTP_TOKEN`` set, every route but the probes and the metrics
(``/healthz``, ``/readyz``, ``/metrics``: what orchestrators and Prometheus
reach without credentials) and the login page needs ``Authorization: Bearer <token>``
(401 without one, 403 with a wrong one) or the session cookie a browser gets for the
token at ``/login`` (``streams.http_session``). Sending events, cancelling and
replaying runs, and reading run histories (which hold event data and step outputs) are
never open while a token is set. A browser opening the dashboard without a session is
sent to the login page.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from streams.http_guard import PROBE_PATHS, Handler, Middleware, is_loopback
from streams.http_session import COOKIE, Sessions

__all__ = ["PUBLIC_PATHS", "Handler", "Middleware", "exposure_warning", "is_loopback",
           "token_auth"]

LOGIN_PATHS = frozenset({"/login", "/logout", "/dashboard/login.js", "/dashboard/app.css"})
"""What the login page needs: the page, its script and style, and the routes it calls."""
PUBLIC_PATHS = PROBE_PATHS | LOGIN_PATHS
"""Paths served without a token."""
DASHBOARD_PAGES = frozenset({"/", "/dashboard"})


def _problem(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def token_auth(token: str, sessions: Sessions) -> Middleware:
    """An aiohttp middleware that requires ``token`` or a session of ``sessions``; lets
    everything through when ``token`` is empty."""
    expected = token.encode()

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not expected or request.path in PUBLIC_PATHS:
            return await handler(request)
        header = request.headers.get("Authorization")
        if header is not None:  # scripts and the CLI; a header wins over a cookie
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not given.strip():
                return _unauthorized("this API needs 'Authorization: Bearer <token>'")
            # Constant time: the comparison must not tell how many leading bytes matched.
            if not hmac.compare_digest(given.strip().encode(), expected):
                return _problem(403, "wrong token")
            return await handler(request)
        cookie = request.cookies.get(COOKIE)
        if cookie and sessions.expiry(cookie) is not None:
            return await handler(request)
        if request.method == "GET" and request.path in DASHBOARD_PAGES and \
                "text/html" in request.headers.get("Accept", ""):
            raise web.HTTPSeeOther("/login")  # a browser: the fragment (#/run/...) stays
        if cookie:
            return _unauthorized("the dashboard session has ended: log in again at /login")
        return _unauthorized("this API needs 'Authorization: Bearer <token>' (or a "
                             "dashboard login at /login)")

    return authenticate


def _unauthorized(message: str) -> web.Response:
    return _problem(401, message, **{"WWW-Authenticate": 'Bearer realm="stepstream"'})


def exposure_warning(host: str, token: str) -> str | None:
    """What to warn about when the API is reachable from other hosts without a token."""
    if token or is_loopback(host):
        return None
    return (f"STEPSTREAM_HTTP_HOST={host} exposes the HTTP API beyond this machine WITHOUT "
            "authentication: anyone who reaches it can send events, read run histories and "
            "cancel or replay runs. Set STEPSTREAM_HTTP_TOKEN, or bind 127.0.0.1.")
