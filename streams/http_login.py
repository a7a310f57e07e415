"""The dashboard's login: ``GET /login`` (the form), ``POST /login`` (the token for a
session cookie), ``POST /logout`` and ``GET /v1/session`` (how this request is signed in).

The form posts JSON from script, like every state-changing request
(``streams.http_guard``), so a page elsewhere cannot log a browser in or out either.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from streams import http_static
from streams.http_params import BadInput, json_body, problem
from streams.http_session import COOKIE, Sessions, clear_cookie, set_cookie


class Login:
    """The login routes for ``token`` (empty: nothing to log in to)."""

    def __init__(self, token: str, sessions: Sessions) -> None:
        self.token, self.sessions = token, sessions

    def routes(self) -> list[web.RouteDef]:
        """The routes, for ``web.Application.add_routes``."""
        return [
            web.get("/login", self.page),
            web.post("/login", self.login),
            web.post("/logout", self.logout),
            web.get("/v1/session", self.session),
        ]

    async def page(self, request: web.Request) -> web.StreamResponse:
        if not self.token:
            raise web.HTTPSeeOther("/")
        return await http_static.login_page(request)

    async def login(self, request: web.Request) -> web.StreamResponse:
        if not self.token:
            return problem(409, "this worker has no STEPSTREAM_HTTP_TOKEN: nothing to log in to")
        try:
            body = await json_body(request)
        except BadInput as exc:
            return problem(exc.status, str(exc))
        given = body.get("token")
        if not isinstance(given, str) or not given:
            return problem(400, 'body must be an object with a string "token"')
        # Constant time: the comparison must not tell how many leading bytes matched.
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return problem(403, "wrong token")
        value, expires = self.sessions.issue()
        response = web.json_response({"expires_at": expires * 1000})
        set_cookie(response, request, value, self.sessions.ttl_s)
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        response = web.json_response({"logged_out": True})
        clear_cookie(response, request)
        return response

    async def session(self, request: web.Request) -> web.StreamResponse:
        # With a token, only a request that passed ``streams.http_auth`` gets here.
        via, expires = None, None
        if self.token and "Authorization" in request.headers:
            via = "bearer"  # the header wins over a cookie there too
        elif self.token and (expires := self.sessions.expiry(
                request.cookies.get(COOKIE, ""))) is not None:
            via = "cookie"
        return web.json_response({"auth": bool(self.token), "via": via,
                                  "expires_at": None if expires is None else expires * 1000})
