"""The webhook client on aiohttp's `ClientSession`: the same role as
`cronsvc.wire.HttpClient`, chosen with `webhook.http_client = "aiohttp"`, so
the two can be measured against each other on the same bench.

One session over one `TCPConnector`: at most `max_connections` connections
in use, at most `max_per_host` to one host (0: no limit of its own), kept
idle up to `wire.IDLE_TIMEOUT_S`. Names are resolved through the SSRF guard
(`GuardedResolver`) with no DNS cache, so every new connection goes to
addresses judged for it; aiohttp hands address literals to no resolver, so
those are judged here first (`wire.judge_literal`). aiohttp connects as
RFC 8305 says (Happy Eyeballs, `wire.HAPPY_EYEBALLS_DELAY_S`), sends the TLS
server name and the Host header without a trailing dot, decodes gzip and
deflate (zlib-wrapped or raw) and reads chunked and close-framed bodies.
Not followed: redirects. Not kept: cookies (`DummyCookieJar`). Not taken
from the environment: proxies (`trust_env=False`): the guard must judge the
peer actually connected to.

It answers as `HttpClient` does: a `wire.Response` (lower-case header names,
the body decoded and cut at `max_body`, cut off too when the deadline passes
while it arrives), and the same errors: `TimeoutError` before the head,
`OSError` for the connection (the system's own error where aiohttp wraps
one), `wire.Disconnected` when the peer hangs up before answering,
`wire.CutShort` when it hangs up inside the body, `wire.ProtocolError` for
an answer that is not HTTP/1.x. A reused connection the peer closed is
retried by aiohttp for idempotent methods.

The dispatcher's burst path degrades here: aiohttp writes a request only
from inside `ClientSession.request`, so `send` starts that call in a task of
its own at once; the request leaves when the loop first runs the task, not
before `send` returns as on a kept `HttpClient` connection.
"""

from __future__ import annotations

import asyncio
import ssl
from functools import lru_cache

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from cronsvc.netguard import GuardedResolver
from cronsvc.wire import (
    HAPPY_EYEBALLS_DELAY_S,
    IDLE_TIMEOUT_S,
    CutShort,
    Disconnected,
    InvalidTarget,
    ProtocolError,
    Response,
    Target,
    judge_literal,
)

_Header = tuple[str, str]


class AioSent:
    """A request `AioClient.send` started: its task runs it up to the
    answer's head."""

    __slots__ = ("_head",)

    def __init__(self, head: asyncio.Task[aiohttp.ClientResponse]) -> None:
        self._head = head

    async def answer(self) -> aiohttp.ClientResponse:
        try:
            return await self._head
        except asyncio.CancelledError:
            self.cancel()
            raise

    def cancel(self) -> None:
        """Let the request go unanswered: its connection is closed."""
        head = self._head
        if not head.done():
            head.cancel()
        elif not head.cancelled() and head.exception() is None:
            head.result().close()


class AioClient:
    """Sends webhook requests through one aiohttp `ClientSession`. Make it
    inside the running loop; `aclose` closes the session and its connections
    (not `guard`, which the caller owns)."""

    def __init__(
        self,
        *,
        guard: GuardedResolver,
        max_connections: int,
        ssl_context: ssl.SSLContext | None = None,
        max_per_host: int = 0,
    ) -> None:
        self._policy = guard.policy
        connector = aiohttp.TCPConnector(
            limit=max_connections,
            limit_per_host=max_per_host,
            resolver=guard,
            use_dns_cache=False,
            ssl=ssl_context if ssl_context is not None else True,
            keepalive_timeout=IDLE_TIMEOUT_S,
            happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY_S,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            timeout=aiohttp.ClientTimeout(),  # the deadlines are the caller's
        )

    async def aclose(self) -> None:
        await self._session.close()

    def send(self, target: Target, data: bytes, *, deadline: float) -> AioSent:
        """Start sending `data` (request line, headers and body) in a task of
        its own; `request(..., sent=...)` reads the answer, `AioSent.cancel`
        lets it go."""
        return AioSent(asyncio.create_task(self._head(target, data, deadline)))

    async def request(
        self,
        method: str,
        target: Target,
        data: bytes,
        *,
        deadline: float,
        max_body: int,
        sent: AioSent | None = None,
    ) -> Response:
        """As `HttpClient.request`: the head by `deadline`, the body until
        then (cut off after), at most `max_body` bytes of it decoded.
        (`method` is the one in `data`'s request line.)"""
        if sent is None:
            response = await self._head(target, data, deadline)
        else:
            response = await sent.answer()
        return await _read(response, deadline, max_body)

    async def _head(self, target: Target, data: bytes, deadline: float) -> aiohttp.ClientResponse:
        judge_literal(self._policy, target.host)
        method, headers, body = _parts(data)
        try:
            async with asyncio.timeout_at(deadline):
                return await self._session.request(
                    method,
                    _url(target.url),
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                )
        except aiohttp.ClientConnectorError as exc:
            raise _system_error(exc) from None
        except aiohttp.ServerDisconnectedError:
            raise Disconnected("the server closed the connection before its answer ended") from None
        except aiohttp.ClientResponseError as exc:
            raise ProtocolError(exc.message or "the answer is not HTTP/1.x") from None
        except aiohttp.InvalidURL as exc:
            raise InvalidTarget(f"not a valid URL: {exc}") from None
        except aiohttp.ClientError as exc:
            if isinstance(exc, OSError):
                raise
            raise OSError(str(exc) or "the connection failed") from None


async def _read(response: aiohttp.ClientResponse, deadline: float, max_body: int) -> Response:
    """The answer with its body: what arrives by `deadline`, up to one byte
    past `max_body` (to learn that more would follow)."""
    body = bytearray()
    complete = True
    try:
        try:
            async with asyncio.timeout_at(deadline):
                while len(body) <= max_body:
                    chunk = await response.content.read(max_body + 1 - len(body))
                    if not chunk:
                        break
                    body += chunk
        except aiohttp.ClientPayloadError:  # the connection ended inside the body
            response.close()
            raise CutShort(_answer(response, bytes(body[:max_body]), False)) from None
        except (TimeoutError, aiohttp.ClientError, HttpProcessingError):
            complete = False  # what was read so far stands, cut off
    except BaseException:
        response.close()
        raise
    if len(body) > max_body:
        complete = False
    if complete:
        response.release()  # read to its end: the connection goes back to the pool
    else:
        response.close()
    return _answer(response, bytes(body[:max_body]), complete)


def _answer(response: aiohttp.ClientResponse, body: bytes, complete: bool) -> Response:
    headers: dict[str, str] = {}
    for name, value in response.headers.items():
        lowered = name.lower()
        headers[lowered] = f"{headers[lowered]}, {value}" if lowered in headers else value
    return Response(
        status=response.status,
        reason=response.reason or "",
        headers=headers,
        body=body,
        complete=complete,
    )


def _parts(data: bytes) -> tuple[str, list[_Header], bytes | None]:
    """The method, headers and body of a request made for the wire (the
    dispatcher writes it as `HttpClient` sends it): aiohttp writes its own."""
    end = data.index(b"\r\n\r\n")
    request_line, *lines = data[:end].decode().split("\r\n")
    headers: list[_Header] = []
    for line in lines:
        name, _, value = line.partition(": ")
        headers.append((name, value))
    return request_line.partition(" ")[0], headers, data[end + 4 :] or None


@lru_cache(maxsize=4096)
def _url(url: str) -> URL:
    return URL(url)


def _system_error(exc: aiohttp.ClientConnectorError) -> OSError:
    """The system's error aiohttp wrapped, so messages read as `HttpClient`'s do."""
    cause: BaseException = exc.os_error
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cause = exc.certificate_error
    return cause if isinstance(cause, OSError) else OSError(str(cause))
