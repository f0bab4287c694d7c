"""GET /docs: a page for people, whose assets ship inside the package and
which fetches nothing from any other host."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from cronsvc.config import Config
from tests.helpers_api import Client, MakeClient

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "cronsvc" / "api" / "static"
TOKEN = "docs-test-token-0123456789abc"


class References(HTMLParser):
    """Every URL the page names in a src or href attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def references(html: str) -> list[str]:
    parser = References()
    parser.feed(html)
    return parser.urls


async def test_the_docs_page_is_html_that_loads_its_own_assets_and_no_other_host(
    client: Client,
) -> None:
    response = await client.get("/docs")
    assert response.status == 200
    assert response.content_type == "text/html"
    html = await response.text()
    urls = references(html)
    for url in urls:
        assert not urlsplit(url).scheme and not urlsplit(url).netloc, url
    resolved = {urlsplit(urljoin("http://cronsvc.test/docs", url)).path for url in urls}
    assert {"/docs/docs.js", "/docs/docs.css", "/openapi.json"} <= resolved
    assert not re.search(r"(?i)(https?:)?//[a-z0-9.-]", html.replace("<!doctype html>", ""))
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy


async def test_the_docs_assets_are_served_and_fetch_nothing_from_elsewhere(client: Client) -> None:
    for name, content_type in (("docs.js", "text/javascript"), ("docs.css", "text/css")):
        response = await client.get(f"/docs/{name}")
        assert response.status == 200, name
        assert response.content_type == content_type
        text = await response.text()
        assert text == (STATIC / name).read_text()
        assert not re.search(r"(?i)https?://|url\(\s*['\"]?//|@import", text), name
    assert 'fetch("openapi.json"' in (STATIC / "docs.js").read_text()


async def test_only_the_shipped_assets_are_served(client: Client) -> None:
    for name in ("docs.html", "..%2Fdocs.py", "nope.js", "..%2F..%2F__init__.py"):
        response = await client.get(f"/docs/{name}")
        assert response.status == 404, name
    # The client resolves dot segments before asking: /docs/.. is the page at /.
    response = await client.get("/docs/%2e%2e")
    assert response.status == 200 and response.content_type == "text/html"


async def test_a_trailing_slash_redirects_to_the_page_whose_relative_links_work(
    make_client: MakeClient, config: Config
) -> None:
    client = await make_client(server=config.server.model_copy(update={"api_tokens": [TOKEN]}))
    for method in ("GET", "HEAD"):
        moved = await client.request(method, "/docs/", allow_redirects=False)
        assert moved.status in (301, 308), method  # and no token needed, as for the page
        target = urlsplit(urljoin("http://cronsvc.test/docs/", moved.headers["Location"]))
        assert target.path == "/docs"
    page = await client.get("/docs/")
    assert page.status == 200 and page.url.path == "/docs"
    assert page.content_type == "text/html"


async def test_with_tokens_the_page_loads_without_one_and_the_document_needs_one(
    make_client: MakeClient, config: Config
) -> None:
    client = await make_client(server=config.server.model_copy(update={"api_tokens": [TOKEN]}))
    for path in ("/docs", "/docs/docs.js", "/docs/docs.css"):
        assert (await client.get(path)).status == 200, path
    assert (await client.get("/openapi.json")).status == 401
    document = await client.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert document.status == 200


def test_the_package_data_ships_every_docs_asset() -> None:
    """An installed wheel carries what `/docs` serves."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["cronsvc"]
    shipped = {path.name for path in STATIC.iterdir() if path.is_file()}
    assert shipped == {"docs.html", "docs.js", "docs.css"}
    for name in shipped:
        assert any(fnmatch.fnmatch(f"api/static/{name}", p) for p in patterns), name
