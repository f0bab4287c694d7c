"""Shared fixtures: real webhook receivers on port 0, a real cronsvc app, a
fresh SQLite store; Redis, MongoDB and a browser through the plugins below."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cronsvc.api.context import CONTEXT
from cronsvc.clock import Clock, SystemClock
from cronsvc.config import Config, StoreConfig, load_config
from cronsvc.dispatch import Dispatcher
from cronsvc.service import build_app
from cronsvc.store import Store, open_store
from tests.fakes import (
    Handler,
    RawServer,
    Receiver,
    Script,
    StartRawServer,
    StartReceiver,
    free_port,
)
from tests.helpers_api import Client, MakeClient
from tests.helpers_dispatch import OPEN, MakeDispatcher
from tests.processes import CronsvcProcess, write_config

# Real Redis and MongoDB wire-protocol servers on free loopback ports; a real Chromium.
pytest_plugins = ["tests.fixtures_redis", "tests.fixtures_mongo", "tests.fixtures_browser"]


@pytest.fixture
async def start_receiver() -> AsyncIterator[StartReceiver]:
    """Start webhook receivers, all stopped at teardown: `await start_receiver()`
    answers 200 "ok" (or as its `status`, `reply` and `before_reply` say),
    `await start_receiver(handler)` answers with `handler`; on 127.0.0.1
    unless given another loopback `host=`."""
    async with AsyncExitStack() as stack:

        async def start(handler: Handler | None = None, *, host: str = "127.0.0.1") -> Receiver:
            receiver = Receiver(handler=handler)
            await receiver.start(host)
            stack.push_async_callback(receiver.stop)
            return receiver

        yield start


@pytest.fixture
async def receiver(start_receiver: StartReceiver) -> Receiver:
    return await start_receiver()


@pytest.fixture
async def raw_server() -> AsyncIterator[StartRawServer]:
    """Start misbehaving HTTP servers (`RawServer`), all stopped at teardown:
    `await raw_server(script)` runs `script(reader, writer, n)` for its n-th
    connection."""
    servers: list[RawServer] = []

    async def start(script: Script) -> RawServer:
        server = await RawServer.start(script)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """Defaults on a fresh SQLite file, with the SSRF guard opened for the
    receivers on 127.0.0.1, and the API's rate limit off: a test that sends
    more than a burst of requests would otherwise pass or fail with the
    machine's speed. The limiter's own tests set it (`make_client(limits=...)`)."""
    base = load_config(None, environ={})
    return base.model_copy(
        update={
            "store": StoreConfig(url=f"sqlite:///{tmp_path}/cronsvc.db"),
            "webhook": base.webhook.model_copy(update={"allow_private_targets": True}),
            "limits": base.limits.model_copy(update={"rate_limit_per_s": 0.0}),
        }
    )


async def serving(
    test_client: Client,
) -> Client:
    """`test_client` once its scheduler has loaded the store: until then
    `/readyz` answers 503, and a test that reads it would pass or fail with
    how fast the machine starts the app."""
    async with asyncio.timeout(10):
        await test_client.app[CONTEXT].scheduler_ready.wait()
    return test_client


@pytest.fixture
async def client(config: Config) -> AsyncIterator[Client]:
    """A running cronsvc (API, scheduler, dispatcher) on a fresh SQLite file."""
    app = build_app(config)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield await serving(test_client)


@pytest.fixture
async def make_client(config: Config) -> AsyncIterator[MakeClient]:
    """Like `client`, with sections of the configuration replaced, e.g.
    `await make_client(limits=config.limits.model_copy(update={"max_jobs": 2}))`
    (a whole new section brings back that section's defaults, the rate limit
    among them), and an optional clock."""
    async with AsyncExitStack() as stack:

        async def make(*, clock: Clock | None = None, **sections: Any) -> Client:
            app = build_app(config.model_copy(update=sections), clock=clock)
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


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh SQLite store (not the `config` fixture's file), opened through
    `open_store` as the service opens it. Modules that test the stores
    themselves define their own `store`."""
    opened = await open_store(f"sqlite:///{tmp_path}/store.db", retention_days=30)
    yield opened
    await opened.aclose()


@pytest.fixture
async def make_dispatcher() -> AsyncIterator[MakeDispatcher]:
    """Started dispatchers, closed at teardown: 8 slots, answers up to 64 KiB,
    the system clock and the guard open to loopback unless the keywords (any
    of `Dispatcher`'s) say otherwise."""
    async with AsyncExitStack() as stack:

        async def make(**options: Any) -> Dispatcher:
            settings: dict[str, Any] = {
                "max_concurrency": 8,
                "max_response_bytes": 65536,
                "clock": SystemClock(),
                "target_policy": OPEN,
            }
            settings.update((k, v) for k, v in options.items() if v is not None)
            return await stack.enter_async_context(Dispatcher(**settings))

        yield make
