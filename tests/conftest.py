"""Shared fixtures: real webhook receivers on port 0 and a real cronsvc app."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestClient, TestServer

from cronsvc.api.context import CONTEXT
from cronsvc.clock import Clock
from cronsvc.config import Config, StoreConfig, load_config
from cronsvc.service import build_app
from tests.processes import CronsvcProcess, free_port, write_config

# Real Redis and MongoDB wire-protocol servers on free loopback ports; a real Chromium.
pytest_plugins = ["tests.fixtures_redis", "tests.fixtures_mongo", "tests.fixtures_browser"]


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
    reply_headers: dict[str, str] = field(default_factory=dict)
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
        return web.Response(status=self.status, text=self.reply, headers=self.reply_headers)

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


class ScriptedResolver(AbstractResolver):
    """A name resolver that answers the n-th lookup, whatever the name, with
    the n-th list of addresses given (and every later one with the last):
    DNS that changes its answer, without DNS."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.lookups: list[str] = []
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = self.answers[min(len(self.lookups), len(self.answers) - 1)]
        self.lookups.append(host)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        self.closed = True


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
    """Defaults on a fresh SQLite file, with the SSRF guard opened for the
    receivers on 127.0.0.1, and the API's rate limit off: a test that sends
    more than a burst of requests would otherwise pass or fail with the
    machine's speed. The limiter's own tests set it (`make_client(limits=...)`)."""
    base = load_config(None, environ={})
    return dataclasses.replace(
        base,
        store=StoreConfig(url=f"sqlite:///{tmp_path}/cronsvc.db"),
        webhook=dataclasses.replace(base.webhook, allow_private_targets=True),
        limits=dataclasses.replace(base.limits, rate_limit_per_s=0),
    )


async def serving(
    test_client: TestClient[web.Request, web.Application],
) -> TestClient[web.Request, web.Application]:
    """`test_client` once its scheduler has loaded the store: until then
    `/readyz` answers 503, and a test that reads it would pass or fail with
    how fast the machine starts the app."""
    async with asyncio.timeout(10):
        await test_client.app[CONTEXT].scheduler_ready.wait()
    return test_client


@pytest.fixture
async def client(config: Config) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """A running cronsvc (API, scheduler, dispatcher) on a fresh SQLite file."""
    app = build_app(config)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield await serving(test_client)


MakeClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def make_client(config: Config) -> AsyncIterator[MakeClient]:
    """Like `client`, with sections of the configuration replaced, e.g.
    `await make_client(limits=dataclasses.replace(config.limits, max_jobs=2))`
    (a whole new section brings back that section's defaults, the rate limit
    among them), and an optional clock."""
    async with AsyncExitStack() as stack:

        async def make(
            *, clock: Clock | None = None, **sections: Any
        ) -> TestClient[web.Request, web.Application]:
            app = build_app(dataclasses.replace(config, **sections), clock=clock)
            test_client = TestClient(TestServer(app, host="127.0.0.1"))
            return await serving(await stack.enter_async_context(test_client))

        yield make


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[CronsvcProcess]:
    """A real `cronsvc serve` process on a fresh SQLite file (see `write_config`)."""
    port = free_port()
    config = write_config(tmp_path / "config.toml", port, tmp_path / "data" / "cronsvc.db")
    process = CronsvcProcess(config_path=config, port=port, log_path=tmp_path / "cronsvc.log")
    await process.start()
    yield process
    await process.stop(signal.SIGKILL)
