"""GET /docs: a page that renders /openapi.json for people (/docs/ redirects to it).

Its script and style sheet ship inside the package (`static/`) and the page
fetches nothing but `/openapi.json` from this service, so it works offline
and its Content-Security-Policy can forbid every other origin. The page and
its assets hold no data; they are served without a token (see
`cronsvc.api.auth`) so a person can paste one into the page.
"""

from __future__ import annotations

import functools
from importlib import resources

from aiohttp import web

from cronsvc.api.operations import TEXT, Operation

routes = web.RouteTableDef()

ASSETS = {"docs.js": "text/javascript", "docs.css": "text/css"}
"""What /docs/{asset} serves, by name: nothing else is reachable."""
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@functools.cache
def _read(name: str) -> str:
    return resources.files("cronsvc.api").joinpath("static", name).read_text(encoding="utf-8")


@routes.get("/docs")
@Operation(
    "This document, rendered for people (HTML)",
    tag="documentation",
    answer=TEXT,
    media_types=["text/html"],
)
async def docs_page(request: web.Request) -> web.Response:
    return web.Response(
        text=_read("docs.html"), content_type="text/html", charset="utf-8", headers=_HEADERS
    )


@routes.get("/docs/")
@Operation(
    "Redirects to /docs, whose relative links work from there only",
    tag="documentation",
    status=308,
    headers={
        "Location": {
            "description": "../docs (relative, so a proxy's path prefix is kept)",
            "schema": {"type": "string"},
        }
    },
)
async def docs_slash(request: web.Request) -> web.Response:
    """To the page: its links are relative (so it works under a proxy's path
    prefix), and from /docs/ they would miss. The Location is relative for
    the same reason."""
    raise web.HTTPPermanentRedirect("../docs")


@routes.get("/docs/{asset}")
@Operation(
    "The script and style sheet of /docs",
    tag="documentation",
    answer=TEXT,
    media_types=sorted(set(ASSETS.values())),
    params=[{"name": "asset", "in": "path", "required": True, "schema": {"enum": list(ASSETS)}}],
    errors=(404,),
    error_text={404: "no such asset"},
)
async def docs_asset(request: web.Request) -> web.Response:
    name = request.match_info["asset"]
    content_type = ASSETS.get(name)
    if content_type is None:
        raise web.HTTPNotFound()
    return web.Response(
        text=_read(name), content_type=content_type, charset="utf-8", headers=_HEADERS
    )
