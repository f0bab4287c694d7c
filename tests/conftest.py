"""Shared fixtures: real webhook receivers on port 0 and a real cronsvc app."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cronsvc.config import Config, StoreConfig, load_config
from cronsvc.service import build_app

# Real Redis and MongoDB wire-protocol servers, started on free loopback ports.
pytest_plugins = ["tests.fixtures_redis", "tests.fixtures_mongo"]


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    arrived: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook receiver: records each request and answers `status`/`reply`.
    A request whose client hangs up before the answer is also in `dropped`."""

    url: str = ""
    status: int = 200
    reply: str = "ok"
    requests: list[Received] = field(default_factory=list)
    dropped: list[Received] = field(default_factory=list)
    before_reply: Callable[[], Awaitable[None]] | None = None
    """Awaited after a request is recorded and before it is answered."""
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        received = Received(
            request.method, request.path_qs, dict(request.headers), body, time.time()
        )
        self.requests.append(received)
        self._arrived.set()
        try:
            if self.before_reply is not None:
                await self.before_reply()
        except asyncio.CancelledError:  # the client hung up (handler_cancellation)
            self.dropped.append(received)
            self._arrived.set()
            raise
        return web.Response(status=self.status, text=self.reply)

    async def wait_for(self, count: int, within_s: float = 10.0) -> list[Received]:
        """Wait until at least `count` requests arrived (fails after `within_s`)."""
        async with asyncio.timeout(within_s):
            while len(self.requests) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.requests

    async def wait_for_dropped(self, count: int, within_s: float = 10.0) -> list[Received]:
        """Wait until the clients of at least `count` requests hung up."""
        async with asyncio.timeout(within_s):
            while len(self.dropped) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.dropped


@pytest.fixture
async def start_receiver() -> AsyncIterator[Callable[[], Any]]:
    runners: list[web.AppRunner] = []

    async def start() -> Receiver:
        receiver = Receiver()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", receiver.handle)
        # Cancel the handler when its client hangs up, so `dropped` sees it.
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        receiver.url = f"http://127.0.0.1:{port}/hook"
        return receiver

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def receiver(start_receiver: Callable[[], Any]) -> Receiver:
    result: Receiver = await start_receiver()
    return result


@pytest.fixture
def config(tmp_path: Path) -> Config:
    base = load_config(None, environ={})
    return dataclasses.replace(base, store=StoreConfig(url=f"sqlite:///{tmp_path}/cronsvc.db"))


@pytest.fixture
async def client(config: Config) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """A running cronsvc (API, scheduler, dispatcher) on a fresh SQLite file."""
    app = build_app(config)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client
