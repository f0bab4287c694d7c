"""A small HTTP/1.1 client for webhook calls, the face of `wire_connect`, `wire_framing` and
`wire_pool`: pooled keep-alive connections, opened only where the SSRF guard allows. Not
aiohttp's client: its request path was a fire's largest CPU share, and it writes each body
from a task, so a burst's first bytes left only once all were set up (BENCHMARKS.md).

Not here, on purpose: proxies (the guard must judge the peer actually connected to),
redirects (never followed), cookies, HTTP/2, pipelining."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import NamedTuple

from cronsvc.netguard import GuardedResolver
from cronsvc.wire_connect import Connector, InvalidTarget, Target, parse_target
from cronsvc.wire_framing import Connection, Disconnected, ProtocolError
from cronsvc.wire_pool import Pool

__all__ = [
    "CutShort",
    "HttpClient",
    "InvalidTarget",
    "ProtocolError",
    "Response",
    "Sent",
    "Target",
    "parse_target",
]

_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})


class CutShort(Disconnected):
    """The peer closed the connection inside a framed body; `response` holds what came."""

    def __init__(self, response: Response) -> None:
        self.response = response
        label = f"HTTP {response.status} {response.reason}".rstrip()
        super().__init__(
            f"{label}, then the server closed the connection before the answer's body ended"
        )


class Response(NamedTuple):
    """An answer. (A tuple: built per request, and a frozen dataclass is much slower.)"""

    status: int
    reason: str
    headers: dict[str, str]
    """Lower-case names; a repeated header's values joined with ", "."""
    body: bytes
    """Decoded from its content coding; at most `max_body` bytes."""
    complete: bool
    """False when the body was cut off: too long, or the deadline or a disconnect came."""


_Exchange = tuple["Connection", asyncio.TimerHandle, bool]
"""A connection a request was written on, the timer of its deadline, and
whether the connection was reused."""


@dataclass(slots=True, eq=False)
class Sent:
    """A request `HttpClient.send` started, written or to be once its connection opens."""

    _written: _Exchange | None
    _opening: asyncio.Task[_Exchange] | None

    async def connected(self) -> _Exchange:
        if self._opening is None:
            assert self._written is not None
            return self._written
        try:
            return await self._opening
        except asyncio.CancelledError:
            self.cancel()  # a connection opened meanwhile is closed
            raise

    def cancel(self) -> None:
        """Let the request go unanswered; its connection is closed."""
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
    """At most `max_idle` connections kept idle; with `max_per_host`, at most that many
    open to one host, idle ones included. Connections go to exactly the addresses
    `guard` judged."""

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
        """Write `data` now on an idle connection, else once a new one opens (in a task,
        so a burst's connections open together); `request(..., sent=...)` reads the answer."""
        connection = self._pool.reuse(target)
        if connection is None:
            return Sent(None, asyncio.create_task(self._open_and_write(target, data, deadline)))
        return Sent((connection, _write(connection, data, deadline), True), None)

    async def _open_and_write(
        self, target: Target, data: bytes, deadline: float, *, fresh: bool = False
    ) -> _Exchange:
        async with asyncio.timeout_at(deadline):
            connection, reused = await self._pool.open(target, fresh=fresh)
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
        """Send `data` (unless `sent` did) and read the answer by `deadline` (the loop's
        clock); a body still arriving then is returned cut off. A reused connection
        the peer closed first is retried once on a new one, for idempotent methods.

        Raises `TargetNotAllowed`, `TimeoutError` (before the answer's head), `OSError`
        (`Disconnected`; `CutShort` inside the body) and `ProtocolError`.
        """
        for fresh in (False, True):
            if sent is not None:
                exchange = await sent.connected()
                sent = None
            elif not fresh and (idle := self._pool.reuse(target)) is not None:
                exchange = (idle, _write(idle, data, deadline), True)
            else:
                exchange = await self._open_and_write(target, data, deadline, fresh=fresh)
            connection, timer, reused = exchange
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
        cut_short = False
        try:
            await connection.read_body()
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


def _write(connection: Connection, data: bytes, deadline: float) -> asyncio.TimerHandle:
    """Write a request (a HEAD's answer has no body); the timer ends the wait for its
    answer at `deadline`. (Two asyncio.timeout blocks per request cost a burst's CPU.)"""
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
