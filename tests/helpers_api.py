"""The API as tests talk to it: its test client (and the type of the
`make_client` fixture), its problem documents and its instants."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
"""The `make_client` fixture: a running cronsvc with sections of its configuration replaced."""


async def problem(response: Any, status: int) -> dict[str, Any]:
    """The problem+json document of an answer that must have `status`."""
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    body: dict[str, Any] = await response.json()
    assert body["status"] == status
    return body


def parse(instant: str) -> datetime:
    """An instant as the API writes it (RFC 3339, `Z`)."""
    return datetime.fromisoformat(instant.replace("Z", "+00:00"))


def stamp(tick: int) -> str:
    """A Unix second written as the API writes instants."""
    return datetime.fromtimestamp(tick, UTC).isoformat().replace("+00:00", "Z")
