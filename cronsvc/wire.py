"""A small HTTP/1.1 client for webhook calls: pooled keep-alive connections,
opened only where the SSRF guard allows.

Why not aiohttp's client, which served here first: measured with `python -m
bench.run`, its request path was the largest share of a fire's CPU (py-spy:
~29 % of ~0.8 ms per fire), and it sets the body of each request writing from
a task of its own, so a burst's first bytes reach the socket only once every
request of the burst is set up. Here a request is one write of prepared
bytes on a pooled connection, and the answer is read from the socket buffer
by a strict parser. `HttpClient.send` makes that write at once (or as soon as
a new connection opens) and `request(..., sent=...)` reads the answer later,
so a burst's requests all leave before any of their tasks runs.

It speaks what webhook receivers answer: http and https (certificates
verified against the system's trust store, the server name without a
trailing dot), bodies framed by Content-Length, chunked or the connection's
end, gzip and deflate (zlib-wrapped or raw) content codings, 1xx answers
skipped. A name with several addresses is connected to as RFC 8305 says
(Happy Eyeballs: the next address is tried after 250 ms without waiting for
the first to fail), so one address that never answers cannot spend the
whole timeout. A reused connection the peer closed before answering is
retried once on a new one, for idempotent methods only (as aiohttp does);
an answer whose body the peer cuts short is `CutShort`. Not here, on
purpose: proxies (the guard must judge the peer actually connected to),
redirects (never followed), cookies, HTTP/2, pipelining.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple, cast
from urllib.parse import urlsplit

import aiohappyeyeballs
from yarl import URL

from cronsvc.errors import TargetNotAllowed
from cronsvc.netguard import GuardedResolver, TargetPolicy, literal_address

MAX_HEAD_BYTES = 64 * 1024
"""Status line and headers of an answer, at most."""
IDLE_TIMEOUT_S = 15.0
"""An idle pooled connection is closed after this long (aiohttp's keep-alive default)."""
HAPPY_EYEBALLS_DELAY_S = 0.25
"""RFC 8305's Connection Attempt Delay (its recommended value, and aiohttp's):
how long one address may go unanswered before the next is tried beside it."""
_READ_HIGH_WATER = 256 * 1024
"""Buffered bytes past which the socket is not read until they are consumed."""
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
_NO_BODY_STATUS = frozenset({204, 304})
_DEFAULT_PORTS = {"http": 80, "https": 443}

_MAX_HOST_NAME = 253
_MAX_LABEL = 63
_LABEL = re.compile(r"[A-Za-z0-9_-]+")

_PoolKey = tuple[str, str, int]


class InvalidTarget(ValueError):
    """A URL no request can be sent to: not http(s), no host, a bad port."""


class ProtocolError(Exception):
    """The peer's answer is not HTTP/1.x as this client reads it."""


class Disconnected(ConnectionError):
    """The peer closed the connection before its answer was complete."""


class CutShort(Disconnected):
    """The peer closed the connection after the answer's head, before the end
    its framing announced (Content-Length, or the last chunk): the status
    came, the answer did not. `response` holds what was read of it."""

    def __init__(self, response: Response) -> None:
        self.response = response
        label = f"HTTP {response.status} {response.reason}".rstrip()
        super().__init__(
            f"{label}, then the server closed the connection before the answer's body ended"
        )


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL's requests go: parsed once per URL and reused."""

    tls: bool
    host: str
    """What to connect to: a name (a trailing dot kept: it says the name is
    fully qualified), or an address (IPv6 without brackets)."""
    port: int
    host_header: str
    """The Host header: the name without a trailing dot, as certificates and
    virtual hosts know it, and the port unless it is the scheme's."""
    request_target: str
    """Path and query, percent-encoded as the URL had them."""
    server_name: str
    """The TLS server name (SNI and the certificate check): the host without
    a trailing dot."""
    url: str
    """The URL as given, for clients that take one."""

    @property
    def pool_key(self) -> _PoolKey:
        return ("https" if self.tls else "http", self.host, self.port)


@lru_cache(maxsize=4096)
def parse_target(url: str) -> Target:
    """Raises `InvalidTarget`."""
    try:
        parsed = URL(url)
        scheme, host, port = parsed.scheme, parsed.raw_host, parsed.port
    except (TypeError, ValueError) as exc:
        raise InvalidTarget(f"not a valid URL: {exc}") from None
    if scheme not in _DEFAULT_PORTS:
        raise InvalidTarget(f"not an http or https URL: {url[:200]}")
    if not host or port is None:
        raise InvalidTarget(f"names no host: {url[:200]}")
    if parsed.raw_user is not None or parsed.raw_password is not None:
        # The API refuses them; a URL with credentials is never sent as it is.
        raise InvalidTarget("credentials in a URL are not sent; use headers")
    if not 0 < port < 65536:
        raise InvalidTarget(f"port {port} is out of range")
    problem = _host_problem(url, host)
    if problem is not None:
        raise InvalidTarget(problem)
    server_name = host if ":" in host else host.removesuffix(".")
    name = f"[{host}]" if ":" in host else server_name
    host_header = name if port == _DEFAULT_PORTS[scheme] else f"{name}:{port}"
    return Target(
        tls=scheme == "https",
        host=host,
        port=port,
        host_header=host_header,
        request_target=parsed.raw_path_qs or "/",
        server_name=server_name,
        url=url,
    )


def _host_problem(url: str, host: str) -> str | None:
    """Why no request can reach `host`, the raw host of `url` (IDNA-encoded,
    an IPv6 address without its brackets), or None. A name must be one DNS
    can hold: labels of 1 to 63 letters, digits, '-' or '_' (found in
    service names), 253 characters in all."""
    if ":" in host:
        return None  # an IPv6 address, which yarl has checked
    try:
        authority = urlsplit(url).netloc
    except ValueError:
        return "not a valid URL"
    if authority.rpartition("@")[2].startswith("["):
        return "only an IPv6 address may stand in brackets"
    name = host.removesuffix(".")
    if len(name) > _MAX_HOST_NAME:
        return f"the host name is longer than {_MAX_HOST_NAME} characters"
    for label in name.split("."):
        if not label:
            return "the host name has an empty label (two dots in a row)"
        if len(label) > _MAX_LABEL:
            return f"the host name has a label longer than {_MAX_LABEL} characters"
        if not _LABEL.fullmatch(label):
            return (
                f"the host {host[:100]!r} holds characters no host name can: "
                "letters, digits, '-' and '_' between dots"
            )
    return None


class Response(NamedTuple):
    """An answer. (Tuples, this and `_Head`: one of each per request, and
    a frozen dataclass costs ~2.5x as much to build.)"""

    status: int
    reason: str
    headers: dict[str, str]
    """Lower-case names; a repeated header's values joined with ", "."""
    body: bytes
    """At most the `max_body` asked for, decoded from its content coding."""
    complete: bool
    """False when the body was cut off: longer than `max_body`, or not read
    to its end before the deadline or a disconnect."""


_Exchange = tuple["_Connection", asyncio.TimerHandle, bool]
"""A connection a request was written on, the timer of its deadline, and
whether the connection was reused."""


class Sent:
    """A request `HttpClient.send` started: written, or to be written once
    its connection opens; its answer is still to be read."""

    __slots__ = ("_opening", "_written")

    def __init__(self, written: _Exchange | None, opening: asyncio.Task[_Exchange] | None) -> None:
        self._written = written
        self._opening = opening

    async def connected(self) -> _Exchange:
        """Raises what opening the connection raised (`HttpClient.request`'s
        errors)."""
        if self._opening is None:
            assert self._written is not None
            return self._written
        try:
            return await self._opening
        except asyncio.CancelledError:
            self.cancel()  # a connection opened meanwhile is closed
            raise

    def cancel(self) -> None:
        """Let the request go unanswered: its connection is closed."""
        opening = self._opening
        if opening is None:
            exchange = self._written
        elif not opening.done():
            opening.cancel()
            return
        elif opening.cancelled() or opening.exception() is not None:
            return
        else:
            exchange = opening.result()
        assert exchange is not None
        connection, timer, _ = exchange
        timer.cancel()
        connection.close()


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; the reading side of the exchange."""

    def __init__(
        self,
        key: _PoolKey,
        lost: set[_Connection],
        gone: Callable[[_Connection], None] | None = None,
    ) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False
        self.eof = False
        self.expired = False
        self.idle_since = 0.0
        self._lost = lost
        self.gone = gone
        """Called once the connection has ended, when its host's connections
        are counted (a per-host limit); set once it is open."""
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _READ_HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
            self._paused = True
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._lost.add(self)
        if self.gone is not None:
            self.gone(self)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def expire(self) -> None:
        """The exchange's deadline has passed: the wait for bytes ends."""
        self.expired = True
        self._wake()

    @property
    def reusable(self) -> bool:
        return not (self.closed or self.eof or self.buffer)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def consume(self, count: int) -> bytes:
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        if self._paused and len(self.buffer) <= _READ_HIGH_WATER // 2:
            assert self.transport is not None
            self._paused = False
            self.transport.resume_reading()
        return data

    async def more(self) -> None:
        """Wait for more bytes; `Disconnected` if none can come, TimeoutError
        once the exchange's deadline has passed."""
        if self.expired:
            raise TimeoutError
        if self.eof or self.closed:
            raise Disconnected("the server closed the connection before its answer ended")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self.expired:
            raise TimeoutError


class HttpClient:
    """Sends requests over pooled connections; at most `max_idle` are kept
    idle in all, each for up to `IDLE_TIMEOUT_S`. With `max_per_host`, at
    most that many connections are open to one host (scheme, host, port)
    at once, idle ones included; a request past it waits for one of them.

    Names are resolved through `guard`, which refuses an answer holding any
    address its policy refuses, and the connection goes to exactly the
    addresses it judged; an address-literal host is judged here before any
    connection is made.
    """

    def __init__(
        self,
        *,
        guard: GuardedResolver,
        max_idle: int,
        ssl_context: ssl.SSLContext | None = None,
        max_per_host: int = 0,
    ) -> None:
        self._guard = guard
        self._max_idle = max_idle
        self._ssl = ssl_context
        self._idle: dict[_PoolKey, list[_Connection]] = {}
        self._idle_order: OrderedDict[_Connection, None] = OrderedDict()
        self._open: set[_Connection] = set()
        self._lost: set[_Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._hosts = _HostLimit(max_per_host) if max_per_host else None

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()
        self._idle_order.clear()
        await asyncio.sleep(0)  # let the transports finish closing

    def send(self, target: Target, data: bytes, *, deadline: float) -> Sent:
        """Start sending `data` (request line, headers and body, ready to go):
        written before this returns on an idle connection to `target`, else
        as soon as a new one opens (in a task of its own, so a burst's new
        connections open together). `request(..., sent=...)` reads the
        answer; `Sent.cancel` lets it go."""
        connection = self._reuse(target)
        if connection is None:
            return Sent(None, asyncio.create_task(self._open_and_write(target, data, deadline)))
        return Sent((connection, self._write(connection, data, deadline), True), None)

    async def _open_and_write(self, target: Target, data: bytes, deadline: float) -> _Exchange:
        async with asyncio.timeout_at(deadline):
            if self._hosts is None:
                connection, reused = await self._connect(target), False
            else:
                connection, reused = await self._within_limit(self._hosts, target, fresh=False)
        return connection, self._write(connection, data, deadline), reused

    @staticmethod
    def _write(connection: _Connection, data: bytes, deadline: float) -> asyncio.TimerHandle:
        """Write a request; the returned timer ends the wait for its answer
        at `deadline`. (One timer per exchange: two asyncio.timeout blocks
        per request were ~7 % of a burst's CPU.)"""
        timer = asyncio.get_running_loop().call_at(deadline, connection.expire)
        assert connection.transport is not None
        try:
            connection.transport.write(data)
        except BaseException:
            timer.cancel()
            connection.close()
            raise
        return timer

    async def request(
        self,
        method: str,
        target: Target,
        data: bytes,
        *,
        deadline: float,
        max_body: int,
        sent: Sent | None = None,
    ) -> Response:
        """Send `data` (request line, headers and body, ready to go) and read
        the answer, all by `deadline` (the loop's clock) except the body: a
        body still arriving then is returned cut off (`complete` False).
        `sent`: `data` is on its way already (`send`, by the same deadline).

        Raises `TargetNotAllowed`, `TimeoutError` (before the answer's head),
        `OSError` (`Disconnected` among them; `CutShort` when the peer hangs
        up inside the body) and `ProtocolError`.
        """
        for fresh in (False, True):
            if sent is not None:
                connection, timer, reused = await sent.connected()
                sent = None
            else:
                connection, reused = await self._acquire(target, deadline, fresh=fresh)
                timer = self._write(connection, data, deadline)
            try:
                try:
                    head = await _read_head(connection)
                except Disconnected:
                    connection.close()
                    if reused and method in _IDEMPOTENT:
                        continue  # closed while idle: the request never reached it
                    raise
                except BaseException:
                    connection.close()
                    raise
                return await self._finish(connection, method, head, max_body)
            finally:
                timer.cancel()
        raise Disconnected("the server closed the connection before its answer ended")

    async def _finish(
        self, connection: _Connection, method: str, head: _Head, max_body: int
    ) -> Response:
        sink = _Sink(head.headers.get("content-encoding", ""), max_body)
        cut_short = False
        try:
            try:
                complete = await _read_body(connection, method, head, sink)
            except Disconnected:
                complete, cut_short = False, True
            except (TimeoutError, OSError, ProtocolError, zlib.error):
                complete = False  # what was read so far stands, cut off
        except BaseException:
            connection.close()
            raise
        body, complete = sink.result(complete)
        if cut_short:
            connection.close()
            raise CutShort(Response(head.status, head.reason, head.headers, body, False))
        if complete and head.keep_alive and connection.reusable:
            self._release(connection)
        else:
            connection.close()
        return Response(
            status=head.status,
            reason=head.reason,
            headers=head.headers,
            body=body,
            complete=complete,
        )

    async def _acquire(
        self, target: Target, deadline: float, *, fresh: bool = False
    ) -> tuple[_Connection, bool]:
        """An idle connection to `target` (unless `fresh`), else a new one;
        and whether it was reused."""
        if not fresh and (connection := self._reuse(target)) is not None:
            return connection, True
        async with asyncio.timeout_at(deadline):
            if self._hosts is None:
                return await self._connect(target), False
            return await self._within_limit(self._hosts, target, fresh=fresh)

    async def _within_limit(
        self, hosts: _HostLimit, target: Target, *, fresh: bool
    ) -> tuple[_Connection, bool]:
        """A connection to `target` within its host's limit: an idle one
        (unless `fresh`), else a new one once the host has room; and whether
        it was reused. A `fresh` one at the limit closes an idle one to make
        room."""
        key = target.pool_key
        while True:
            if (idle := self._reuse(target)) is not None:
                if not fresh:
                    return idle, True
                idle.close()  # its end makes room, below
            elif hosts.try_take(key):
                try:
                    connection = await self._connect(target)
                except BaseException:
                    hosts.give(key)
                    raise
                if connection.closed:  # ended before it could be counted
                    hosts.give(key)
                else:
                    connection.gone = hosts.gone
                return connection, False
            await hosts.wait(key)

    def _reuse(self, target: Target) -> _Connection | None:
        """An idle connection to `target` still fit to carry a request, or None."""
        self._forget_lost()
        now = asyncio.get_running_loop().time()
        while (connection := self._take_idle(target.pool_key)) is not None:
            if connection.reusable and now - connection.idle_since < IDLE_TIMEOUT_S:
                connection.expired = False
                return connection
            connection.close()
        return None

    async def _connect(self, target: Target) -> _Connection:
        addresses = await self._resolve(target)
        if not addresses:
            raise OSError(f"{target.host} resolved to no address")
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        if target.tls:
            tls = self._ssl or _default_ssl_context()
        server_name = target.server_name if tls is not None else None
        connection = _Connection(target.pool_key, self._lost)
        if len(addresses) == 1:
            family, address = addresses[0]
            await loop.create_connection(
                lambda: connection,
                address,
                target.port,
                family=family,
                ssl=tls,
                server_hostname=server_name,
            )
        else:
            sock = await aiohappyeyeballs.start_connection(
                [_addr_info(family, address, target.port) for family, address in addresses],
                happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY_S,
                interleave=1,
            )
            try:
                await loop.create_connection(
                    lambda: connection, sock=sock, ssl=tls, server_hostname=server_name
                )
            except BaseException:
                sock.close()
                raise
        self._open.add(connection)
        return connection

    async def _resolve(self, target: Target) -> list[tuple[int, str]]:
        """The addresses to try, each judged by the guard's policy."""
        literal = judge_literal(self._guard.policy, target.host)
        if literal is not None:
            return [literal]
        answer = await self._guard.resolve(target.host, target.port, socket.AF_UNSPEC)
        return [(entry["family"], entry["host"]) for entry in answer]

    def _release(self, connection: _Connection) -> None:
        if self._hosts is not None:
            self._hosts.wake(connection.key)  # a request waiting for room takes it
        connection.idle_since = asyncio.get_running_loop().time()
        self._idle.setdefault(connection.key, []).append(connection)
        self._idle_order[connection] = None
        while len(self._idle_order) > self._max_idle:
            oldest = next(iter(self._idle_order))
            self._drop_idle(oldest)
            oldest.close()
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(IDLE_TIMEOUT_S, self._sweep)

    def _sweep(self) -> None:
        """Close the connections idle past `IDLE_TIMEOUT_S` (oldest first)."""
        self._sweeper = None
        self._forget_lost()
        now = asyncio.get_running_loop().time()
        while self._idle_order:
            oldest = next(iter(self._idle_order))
            if now - oldest.idle_since < IDLE_TIMEOUT_S:
                break
            self._drop_idle(oldest)
            oldest.close()
        if self._idle_order:
            self._sweeper = asyncio.get_running_loop().call_later(IDLE_TIMEOUT_S / 2, self._sweep)

    def _forget_lost(self) -> None:
        """Drop the connections that ended since the last look (the peer
        closed them, most often while idle)."""
        if not self._lost:
            return
        for connection in self._lost:
            self._open.discard(connection)
            if connection in self._idle_order:
                self._drop_idle(connection)
        self._lost.clear()

    def _take_idle(self, key: _PoolKey) -> _Connection | None:
        """The most recently idled connection for `key`, off the idle lists."""
        idle = self._idle.get(key)
        if not idle:
            return None
        connection = idle.pop()  # from the end: no search on the hot path
        del self._idle_order[connection]
        if not idle:
            del self._idle[key]
        return connection

    def _drop_idle(self, connection: _Connection) -> None:
        """Off the idle lists; a host's list goes with its last connection,
        so hosts called once do not pile up."""
        del self._idle_order[connection]
        idle = self._idle[connection.key]
        idle.remove(connection)
        if not idle:
            del self._idle[connection.key]


def judge_literal(policy: TargetPolicy, host: str) -> tuple[int, str] | None:
    """The address family and address an address-literal host names, once
    `policy` allows it (else `TargetNotAllowed`); None for a name, which the
    guard judges when it is resolved. A host that looks like an address but
    is none is refused: no resolver ever sees it."""
    literal = literal_address(host)
    if literal is not None:
        policy.check(literal, host=host)
        return (socket.AF_INET6 if literal.version == 6 else socket.AF_INET, str(literal))
    if ":" in host or host.replace(".", "").isdigit():
        raise TargetNotAllowed(host, host, "not a valid IP address")
    return None


class _HostLimit:
    """The connections open to each host, against a limit, and the requests
    waiting for room or for an idle connection of theirs, first come first
    served."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[_PoolKey, int] = {}
        self._waiters: dict[_PoolKey, deque[asyncio.Future[None]]] = {}

    def try_take(self, key: _PoolKey) -> bool:
        count = self._open.get(key, 0)
        if count >= self.limit:
            return False
        self._open[key] = count + 1
        return True

    def give(self, key: _PoolKey) -> None:
        """A connection of `key` ended, or was never made: room for another."""
        count = self._open[key] - 1
        if count:
            self._open[key] = count
        else:
            del self._open[key]
        self.wake(key)

    def gone(self, connection: _Connection) -> None:
        self.give(connection.key)

    def wake(self, key: _PoolKey) -> None:
        """Let the first request waiting on `key` look again."""
        waiters = self._waiters.get(key)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break
        if waiters is not None and not waiters:
            del self._waiters[key]

    async def wait(self, key: _PoolKey) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, deque()).append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.wake(key)  # woken just as it was cancelled: pass it on
            else:
                waiters = self._waiters.get(key)
                if waiters is not None and waiter in waiters:
                    waiters.remove(waiter)
                    if not waiters:
                        del self._waiters[key]
            raise


def _addr_info(family: int, address: str, port: int) -> aiohappyeyeballs.AddrInfoType:
    sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
    return (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)


@lru_cache(maxsize=1)
def _default_ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()


class _Head(NamedTuple):
    status: int
    reason: str
    headers: dict[str, str]
    keep_alive: bool


async def _read_head(connection: _Connection) -> _Head:
    """The answer's status line and headers, skipping 1xx interim answers."""
    while True:
        buffer = connection.buffer
        end = buffer.find(b"\r\n\r\n")
        while end < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                raise ProtocolError(f"answer head longer than {MAX_HEAD_BYTES} bytes")
            await connection.more()
            end = buffer.find(b"\r\n\r\n")
        if end > MAX_HEAD_BYTES:
            raise ProtocolError(f"answer head longer than {MAX_HEAD_BYTES} bytes")
        head = _parse_head(connection.consume(end + 4)[:end])
        if not 100 <= head.status < 200:
            return head
        if head.status == 101:
            raise ProtocolError("the server switched protocols, unasked")


def _parse_head(raw: bytes) -> _Head:
    lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:100]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or line[0] in " \t":
            raise ProtocolError(f"malformed header line: {line[:100]!r}")
        name = name.lower()
        value = value.strip(" \t")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    connection = headers.get("connection", "").lower()
    # HTTP/1.1 keeps a connection unless told otherwise; 1.0 only when told to.
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    return _Head(status=int(code), reason=reason, headers=headers, keep_alive=keep_alive)


async def _read_body(connection: _Connection, method: str, head: _Head, sink: _Sink) -> bool:
    """Read the body into `sink`; True if it was read to its end."""
    if method == "HEAD" or head.status in _NO_BODY_STATUS:
        return True
    coding = head.headers.get("transfer-encoding")
    if coding is not None:
        if coding.lower().rsplit(",", 1)[-1].strip() == "chunked":
            return await _read_chunked(connection, sink)
        return await _read_to_close(connection, sink)
    length_text = head.headers.get("content-length")
    if length_text is None:
        return await _read_to_close(connection, sink)
    if not length_text.isdigit():
        raise ProtocolError(f"bad Content-Length: {length_text[:50]!r}")
    return await _read_exactly(connection, sink, int(length_text))


class _Sink:
    """Collects decoded body bytes, up to one past the limit (to learn that
    more would follow)."""

    def __init__(self, content_coding: str, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        coding = content_coding.strip().lower()
        self._decoder: zlib._Decompress | None = None
        self._deflate = False
        self._held = b""
        if coding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            self._deflate = True  # which kind, the first bytes tell

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
        complete = complete and not self.full
        return bytes(self.data[: self.limit]), complete


def _deflate_wbits(first: bytes) -> int:
    """`deflate` is a zlib stream (RFC 9110), but servers also send a raw
    DEFLATE one (as browsers and aiohttp accept): a zlib header is a
    compression method of 8 and a check that makes the first two bytes a
    multiple of 31."""
    if first[0] & 0x0F == 8 and (first[0] << 8 | first[1]) % 31 == 0:
        return zlib.MAX_WBITS
    return -zlib.MAX_WBITS


async def _read_exactly(connection: _Connection, sink: _Sink, length: int) -> bool:
    while length > 0:
        if not connection.buffer:
            await connection.more()
        chunk = connection.consume(length)
        length -= len(chunk)
        sink.add(chunk)
        if sink.full:
            return False
    return True


async def _read_to_close(connection: _Connection, sink: _Sink) -> bool:
    """Read until the peer closes; the connection is done for afterwards."""
    while True:
        if connection.buffer:
            sink.add(connection.consume(len(connection.buffer)))
            if sink.full:
                return False
            continue
        try:
            await connection.more()
        except Disconnected:
            return True


async def _read_chunked(connection: _Connection, sink: _Sink) -> bool:
    while True:
        line = await _read_line(connection)
        size_text = line.split(b";", 1)[0].strip()
        if not size_text or size_text.strip(b"0123456789abcdefABCDEF") or len(size_text) > 16:
            raise ProtocolError(f"bad chunk size: {size_text[:20]!r}")
        size = int(size_text, 16)
        if size == 0:
            while await _read_line(connection):  # trailers, up to the empty line
                pass
            return True
        if not await _read_exactly(connection, sink, size):
            return False
        if await _read_line(connection):
            raise ProtocolError("chunk data longer than its size")


async def _read_line(connection: _Connection) -> bytes:
    buffer = connection.buffer
    end = buffer.find(b"\r\n")
    while end < 0:
        if len(buffer) > MAX_HEAD_BYTES:
            raise ProtocolError("line too long in a chunked body")
        await connection.more()
        end = buffer.find(b"\r\n")
    return connection.consume(end + 2)[:-2]
