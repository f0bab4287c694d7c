"""Stand-ins the tests share: clocks a test moves by hand, a webhook receiver
that is a real aiohttp server on port 0, a name resolver with scripted
answers, a proxy that partitions a connection, and the small helpers more
than one test module needs (a free port, a metric's sample, a command's run),
a raw TCP server for answers no HTTP framework would send, and a transport
that records what a protocol asks of it.

Each fake says what it fakes. The fixtures that start them are in
`conftest.py`; nothing here is a fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDictProxy

from cronsvc.clock import SystemClock

# --- clocks -----------------------------------------------------------------------


class SteppedClock:
    """Real wall time; a monotonic time that moves only when told to, so a
    token bucket refills (and a lease ages) exactly as much as a test says."""

    def __init__(self) -> None:
        self._system = SystemClock()
        self._monotonic = 1000.0

    def advance(self, seconds: float) -> None:
        self._monotonic += seconds

    def now(self) -> datetime:
        return self._system.now()

    def time(self) -> float:
        return self._system.time()

    def monotonic(self) -> float:
        return self._monotonic

    async def sleep(self, seconds: float) -> None:
        await self._system.sleep(seconds)


class FakeClock:
    """Real time moved on by `advance` and by every `sleep`, which records its
    delay and returns at once: a backoff takes no time in the test, yet the
    next attempt sees the clock that far ahead."""

    def __init__(self) -> None:
        self._system = SystemClock()
        self._offset_s = 0.0
        self.sleeps: list[float] = []

    def advance(self, seconds: float) -> None:
        self._offset_s += seconds

    def now(self) -> datetime:
        return self._system.now() + timedelta(seconds=self._offset_s)

    def time(self) -> float:
        return self._system.time() + self._offset_s

    def monotonic(self) -> float:
        return self._system.monotonic()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)


class BlockingClock(FakeClock):
    """A `FakeClock` whose `sleep` records its delay, says so through
    `sleeping`, and never returns on its own: a task caught in a backoff."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeping = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.sleeping.set()
        await asyncio.Event().wait()


class EarlyClock(SystemClock):
    """The system clock, waking from every sleep 5 ms early, as an event loop
    whose timers count whole milliseconds may (by less)."""

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds - 0.005))


# --- a webhook receiver -------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HOLD_LIMIT_S = 10.0
"""Longest a receiver holds a request (`Receiver.hold`); stopping releases it sooner."""


@dataclass
class Received:
    """One request as the receiver read it."""

    method: str
    path: str
    """The path and the query."""
    headers: CIMultiDictProxy[str]
    body: bytes
    arrived: float
    """Unix time at which the request had been read."""
    peer: tuple[str, int]
    """The client's address: the same peer means a reused connection."""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook target: a real aiohttp server on a loopback port 0 that records
    every request and answers it with `handler`, or else with `status`,
    `reply` and `reply_headers`. A request whose client hangs up before the
    answer is also in `dropped` (its handler is cancelled, as aiohttp's
    `handler_cancellation` does). `url` is its `/hook`; `at(path)` any other."""

    handler: Handler | None = None
    status: int = 200
    reply: str = "ok"
    reply_headers: dict[str, str] = field(default_factory=dict)
    before_reply: Callable[[], Awaitable[None]] | None = None
    """Awaited after a request is recorded and before it is answered."""
    base_url: str = ""
    requests: list[Received] = field(default_factory=list)
    dropped: list[Received] = field(default_factory=list)
    active: int = 0
    """Requests read and not yet answered."""
    max_active: int = 0
    released: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return self.at("/hook")

    def at(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def start(self, host: str = "127.0.0.1") -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        # Cancel the handler when its client hangs up, so `dropped` sees it.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, host, 0).start()
        address, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{address}:{port}"

    async def stop(self) -> None:
        """Release the requests held open, then close the server."""
        self.released.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        received = Received(
            request.method,
            request.path_qs,
            request.headers,
            body,
            time.time(),
            (peer[0], peer[1]) if peer else ("", 0),
        )
        self.requests.append(received)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self._changed.set()
        try:
            if self.before_reply is not None:
                await self.before_reply()
            if self.handler is not None:
                return await self.handler(request)
            return web.Response(status=self.status, text=self.reply, headers=self.reply_headers)
        except asyncio.CancelledError:  # the client hung up
            self.dropped.append(received)
            raise
        finally:
            self.active -= 1
            self._changed.set()

    async def hold(self) -> None:
        """Keep the current request open until the receiver stops (or HOLD_LIMIT_S)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HOLD_LIMIT_S):
                await self.released.wait()

    async def wait_for(self, count: int, within_s: float = 10.0) -> list[Received]:
        """Wait until at least `count` requests arrived (fails after `within_s`)."""
        await self._until(lambda: len(self.requests) >= count, within_s)
        return self.requests

    async def wait_for_dropped(self, count: int, within_s: float = 10.0) -> list[Received]:
        """Wait until the clients of at least `count` requests hung up."""
        await self._until(lambda: len(self.dropped) >= count, within_s)
        return self.dropped

    async def wait_active(self, count: int, within_s: float = 5.0) -> None:
        """Wait until exactly `count` requests are open at the receiver."""
        await self._until(lambda: self.active == count, within_s)

    async def _until(self, done: Callable[[], bool], within_s: float) -> None:
        async with asyncio.timeout(within_s):
            while not done():
                self._changed.clear()
                await self._changed.wait()


StartReceiver = Callable[..., Awaitable[Receiver]]
"""The `start_receiver` fixture: `await start_receiver(handler=None, *, host=...)`."""


# --- a misbehaving HTTP server -------------------------------------------------------

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]
"""What a `RawServer` does with its n-th connection (n from 1)."""


@dataclass
class RawServer:
    """A TCP server on 127.0.0.1 port 0 that runs a script per connection, for
    answers no HTTP server framework would send. `url` is its /hook."""

    url: str = ""
    connections: int = 0
    server: asyncio.Server | None = None

    @classmethod
    async def start(cls, script: Script) -> RawServer:
        state = cls()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            state.connections += 1
            try:
                await script(reader, writer, state.connections)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        state.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        state.url = f"http://127.0.0.1:{state.server.sockets[0].getsockname()[1]}/hook"
        return state

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


StartRawServer = Callable[[Script], Awaitable[RawServer]]
"""The `raw_server` fixture: `await raw_server(script)`."""


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's head and Content-Length body; b"" at the end of the stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b""
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


# --- a name resolver, a partition ----------------------------------------------------


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


class FreezingProxy:
    """A loopback TCP proxy to a Redis port that can stop passing bytes without
    closing anything, as a partitioned network does."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._frozen = False
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.url = ""

    async def __aenter__(self) -> FreezingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"redis://127.0.0.1:{port}/0"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        self._frozen = True
        try:
            yield
        finally:
            self._frozen = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        self._writers += [writer, up_writer]
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        writer.close()
        up_writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frozen_here = False
        while data := await reader.read(65536):
            # A connection that saw a freeze stays dead, as after a partition
            # its peer has lost track of the stream anyway.
            frozen_here = frozen_here or self._frozen
            if not frozen_here:
                writer.write(data)
                await writer.drain()


# --- plain helpers ---------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nothing listens on (until something binds it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def sample(metrics: str, name: str) -> float:
    """The value of an unlabelled sample in a /metrics text (0 when absent)."""
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


@dataclass
class Run:
    """One run of a cronsvc command: its exit code and what it printed."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


def drops_second_request() -> Script:
    """Answers a connection's first request, keeps it, and closes it unanswered
    at its second: the server shut a kept connection as a request came."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)

    return script


# --- a transport without a socket ------------------------------------------------------


class RecordingTransport(asyncio.Transport):
    """Stands in for asyncio's transport under a protocol fed by hand: it
    records whether reading is paused and whether it was closed; closing it
    ends the protocol's connection, as a real one does."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self.protocol = protocol
        self.paused = False
        self.closed = False
        protocol.connection_made(self)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.protocol.connection_lost(None)
