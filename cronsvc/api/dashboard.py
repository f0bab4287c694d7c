"""GET / and /dashboard/{asset}: the web dashboard, static files shipped in the package.

The page holds no data. Its script calls the API like any other client, with
the token a person pastes into it (kept in the tab's session storage), so the
page and its assets are the same for everyone and are served without a token:
`PUBLIC_ROUTES` names them for the access checks. Nothing is fetched from
another origin, and the Content-Security-Policy says so.

Assets are revalidated on every load (`no-cache` with an ETag, 304 when it
matches), so an upgraded service is never paired with a cached old script.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from cronsvc.api.operations import TEXT, Operation

routes = web.RouteTableDef()

PACKAGE = "cronsvc.api"
DIRECTORY = ("static", "dashboard")
ASSETS = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "api.js": "text/javascript",
    "describe.js": "text/javascript",
    "format.js": "text/javascript",
    "chart.js": "text/javascript",
    "app.css": "text/css",
}
"""Every file the dashboard serves, by name, with its content type; any other
name is a 404, so no path reaches outside this list."""
_FILES = sorted(set(ASSETS) - {"index.html"})
"""What /dashboard/{asset} serves: the page itself is served at /."""
PUBLIC_ROUTES = frozenset({"/", "/dashboard/{asset}"})
"""Route templates that GET and HEAD reach without an API token."""

_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


@functools.cache
def load(name: str) -> Asset:
    """An asset's bytes, read once from the installed package."""
    body = resources.files(PACKAGE).joinpath(*DIRECTORY, name).read_bytes()
    return Asset(body, ASSETS[name], hashlib.sha256(body).hexdigest()[:20])


def _serve(request: web.Request, name: str) -> web.Response:
    asset = load(name)
    matches = request.if_none_match or ()
    if any(tag.value in (asset.etag, "*") for tag in matches):
        response = web.Response(status=304, headers=_HEADERS)
    else:
        response = web.Response(body=asset.body, headers=_HEADERS)
        response.content_type = asset.content_type
        response.charset = "utf-8"
    response.etag = asset.etag
    return response


@routes.get("/")
@Operation(
    "The web dashboard (a static page; it calls this API like any client)",
    tag="dashboard",
    answer=TEXT,
    media_types=["text/html"],
)
async def index(request: web.Request) -> web.Response:
    return _serve(request, "index.html")


@routes.get("/dashboard/{asset}")
@Operation(
    "The dashboard's scripts and style sheet (revalidated with their ETag)",
    tag="dashboard",
    answer=TEXT,
    media_types=sorted({ASSETS[name] for name in _FILES}),
    params=[{"name": "asset", "in": "path", "required": True, "schema": {"enum": _FILES}}],
    errors=(404,),
    error_text={404: "no such asset"},
)
async def asset(request: web.Request) -> web.Response:
    name = request.match_info["asset"]
    if name not in ASSETS or name == "index.html":
        raise web.HTTPNotFound()
    return _serve(request, name)
