"""Dashboard sessions: the cookie a browser gets for the token at ``POST /login``.

The cookie holds its expiry and an HMAC of it, never the token: ``<expires>.<mac>``.
The HMAC key is derived from the token (PBKDF2, so a copied cookie is no shortcut to
guessing the token): every worker with the same token accepts the others' sessions
behind a load balancer, and changing the token ends every session at once. Logging out
clears the browser's cookie; a copy of it stays valid until it expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

from aiohttp import web

from streams.http_guard import request_scheme

COOKIE = "stepstream_session"
_SALT = b"stepstream dashboard session v1"
_ROUNDS = 100_000
_VALUE = re.compile(r"([0-9]{1,12})\.([A-Za-z0-9_-]{43})")


class Sessions:
    """Issues and checks session cookie values for one token.

    Args:
        token: the API token (``STEPSTREAM_HTTP_TOKEN``); empty: no sessions.
        ttl_s: how long a session lasts (``Settings.http_session_s``).
    """

    def __init__(self, token: str, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._key = hashlib.pbkdf2_hmac("sha256", token.encode(), _SALT, _ROUNDS) \
            if token else b""

    def issue(self, now_s: float | None = None) -> tuple[str, int]:
        """A new cookie value and when it expires (epoch seconds)."""
        expires = int((time.time() if now_s is None else now_s) + self.ttl_s)
        return f"{expires}.{self._mac(expires)}", expires

    def expiry(self, value: str, now_s: float | None = None) -> int | None:
        """When the session of a cookie value ends (epoch seconds); None when the value
        is not one this token issued, or its session has ended."""
        match = _VALUE.fullmatch(value)
        if not self._key or match is None:
            return None
        expires = int(match[1])
        if not hmac.compare_digest(match[2], self._mac(expires)):
            return None
        return expires if expires > (time.time() if now_s is None else now_s) else None

    def _mac(self, expires: int) -> str:
        digest = hmac.new(self._key, f"session:{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def set_cookie(response: web.StreamResponse, request: web.Request, value: str,
               max_age_s: float) -> None:
    """Put a session cookie on ``response``: out of reach of scripts (HttpOnly), never sent
    with a request another site starts (SameSite=Strict), over https only when the
    browser came over https."""
    response.set_cookie(COOKIE, value, max_age=int(max_age_s), path="/", httponly=True,
                        samesite="Strict", secure=request_scheme(request) == "https")


def clear_cookie(response: web.StreamResponse, request: web.Request) -> None:
    """Have the browser drop its session cookie."""
    response.del_cookie(COOKIE, path="/", httponly=True, samesite="Strict",
                        secure=request_scheme(request) == "https")
