"""The dashboard's login with a token set: the token buys a session cookie (never the token
itself) that opens the dashboard and the API until it expires or the browser logs out."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import ClientResponse

from streams.http_session import COOKIE, Sessions
from tests.http_fakes import own_origin, serving

TOKEN = "s3cret-token"
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


def session_cookie(reply: ClientResponse) -> Any:
    """The Set-Cookie of the session, as a Morsel."""
    assert COOKIE in reply.cookies, reply.headers.getall("Set-Cookie", [])
    return reply.cookies[COOKIE]


async def test_a_browser_without_a_session_is_sent_to_the_login_form() -> None:
    async with serving(token=TOKEN) as (client, _):
        for path in ("/", "/dashboard"):
            reply = await client.get(path, headers=HTML, allow_redirects=False)
            assert (reply.status, reply.headers["Location"]) == (303, "/login")
        page = await client.get("/login")
        assert page.status == 200 and 'id="login"' in await page.text()
        for public in ("/dashboard/login.js", "/dashboard/app.css"):
            assert (await client.get(public)).status == 200
        assert (await client.get("/dashboard/app.js")).status == 401


async def test_a_wrong_or_missing_token_buys_nothing() -> None:
    async with serving(token=TOKEN) as (client, _):
        for body, status in [({"token": "nope"}, 403), ({"token": TOKEN[:-1]}, 403),
                             ({"token": ""}, 400), ({}, 400), ({"token": 7}, 400)]:
            reply = await client.post("/login", json=body)
            assert (body, reply.status) == (body, status)
            assert COOKIE not in reply.cookies
        assert (await client.get("/v1/runs/r1")).status == 401


async def test_the_login_form_posts_json_from_this_origin_only() -> None:
    async with serving(token=TOKEN) as (client, _):
        form = await client.post("/login", data={"token": TOKEN})
        elsewhere = await client.post("/login", json={"token": TOKEN},
                                      headers={"Origin": "http://evil.example"})
        assert (form.status, elsewhere.status) == (415, 403)
        assert COOKIE not in form.cookies and COOKIE not in elsewhere.cookies


async def test_the_right_token_buys_a_session_that_opens_the_dashboard_and_the_api() -> None:
    async with serving(token=TOKEN, session_s=3600) as (client, sent):
        before = time.time()
        reply = await client.post("/login", json={"token": TOKEN},
                                  headers={"Origin": own_origin(client)})
        assert reply.status == 200
        cookie = session_cookie(reply)
        assert TOKEN not in cookie.value
        assert (cookie["httponly"], cookie["samesite"], cookie["path"]) == (True, "Strict", "/")
        assert cookie["max-age"] == "3600" and not cookie["secure"]
        assert before + 3600 - 1 <= (await reply.json())["expires_at"] / 1000 <= time.time() + 3600

        page = await client.get("/", headers=HTML, allow_redirects=False)
        assert page.status == 200 and "app.js" in await page.text()
        assert (await client.get("/dashboard/app.js")).status == 200
        assert (await client.get("/v1/runs/r1")).status == 200
        cancel = await client.post("/v1/runs/r1/cancel", json={})
        assert cancel.status == 202 and len(sent) == 1
        session = await (await client.get("/v1/session")).json()
        assert session["auth"] is True and session["via"] == "cookie"


async def test_over_https_the_cookie_is_secure() -> None:
    async with serving(token=TOKEN) as (client, _):
        reply = await client.post("/login", json={"token": TOKEN},
                                  headers={"X-Forwarded-Proto": "https"})
        assert session_cookie(reply)["secure"] is True


async def test_logout_ends_the_session() -> None:
    async with serving(token=TOKEN) as (client, _):
        assert (await client.post("/login", json={"token": TOKEN})).status == 200
        assert (await client.get("/v1/runs/r1")).status == 200

        out = await client.post("/logout", json={})
        assert out.status == 200
        cleared = session_cookie(out)
        assert cleared.value == "" and cleared["max-age"] == "0"
        assert (await client.get("/v1/runs/r1")).status == 401
        page = await client.get("/", headers=HTML, allow_redirects=False)
        assert (page.status, page.headers["Location"]) == (303, "/login")


async def test_forged_expired_and_other_tokens_cookies_are_refused() -> None:
    now = time.time()
    forged = f"{int(now) + 3600}.{'A' * 43}"
    expired = Sessions(TOKEN, 60).issue(now_s=now - 120)[0]
    other = Sessions("another-token", 60).issue()[0]
    async with serving(token=TOKEN) as (client, _):
        for value in (forged, expired, other, TOKEN, "garbage"):
            client.session.cookie_jar.update_cookies({COOKIE: value})
            reply = await client.get("/v1/runs/r1")
            assert (value, reply.status) == (value, 401)
            assert "log in again" in (await reply.json())["error"]


async def test_the_bearer_header_still_works_and_wins_over_a_cookie() -> None:
    async with serving(token=TOKEN) as (client, _):
        await client.post("/login", json={"token": TOKEN})
        wrong = await client.get("/v1/runs/r1", headers={"Authorization": "Bearer nope"})
        bearer = await client.get("/v1/session", headers={"Authorization": f"Bearer {TOKEN}"})
        assert wrong.status == 403
        assert (await bearer.json())["via"] == "bearer"


def test_every_worker_with_the_token_accepts_the_session() -> None:
    value, expires = Sessions(TOKEN, 60).issue()
    assert Sessions(TOKEN, 60).expiry(value) == expires
    assert Sessions("another-token", 60).expiry(value) is None


async def test_without_a_token_there_is_nothing_to_log_in_to() -> None:
    async with serving() as (client, _):
        login = await client.post("/login", json={"token": TOKEN})
        form = await client.get("/login", allow_redirects=False)
        session = await (await client.get("/v1/session")).json()
        assert login.status == 409
        assert (form.status, form.headers["Location"]) == (303, "/")
        assert session == {"auth": False, "via": None, "expires_at": None}
