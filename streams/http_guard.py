"""What a web page in the operator's browser must not make the HTTP API do: the Host,
Origin and Content-Type rules a request passes before its route.

- Host (DNS rebinding): a page on ``evil.example`` whose name its owner re-points at
  127.0.0.1 is, to the browser, same-origin with the worker; only the Host header it
  sends (``evil.example``) gives it away. Names the worker does not serve get 421.
- Content-Type: a cross-site form, or a ``fetch`` in no-cors mode, can POST a form or
  ``text/plain`` body (or none) without asking first. ``application/json`` makes the
  browser ask (a CORS preflight), which the worker never grants: state-changing requests
  need it (415).
- Origin: browsers send it with every POST; one that is not the worker's own gets 403,
  so a cross-site request is refused even by a browser that skipped the above.

The probes and ``/metrics`` skip the Host rule: kubelets and Prometheus address a worker
by pod IP or service name, and those routes change nothing.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import typedefs, web
from yarl import URL

from streams.http_params import problem

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = typedefs.Middleware
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""What orchestrators and Prometheus reach: no token, no Host rule."""
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SETTING = "STEPSTREAM_HTTP_ALLOWED_HOSTS"
_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address or a Host name) is this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_name(header: str) -> str | None:
    """The name in a Host header, lower case, without port or trailing dot
    (``[::1]:8288`` -> ``::1``); None when there is none to read."""
    if not header.strip():
        return None
    try:
        host = URL(f"http://{header.strip()}/").host
    except ValueError:
        return None
    name = (host or "").lower().rstrip(".")
    return name if _is_ip(name) or _NAME.fullmatch(name) else None


@dataclass(frozen=True)
class HostRule:
    """Which Host names the API answers to; loopback names always pass."""

    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    """``.example.com`` entries: the domain and its subdomains."""
    any_host: bool = False
    ip_addresses: bool = False
    """Any IP address: a rebinding page is always on a name, never on an address."""

    @classmethod
    def of(cls, allowed_hosts: str, *, bind_host: str, token: str) -> HostRule:
        """The rule from the setting, or, when it is empty, from how the API is exposed.

        With a token, any name: the token already keeps pages that cannot show it out,
        and the session cookie is bound to the real name. Without one, loopback names
        when bound to loopback; also any IP address and the bound name when bound beyond
        it, where clients' names (a service's, an ingress's) cannot be guessed: list them.
        """
        entries = {e.strip().lower().rstrip(".") for e in allowed_hosts.split(",")} - {""}
        if "*" in entries or (not entries and token):
            return cls(any_host=True)
        if entries:  # "name:port" means the name: the port is not checked
            return cls(names=frozenset(host_name(e) or e for e in entries
                                       if not e.startswith(".")),
                       suffixes=tuple(sorted(e for e in entries if e.startswith("."))))
        if is_loopback(bind_host):
            return cls()
        name = bind_host.lower().rstrip(".")
        return cls(names=frozenset({name} if name and not _is_ip(name) else ()),
                   ip_addresses=True)

    def allows(self, name: str) -> bool:
        """Whether a request for the host ``name`` (from ``host_name``) is served."""
        if self.any_host or is_loopback(name) or name in self.names:
            return True
        if any(name.endswith(s) or name == s[1:] for s in self.suffixes):
            return True
        return self.ip_addresses and _is_ip(name)


def request_scheme(request: web.Request) -> str:
    """``https`` or ``http`` as the browser sees it: behind a TLS-terminating proxy, its
    ``X-Forwarded-Proto`` (a page cannot set that header cross-site without a preflight)."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return forwarded if forwarded in ("http", "https") else request.scheme


def same_origin(origin: str, scheme: str, host_header: str) -> bool:
    """Whether an ``Origin`` header names ``scheme://host_header`` (default ports implied)."""
    try:
        given, own = URL(origin.strip()), URL(f"{scheme}://{host_header.strip()}")
    except ValueError:
        return False
    if not given.scheme or not given.host or given.path not in ("", "/"):
        return False  # "null" (sandboxed frames, some redirects) and anything malformed
    return (given.scheme, given.host.lower(), given.port) == (
        own.scheme, (own.host or "").lower(), own.port)


def browser_guard(hosts: HostRule) -> Middleware:
    """An aiohttp middleware applying the Host, Origin and Content-Type rules."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host", "")
        # No Host at all is an HTTP/1.0 client, not a browser: nothing to rebind.
        if request.path not in PROBE_PATHS and host.strip():
            name = host_name(host)
            if name is None or not hosts.allows(name):
                return problem(421, f"this worker does not serve the host {name or host!r}"
                                    f" (DNS rebinding protection): add it to {SETTING} "
                                    "(comma-separated; '*' for any)")
        # Unrouted requests go on to their 404 or 405.
        if request.method in STATE_CHANGING and request.match_info.http_exception is None:
            origin, scheme = request.headers.get("Origin"), request_scheme(request)
            if origin is not None and not same_origin(origin, scheme, host):
                return problem(403, f"cross-origin request refused: Origin {origin!r} is not "
                                    f"this API's own ({scheme}://{host})")
            if "Content-Type" not in request.headers or \
                    request.content_type != "application/json":
                return problem(415, f"{request.method} needs 'Content-Type: application/json'"
                                    " (a form or a text/plain body cannot change state here)")
        return await handler(request)

    return guard
