"""Webhook receivers for benchmarks, on 127.0.0.1, recording arrival times.

`SocketReceiver` stamps each request with the time the kernel queued its
bytes on the receiving socket (`SO_TIMESTAMPNS`, on Linux; elsewhere the
time they are read): its arrival, free of the receiver's own work. Stamped
when read instead, a burst's later requests also carry the time this
process spent parsing and answering the earlier ones (measured with
`bench.run --jobs 100`: a burst's last request 3-4 ms later, as cronsvc
sent faster). `AiohttpReceiver` stamps when an aiohttp handler starts, for
comparison. Both answer 200 "ok" and keep connections alive.

`run_event_loop` runs a benchmark's event loop on uvloop when it is installed, so the
receiver's own cost per request weighs as little as possible on the arrival
times it records.
"""

from __future__ import annotations

import asyncio
import json
import platform
import signal
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

BACKLOG = 4096
"""Connections waiting to be accepted. A burst opens up to a pool's worth
(1024 per instance) at once; past the default 100 the kernel drops SYNs and
the client retries after 1 s, then 3 s: lag that is the receiver's, not the
sender's."""

_SO_TIMESTAMPNS = 35
"""Linux's SO_TIMESTAMPNS (and SCM_TIMESTAMPNS) on x86-64 and arm64; the
socket module names it only from Python 3.14."""
_KERNEL_STAMPS = sys.platform == "linux" and platform.machine() in ("x86_64", "aarch64")
_TIMESPEC = struct.Struct("qq")


@dataclass
class Arrival:
    job_id: str
    tick: str
    arrived: float


@dataclass
class SocketReceiver:
    arrivals: list[Arrival] = field(default_factory=list)
    url: str = ""
    kernel_stamps: bool = _KERNEL_STAMPS
    _listener: socket.socket | None = None
    _connections: dict[int, _Connection] = field(default_factory=dict)

    async def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(BACKLOG)
        listener.setblocking(False)
        asyncio.get_running_loop().add_reader(listener.fileno(), self._accept)
        self._listener = listener
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._listener is not None:
            loop.remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        for connection in list(self._connections.values()):
            connection.close()

    def record(self, arrived: float, body: bytes) -> None:
        document = json.loads(body)
        self.arrivals.append(Arrival(document["jobId"], document["scheduledAt"], arrived))

    def _accept(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.kernel_stamps:
                sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
            connection = _Connection(self, sock)
            self._connections[sock.fileno()] = connection
            loop.add_reader(sock.fileno(), connection.readable)


_REPLY = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)


class _Connection:
    """Just enough HTTP/1.1 for Content-Length requests on a kept-alive connection."""

    def __init__(self, receiver: SocketReceiver, sock: socket.socket) -> None:
        self._receiver = receiver
        self._sock = sock
        self._buffer = b""
        self._started = 0.0

    def readable(self) -> None:
        try:
            data, ancillary, _, _ = self._sock.recvmsg(65536, _ANCILLARY)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if not data:
            self.close()
            return
        if not self._buffer:
            self._started = _stamp(ancillary)
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
            try:
                self._sock.send(_REPLY)  # a few bytes on an idle socket: never blocks
            except OSError:
                self.close()
                return
            self._started = _stamp(ancillary)

    def close(self) -> None:
        fileno = self._sock.fileno()
        if fileno < 0:
            return
        asyncio.get_running_loop().remove_reader(fileno)
        self._receiver._connections.pop(fileno, None)
        self._sock.close()


def _stamp(ancillary: list[tuple[int, int, bytes]]) -> float:
    """When the kernel queued the bytes just read (the last of them), else now."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return float(seconds + nanoseconds / 1e9)
    return time.time()


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
