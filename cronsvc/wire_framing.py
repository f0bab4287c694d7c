"""The webhook client's answers as they arrive: one connection's protocol, feeding
httptools' parser (llhttp, in C), and the sink the body goes to, decoded and capped.
Done here because httptools cannot tell llhttp: a HEAD answer has no body, and a
body framed by the connection's end is complete when the peer closes.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from typing import cast

import httptools

PoolKey = tuple[str, str, int]
"""Scheme, host and port: the connections one target may share."""
MAX_HEAD_BYTES = 64 * 1024
_READ_HIGH_WATER = 256 * 1024
"""Body bytes held before the answer is asked for, past which reading pauses."""


class ProtocolError(Exception):
    """The peer's answer is not HTTP/1.x as this client reads it."""


class Disconnected(ConnectionError):
    """The peer closed the connection before its answer was complete."""


class _Stop(Exception):
    """Ends `feed_data` from a callback; the connection's state says why."""


class Connection(asyncio.Protocol):
    """One connection, and the answer to the request last written on it (`begin`)."""

    def __init__(self, key: PoolKey, lost: set[Connection]) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.eof = False
        self.stray = False
        """Bytes came that no request asked for: never reused."""
        self.idle_since = 0.0
        self._lost = lost
        self.gone: Callable[[Connection], None] | None = None
        """Called once it has ended, when its host's connections are counted."""
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self.status = 0
        self.keep_alive = False
        self.begin(head_only=False)
        self.finished = True  # no answer is expected until `begin`
        self._early: list[bytes] = []
        self._early_bytes = 0

    def begin(self, head_only: bool) -> None:
        """A request was written: its answer is read from now on."""
        self._head_only = head_only
        self.reason = ""
        self.headers: dict[str, str] = {}
        self.head_done = self.expired = False
        self.finished = False
        """Nothing more is read for this answer."""
        self.complete = False
        """The answer reached the end its framing announced."""
        self.failure: Exception | None = None
        self.sink: Sink | None = None
        self._received = 0
        self._limit = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.finished:
            self.stray = True
            return
        if not self.head_done:
            self._received += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not isinstance(exc.__context__, _Stop):
                self._broken(exc)
            elif self._head_only and not data.endswith(b"\r\n\r\n"):
                self.stray = True  # bytes after a HEAD answer's head
        else:
            if not self.head_done and self._received > MAX_HEAD_BYTES:
                self._broken(ProtocolError(f"answer head longer than {MAX_HEAD_BYTES} bytes"))
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        # The parser holds this protocol's callbacks: without it, an ended
        # connection dies by reference count, not in a collector's pass.
        del self._parser
        self._lost.add(self)
        if self.gone is not None:
            self.gone(self)
        self._wake()

    def on_message_begin(self) -> None:
        if self.finished:  # a second answer, to no request
            self.stray = True
            raise _Stop

    def on_status(self, status: bytes) -> None:
        self.reason += status.decode("latin-1")  # in pieces if split across segments

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:
            return  # a chunked body's trailer: not part of the answer's headers
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1").rstrip(" \t")  # llhttp keeps trailing whitespace
        headers = self.headers
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if (
            self._received > MAX_HEAD_BYTES
            and _head_size(self.reason, self.headers) > MAX_HEAD_BYTES
        ):
            # Counted only when the bytes received say the head may be too long.
            self._stop(ProtocolError(f"answer head longer than {MAX_HEAD_BYTES} bytes"))
        if status < 200:
            if status == 101:
                self._stop(ProtocolError("the server switched protocols, unasked"))
            self.reason, self.headers = "", {}  # interim: skipped
            return
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            self._stop(ProtocolError(f"not an HTTP/1.x answer: HTTP/{version}"))
        self.status = status
        self.head_done = True
        connection = self.headers.get("connection", "").lower()
        # HTTP/1.1 keeps a connection unless told otherwise; 1.0 only when told to.
        self.keep_alive = (
            "close" not in connection if version == "1.1" else "keep-alive" in connection
        )
        if self._limit >= 0:
            self.sink = Sink(self.headers.get("content-encoding", ""), self._limit)
        if self._head_only:
            self.finished = self.complete = True
            # The parser would read the body the head announces: the next
            # answer on this connection gets a parser of its own.
            self._parser = httptools.HttpResponseParser(self)
            raise _Stop

    def on_body(self, chunk: bytes) -> None:
        sink = self.sink
        if sink is None:  # the answer is not asked for yet
            self._early.append(chunk)
            self._early_bytes += len(chunk)
            if self._early_bytes > _READ_HIGH_WATER and self.transport is not None:
                self.transport.pause_reading()
                self._paused = True
            return
        sink.add(chunk)
        if sink.full:
            self.finished = True
            raise _Stop

    def on_message_complete(self) -> None:
        if self.head_done:  # else an interim answer's end
            self.finished = self.complete = True

    def _stop(self, failure: Exception) -> None:
        self.failure = failure
        self.finished = True
        raise _Stop

    def _broken(self, exc: Exception) -> None:
        """Before the head, `failure` is what the request raises; inside the body, it is cut off."""
        if self.failure is None:
            failure = exc if isinstance(exc, ProtocolError) else None
            self.failure = failure or ProtocolError(f"not an HTTP/1.x answer: {exc}")
        self.finished = True

    async def read_head(self, max_body: int) -> None:
        """Wait for the answer's head; its body is kept up to `max_body`. Raises
        `ProtocolError`, `TimeoutError` and `Disconnected`."""
        self._limit = max_body
        while not self.head_done:
            if self.failure is not None:
                raise self.failure
            if self.expired:
                raise TimeoutError
            if self.eof or self.closed:
                raise Disconnected("the server closed the connection before its answer ended")
            await self._wait()
        if self.sink is None:
            self._take_early()

    async def read_body(self) -> None:
        """Wait for the body's end (`complete`: it came, not cut off). Raises
        `Disconnected` when the peer closed inside a framed body."""
        while not self.finished:
            if self.expired:
                return
            if self.eof or self.closed:
                if not _framed_by_close(self.headers):
                    raise Disconnected("the server closed the connection inside the body")
                self.finished = self.complete = True
                return
            await self._wait()

    def _take_early(self) -> None:
        sink = self.sink = Sink(self.headers.get("content-encoding", ""), self._limit)
        early, self._early, self._early_bytes = self._early, [], 0
        try:
            for chunk in early:
                sink.add(chunk)
                if sink.full:
                    self.finished = True
                    break
        except zlib.error as exc:
            self._broken(exc)
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    @property
    def reusable(self) -> bool:
        return not (self.closed or self.eof or self.stray)

    def expire(self) -> None:
        self.expired = True
        self._wake()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Sink:
    """Decoded body bytes, up to one past the limit (to learn that more would follow)."""

    __slots__ = ("_decoder", "_deflate", "_held", "data", "limit")

    def __init__(self, content_coding: str, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        coding = content_coding.strip().lower()
        gzip = coding in ("gzip", "x-gzip")
        self._decoder = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS) if gzip else None
        self._deflate = coding == "deflate"  # which kind, the first bytes tell
        self._held = b""

    @property
    def full(self) -> bool:
        return len(self.data) > self.limit

    def add(self, chunk: bytes) -> None:
        room = self.limit + 1 - len(self.data)
        if self._deflate:
            chunk = self._held + chunk
            if len(chunk) < 2:
                self._held = chunk
                return
            self._deflate = False
            self._decoder = zlib.decompressobj(_deflate_wbits(chunk))
        if self._decoder is not None:
            chunk = self._decoder.decompress(chunk, room)
        self.data += chunk[:room]

    def result(self, complete: bool) -> tuple[bytes, bool]:
        return bytes(self.data[: self.limit]), complete and not self.full


def _framed_by_close(headers: dict[str, str]) -> bool:
    coding = headers.get("transfer-encoding")
    if coding is not None:
        return coding.lower().rsplit(",", 1)[-1].strip() != "chunked"
    return "content-length" not in headers


def _head_size(reason: str, headers: dict[str, str]) -> int:
    return len(reason) + sum(len(name) + len(value) for name, value in headers.items())


def _deflate_wbits(first: bytes) -> int:
    """`deflate` is zlib (RFC 9110), but servers also send raw DEFLATE, which browsers
    accept: a zlib header has method 8 and makes the first two bytes a multiple of 31."""
    if first[0] & 0x0F == 8 and (first[0] << 8 | first[1]) % 31 == 0:
        return zlib.MAX_WBITS
    return -zlib.MAX_WBITS
