"""Files the worker serves as they are: the OpenAPI document and the dashboard.

The dashboard is plain HTML, CSS and one vanilla JavaScript file in
``streams/dashboard/`` (no build step, nothing fetched from a CDN): it calls the
JSON API of the worker that served it. Files are read once per process.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from aiohttp import web

_HERE = Path(__file__).parent
DASHBOARD_FILES = {"app.js": "application/javascript", "app.css": "text/css",
                   "login.js": "application/javascript"}


@cache
def _read(path: Path) -> bytes:
    return path.read_bytes()


def openapi_path() -> Path:
    """Where the OpenAPI document of the HTTP API is."""
    return _HERE / "openapi.json"


async def openapi(_: web.Request) -> web.Response:
    """``GET /openapi.json``."""
    return web.Response(body=_read(openapi_path()), content_type="application/json")


async def dashboard(_: web.Request) -> web.Response:
    """``GET /`` and ``GET /dashboard``: the dashboard page."""
    return web.Response(body=_read(_HERE / "dashboard" / "index.html"),
                        content_type="text/html", charset="utf-8")


async def login_page(_: web.Request) -> web.Response:
    """``GET /login`` (``streams.http_login``): the form that trades the token for a
    session."""
    return web.Response(body=_read(_HERE / "dashboard" / "login.html"),
                        content_type="text/html", charset="utf-8")


async def dashboard_file(request: web.Request) -> web.Response:
    """``GET /dashboard/{name}``: the page's script and style sheet (nothing else)."""
    name = request.match_info["name"]
    if name not in DASHBOARD_FILES:
        raise web.HTTPNotFound(text=f"no dashboard file {name!r}")
    return web.Response(body=_read(_HERE / "dashboard" / name),
                        content_type=DASHBOARD_FILES[name], charset="utf-8")


def routes() -> list[web.RouteDef]:
    """The routes, for ``web.Application.add_routes``."""
    return [
        web.get("/", dashboard),
        web.get("/dashboard", dashboard),
        web.get("/dashboard/{name}", dashboard_file),
        web.get("/openapi.json", openapi),
    ]
