"""A small HTTP/1.1 client for webhook calls: pooled keep-alive connections,
opened only where the SSRF guard allows. This is its public face: the
client, its answers and its errors. Its units: `wire_targets` (what a URL
becomes), `wire_connect` (addresses judged by the guard, Happy Eyeballs,
TLS), `wire_framing` (answers parsed by httptools as they arrive) and
`wire_pool` (idle connections, the per-host limit).

Why not aiohttp's client, which served here first: measured with `python -m
bench.run`, its request path was the largest share of a fire's CPU (see
BENCHMARKS.md), and it sets the body of each request writing from a task
of its own, so a burst's first bytes reach the socket only once every
request of the burst is set up. Here a request is one write of prepared
bytes on a pooled connection, and the answer is parsed in C as its bytes
arrive. `HttpClient.send` makes that write at once (or as soon as a new
connection opens) and `request(..., sent=...)` reads the answer later, so a
burst's requests all leave before any of their tasks runs.

It speaks what webhook receivers answer: http and https, bodies framed by
Content-Length, chunked or the connection's end, gzip and deflate
(zlib-wrapped or raw) content codings, 1xx answers skipped. A reused
connection the peer closed before answering is retried once on a new one,
for idempotent methods only (as aiohttp does); an answer whose body the
peer cuts short is `CutShort`. Not here, on purpose: proxies (the guard
must judge the peer actually connected to), redirects (never followed),
cookies, HTTP/2, pipelining.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import NamedTuple

from cronsvc.netguard import GuardedResolver
from cronsvc.wire_connect import HAPPY_EYEBALLS_DELAY_S, Connector, judge_literal
from cronsvc.wire_framing import MAX_HEAD_BYTES, Connection, Disconnected, ProtocolError
from cronsvc.wire_pool import IDLE_TIMEOUT_S, Pool
from cronsvc.wire_targets import InvalidTarget, Target, parse_target

__all__ = [
    "HAPPY_EYEBALLS_DELAY_S",
    "IDLE_TIMEOUT_S",
    "MAX_HEAD_BYTES",
    "CutShort",
    "Disconnected",
    "HttpClient",
    "InvalidTarget",
    "ProtocolError",
    "Response",
    "Sent",
    "Target",
    "judge_literal",
    "parse_target",
]

_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})


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


class Response(NamedTuple):
    """An answer. (A tuple: one is built per request, and a frozen dataclass
    takes much longer to build.)"""

    status: int
    reason: str
    headers: dict[str, str]
    """Lower-case names; a repeated header's values joined with ", "."""
    body: bytes
    """At most the `max_body` asked for, decoded from its content coding."""
    complete: bool
    """False when the body was cut off: longer than `max_body`, or not read
    to its end before the deadline or a disconnect."""


_Exchange = tuple["Connection", asyncio.TimerHandle, bool]
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
        connector = Connector(guard, ssl_context)
        self._pool = Pool(connector.connect, max_idle=max_idle, max_per_host=max_per_host)

    async def aclose(self) -> None:
        self._pool.close()
        await asyncio.sleep(0)  # let the transports finish closing

    def send(self, target: Target, data: bytes, *, deadline: float) -> Sent:
        """Start sending `data` (request line, headers and body, ready to go):
        written before this returns on an idle connection to `target`, else
        as soon as a new one opens (in a task of its own, so a burst's new
        connections open together). `request(..., sent=...)` reads the
        answer; `Sent.cancel` lets it go."""
        connection = self._pool.reuse(target)
        if connection is None:
            return Sent(None, asyncio.create_task(self._open_and_write(target, data, deadline)))
        return Sent((connection, _write(connection, data, deadline), True), None)

    async def _open_and_write(self, target: Target, data: bytes, deadline: float) -> _Exchange:
        async with asyncio.timeout_at(deadline):
            connection, reused = await self._pool.open(target, fresh=False)
        return connection, _write(connection, data, deadline), reused

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
                timer = _write(connection, data, deadline)
            try:
                try:
                    await connection.read_head(max_body)
                except Disconnected:
                    connection.close()
                    if reused and method in _IDEMPOTENT:
                        continue  # closed while idle: the request never reached it
                    raise
                except BaseException:
                    connection.close()
                    raise
                return await self._finish(connection)
            finally:
                timer.cancel()
        raise Disconnected("the server closed the connection before its answer ended")

    async def _finish(self, connection: Connection) -> Response:
        try:
            try:
                await connection.read_body()
                cut_short = False
            except Disconnected:
                cut_short = True
        except BaseException:
            connection.close()
            raise
        sink = connection.sink
        assert sink is not None
        body, complete = sink.result(connection.complete and not cut_short)
        response = Response(
            connection.status, connection.reason, connection.headers, body, complete
        )
        if cut_short:
            connection.close()
            raise CutShort(response)
        if complete and connection.keep_alive and connection.reusable:
            self._pool.release(connection)
        else:
            connection.close()
        return response

    async def _acquire(
        self, target: Target, deadline: float, *, fresh: bool = False
    ) -> tuple[Connection, bool]:
        """An idle connection to `target` (unless `fresh`), else a new one;
        and whether it was reused."""
        if not fresh and (connection := self._pool.reuse(target)) is not None:
            return connection, True
        async with asyncio.timeout_at(deadline):
            return await self._pool.open(target, fresh=fresh)


def _write(connection: Connection, data: bytes, deadline: float) -> asyncio.TimerHandle:
    """Write a request (its method read off its first bytes, for a HEAD
    answer has no body); the returned timer ends the wait for its answer at
    `deadline`. (One timer per exchange: two asyncio.timeout blocks per
    request were a visible share of a burst's CPU.)"""
    connection.begin(head_only=data.startswith(b"HEAD "))
    timer = asyncio.get_running_loop().call_at(deadline, connection.expire)
    assert connection.transport is not None
    try:
        connection.transport.write(data)
    except BaseException:
        timer.cancel()
        connection.close()
        raise
    return timer
