"""The dashboard: its files are served from the installed package."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient

from cronsvc.api.dashboard import ASSETS, DIRECTORY, PACKAGE, PUBLIC_ROUTES

Client = TestClient[web.Request, web.Application]
ROOT = Path(__file__).resolve().parent.parent


# -- served from the package ---------------------------------------------------


def test_every_dashboard_file_ships_as_package_data() -> None:
    folder = resources.files(PACKAGE).joinpath(*DIRECTORY)
    assert {entry.name for entry in folder.iterdir()} == set(ASSETS)
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["cronsvc"]
    for name in ASSETS:
        assert folder.joinpath(name).is_file()
        path = "/".join(("api", *DIRECTORY, name))
        assert any(fnmatch(path, pattern) for pattern in patterns), path


async def test_page_and_assets_have_their_types_and_revalidate_by_etag(client: Client) -> None:
    page = await client.get("/")
    assert page.status == 200
    assert page.content_type == "text/html"
    assert page.charset == "utf-8"
    assert page.headers["Cache-Control"] == "no-cache"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert 'src="/dashboard/app.js"' in await page.text()
    for name, content_type in ASSETS.items():
        if name == "index.html":
            continue
        response = await client.get(f"/dashboard/{name}")
        assert response.status == 200, name
        assert response.content_type == content_type, name
        etag = response.headers["ETag"]
        again = await client.get(f"/dashboard/{name}", headers={"If-None-Match": etag})
        assert again.status == 304, name
        assert await again.read() == b""
    head = await client.head("/")
    assert head.status == 200


async def test_only_the_listed_assets_are_served(client: Client) -> None:
    for path in (
        "/dashboard/nothing.js",
        "/dashboard/index.html",
        "/dashboard/..%2fdashboard.py",
        "/dashboard/",
    ):
        response = await client.get(path)
        assert response.status == 404, path
        assert response.content_type == "application/problem+json"


async def test_public_routes_are_the_dashboards_own(client: Client) -> None:
    served = {
        route.resource.canonical
        for route in client.app.router.routes()
        if route.resource is not None and route.handler.__module__ == "cronsvc.api.dashboard"
    }
    assert served == PUBLIC_ROUTES
