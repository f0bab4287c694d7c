"""Webhook receivers for benchmarks, on 127.0.0.1, recording arrival times.

`SocketReceiver` stamps each request when its first bytes are read from the
socket: the arrival time, free of the receiver's own request handling, which
for a burst of N simultaneous requests would otherwise add up to N handler
costs. `AiohttpReceiver` stamps when an aiohttp handler starts, for
comparison. Both answer 200 "ok" and keep connections alive.

`run_event_loop` runs a benchmark's event loop on uvloop when it is installed, so the
receiver's own cost per request weighs as little as possible on the arrival
times it records.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from aiohttp import web

BACKLOG = 4096
"""Connections waiting to be accepted. A burst opens up to a pool's worth
(1024 per instance) at once; past the default 100 the kernel drops SYNs and
the client retries after 1 s, then 3 s: lag that is the receiver's, not the
sender's."""


@dataclass
class Arrival:
    job_id: str
    tick: str
    arrived: float


@dataclass
class SocketReceiver:
    arrivals: list[Arrival] = field(default_factory=list)
    url: str = ""
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), "127.0.0.1", 0, backlog=BACKLOG
        )
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def record(self, arrived: float, body: bytes) -> None:
        document = json.loads(body)
        self.arrivals.append(Arrival(document["jobId"], document["scheduledAt"], arrived))


_REPLY = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


class _Connection(asyncio.Protocol):
    """Just enough HTTP/1.1 for Content-Length requests on a kept-alive connection."""

    def __init__(self, receiver: SocketReceiver) -> None:
        self._receiver = receiver
        self._buffer = b""
        self._started = 0.0
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if not self._buffer:
            self._started = time.time()
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            length = 0
            for line in self._buffer[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            total = end + 4 + length
            if len(self._buffer) < total:
                return
            self._receiver.record(self._started, self._buffer[end + 4 : total])
            self._buffer = self._buffer[total:]
            assert self._transport is not None
            self._transport.write(_REPLY)
            self._started = time.time()


@dataclass
class AiohttpReceiver:
    arrivals: list[Arrival] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0, backlog=BACKLOG).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        arrived = time.time()
        document = await request.json()
        self.arrivals.append(Arrival(document["jobId"], document["scheduledAt"], arrived))
        return web.Response(text="ok")


Receiver = SocketReceiver | AiohttpReceiver
_T = TypeVar("_T")


@asynccontextmanager
async def receiving(kind: str = "socket") -> AsyncIterator[Receiver]:
    """A receiver (`socket` or `aiohttp`), listening until the block ends."""
    receiver: Receiver = SocketReceiver() if kind == "socket" else AiohttpReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


def run_event_loop(main: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run `main`; a SIGTERM cancels it, so the processes it started are
    stopped on the way out rather than left running."""

    async def stoppable() -> _T:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await main()

    try:
        import uvloop
    except ImportError:
        return asyncio.run(stoppable())
    return uvloop.run(stoppable())
