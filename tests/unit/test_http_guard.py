"""The browser rules of the HTTP API (``streams.http_guard``): what a web page in the
operator's browser can send a worker (a cross-site form, a text/plain ``fetch``, a page on
a rebound name) is refused before any route runs, and nothing is sent to Kafka."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stepstream.api import ApiClient
from streams.http_guard import HostRule, host_name, same_origin
from tests.http_fakes import own_origin, serving

EVENT = b'{"name": "x", "data": {}}'
POSTS = [("/v1/events", EVENT), ("/v1/runs/r1/cancel", b"{}"), ("/v1/runs/r1/replay", b"{}"),
         ("/v1/functions/fn/replay", b"{}"), ("/v1/dlq/r1/replay", b"")]


@pytest.mark.parametrize("path, body", POSTS)
@pytest.mark.parametrize("content_type", [
    None, "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", "application/jsonp"])
async def test_a_post_that_is_not_json_is_refused(path: str, body: bytes,
                                                  content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    async with serving() as (client, sent):
        reply = await client.post(path, data=body, headers=headers,
                                  skip_auto_headers=["Content-Type"])
        assert reply.status == 415
        assert "Content-Type: application/json" in (await reply.json())["error"]
        assert sent == []


@pytest.mark.parametrize("content_type", ["application/json",
                                          "application/json; charset=utf-8"])
async def test_json_passes_with_or_without_parameters(content_type: str) -> None:
    async with serving() as (client, sent):
        reply = await client.post("/v1/events", data=EVENT,
                                  headers={"Content-Type": content_type})
        assert reply.status == 202
        assert sent == [("event", "x")]


@pytest.mark.parametrize("path, body", POSTS)
@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1",
                                    "https://127.0.0.1"])
async def test_a_cross_origin_post_is_refused(path: str, body: bytes, origin: str) -> None:
    async with serving() as (client, sent):
        reply = await client.post(path, data=body, headers={
            "Content-Type": "application/json", "Origin": origin})
        assert reply.status == 403
        assert "cross-origin request refused" in (await reply.json())["error"]
        assert sent == []


async def test_a_same_origin_post_passes() -> None:
    async with serving() as (client, sent):
        reply = await client.post("/v1/runs/r1/cancel", json={},
                                  headers={"Origin": own_origin(client)})
        assert reply.status == 202
        assert [type(m).__name__ for m in sent] == ["CancelRequested"]


async def test_behind_a_tls_proxy_the_origin_is_https() -> None:
    async with serving() as (client, _):
        origin = own_origin(client).replace("http://", "https://")
        plain = await client.post("/v1/events", data=EVENT, headers={
            "Content-Type": "application/json", "Origin": origin})
        forwarded = await client.post("/v1/events", data=EVENT, headers={
            "Content-Type": "application/json", "Origin": origin,
            "X-Forwarded-Proto": "https"})
        assert (plain.status, forwarded.status) == (403, 202)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8288", "127.0.0.1.nip.io",
                                  "10.0.0.5:8288", "localhost.evil.example"])
@pytest.mark.parametrize("method, path", [("GET", "/v1/runs/r1"), ("POST", "/v1/events"),
                                          ("GET", "/"), ("GET", "/openapi.json")])
async def test_a_host_a_loopback_worker_does_not_serve_is_refused(
        host: str, method: str, path: str) -> None:
    async with serving() as (client, sent):
        reply = await client.request(method, path, data=EVENT, headers={
            "Host": host, "Content-Type": "application/json"})
        assert reply.status == 421
        error = (await reply.json())["error"]
        assert "STEPSTREAM_HTTP_ALLOWED_HOSTS" in error and "DNS rebinding" in error
        assert sent == []


@pytest.mark.parametrize("host", ["localhost", "localhost:8288", "127.0.0.1:8288",
                                  "[::1]:8288", "LOCALHOST."])
async def test_loopback_names_are_served(host: str) -> None:
    async with serving() as (client, _):
        assert (await client.get("/v1/runs/r1", headers={"Host": host})).status == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_probes_and_metrics_answer_any_host(path: str) -> None:
    async with serving() as (client, _):
        reply = await client.get(path, headers={"Host": "stepstream.monitoring.svc:8288"})
        assert reply.status == 200


async def test_the_allow_list_opens_its_names() -> None:
    async with serving(allowed_hosts="stepstream.example.com, .corp.example") as (client, _):
        for host, status in [("stepstream.example.com", 200), ("ops.corp.example:443", 200),
                             ("corp.example", 200), ("localhost", 200),
                             ("evil.example", 421), ("xcorp.example", 421)]:
            reply = await client.get("/v1/runs/r1", headers={"Host": host})
            assert (host, reply.status) == (host, status)


async def test_with_a_token_any_host_reaches_the_token_check() -> None:
    async with serving(token="t0ken", bind_host="0.0.0.0") as (client, _):
        reply = await client.get("/v1/runs/r1", headers={"Host": "stepstream.example.com"})
        assert reply.status == 401


@pytest.mark.parametrize("setting, bind, token, allowed, refused", [
    ("", "127.0.0.1", "", ["localhost", "127.0.0.1", "::1", "127.0.0.2"],
     ["evil.example", "10.0.0.5", "0.0.0.0"]),
    ("", "0.0.0.0", "", ["localhost", "10.0.0.5", "fd00::5"], ["worker.internal"]),
    ("", "worker.internal", "", ["worker.internal", "10.0.0.5"], ["evil.example"]),
    ("", "0.0.0.0", "t", ["evil.example", "10.0.0.5"], []),
    ("", "127.0.0.1", "t", ["evil.example"], []),
    ("*", "127.0.0.1", "", ["evil.example", "10.0.0.5"], []),
    ("a.example,.b.example", "0.0.0.0", "t", ["a.example", "x.b.example", "localhost"],
     ["evil.example", "10.0.0.5", "x.a.example"]),
])
def test_host_rule(setting: str, bind: str, token: str, allowed: list[str],
                   refused: list[str]) -> None:
    rule = HostRule.of(setting, bind_host=bind, token=token)
    assert [h for h in allowed + refused if rule.allows(h)] == allowed


@pytest.mark.parametrize("header, name", [
    ("Example.COM:8288", "example.com"), ("[::1]:8288", "::1"), ("localhost.", "localhost"),
    ("", None), ("bad host", None)])
def test_host_name(header: str, name: Any) -> None:
    assert host_name(header) == name


@pytest.mark.parametrize("origin, scheme, host, same", [
    ("http://127.0.0.1:8288", "http", "127.0.0.1:8288", True),
    ("http://localhost", "http", "localhost:80", True),
    ("https://Ops.Example", "https", "ops.example", True),
    ("https://ops.example", "http", "ops.example", False),
    ("http://ops.example:8080", "http", "ops.example", False),
    ("null", "http", "ops.example", False),
    ("http://ops.example/path", "http", "ops.example", False),
])
def test_same_origin(origin: str, scheme: str, host: str, same: bool) -> None:
    assert same_origin(origin, scheme, host) is same


@pytest.mark.parametrize("call", [
    lambda api: api.call("POST", "/v1/runs/r1/cancel"),
    lambda api: api.cancel("r1", reason="by ops"),
])
async def test_the_cli_client_always_posts_json(call: Any) -> None:
    async with serving() as (client, sent):
        answer = await asyncio.to_thread(call, ApiClient(own_origin(client)))
        assert answer["requested"] == "cancel"
        assert [type(m).__name__ for m in sent] == ["CancelRequested"]
