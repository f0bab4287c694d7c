"""The webhook HTTP client against real servers on loopback: aiohttp servers
for what well-behaved receivers send, raw asyncio servers for the edges of
the protocol (close-framed bodies, interim answers, broken heads, a peer
that drops a kept-alive connection), and a TLS server with a test CA."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import pytest
import trustme
from aiohttp import web

from cronsvc.clock import SystemClock
from cronsvc.dispatch import Dispatcher
from cronsvc.domain import ExecutionStatus, RetryPolicy
from cronsvc.netguard import GuardedResolver
from cronsvc.wire import (
    HttpClient,
    InvalidTarget,
    ProtocolError,
    Response,
    Target,
    parse_target,
)
from tests.fakes import (
    ScriptedResolver,
    StartRawServer,
    drops_second_request,
    free_port,
    read_request,
)
from tests.helpers_dispatch import OPEN, webhook


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    guard = GuardedResolver(OPEN)
    http = HttpClient(guard=guard, max_idle=8)
    yield http
    await http.aclose()
    await guard.close()


def message(target: Target, method: str = "POST") -> bytes:
    body = b"{}" if method != "GET" else b""
    return (
        f"{method} {target.request_target} HTTP/1.1\r\nHost: {target.host_header}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def send(http: HttpClient, url: str, method: str = "POST", max_body: int = 65536) -> Response:
    target = parse_target(url)
    deadline = asyncio.get_running_loop().time() + 5
    return await http.request(
        method, target, message(target, method), deadline=deadline, max_body=max_body
    )


# --- what a URL becomes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host", "port", "host_header", "request_target"),
    [
        ("http://example.com/a/b?c=1&d=%20", "example.com", 80, "example.com", "/a/b?c=1&d=%20"),
        ("https://example.com", "example.com", 443, "example.com", "/"),
        ("https://example.com:8443/x", "example.com", 8443, "example.com:8443", "/x"),
        ("http://[2001:db8::1]:8080/x", "2001:db8::1", 8080, "[2001:db8::1]:8080", "/x"),
        ("http://example.com/#fragment", "example.com", 80, "example.com", "/"),
        ("http://bücher.example/", "xn--bcher-kva.example", 80, "xn--bcher-kva.example", "/"),
    ],
)
def test_a_url_names_where_to_connect_and_what_to_ask_for(
    url: str, host: str, port: int, host_header: str, request_target: str
) -> None:
    target = parse_target(url)

    assert (target.host, target.port, target.host_header, target.request_target) == (
        host,
        port,
        host_header,
        request_target,
    )


@pytest.mark.parametrize(
    "url", ["ftp://example.com/", "http://", "http://user:pw@example.com/", "http://x:99999/"]
)
def test_a_url_no_request_can_go_to_is_refused(url: str) -> None:
    with pytest.raises(InvalidTarget):
        parse_target(url)


# --- bodies, however they are framed ---------------------------------------------------


async def test_a_chunked_body_is_read_whole_and_the_connection_kept(client: HttpClient) -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b"alpha ", b"beta ", b"gamma"):
            await response.write(part)
        await response.write_eof()
        return response

    async with serving(chunked) as url:
        first = await send(client, url)
        second = await send(client, url)

    assert first.headers["transfer-encoding"] == "chunked"
    assert (first.body, first.complete) == (b"alpha beta gamma", True)
    assert second.body == b"alpha beta gamma"


async def test_a_gzip_coded_body_is_decoded(client: HttpClient) -> None:
    async def compressed(request: web.Request) -> web.StreamResponse:
        response = web.Response(text="hello " * 200)
        response.enable_compression(web.ContentCoding.gzip)
        return response

    async with serving(compressed) as url:
        target = parse_target(url)
        data = (
            f"POST /hook HTTP/1.1\r\nHost: {target.host_header}\r\n"
            "Accept-Encoding: gzip\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        deadline = asyncio.get_running_loop().time() + 5
        response = await client.request("POST", target, data, deadline=deadline, max_body=65536)

    assert response.headers["content-encoding"] == "gzip"
    assert (response.body, response.complete) == (b"hello " * 200, True)


async def test_a_body_framed_by_the_close_is_read_and_the_connection_not_reused(
    client: HttpClient, raw_server: StartRawServer
) -> None:
    async def close_framed(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
        await writer.drain()

    server = await raw_server(close_framed)

    first = await send(client, server.url)
    second = await send(client, server.url)

    assert (first.status, first.body, first.complete) == (200, b"until the end", True)
    assert second.body == b"until the end"
    assert server.connections == 2


async def test_interim_answers_are_skipped(client: HttpClient, raw_server: StartRawServer) -> None:
    async def interim(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"
            b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone"
        )
        await writer.drain()
        await read_request(reader)

    server = await raw_server(interim)

    response = await send(client, server.url)

    assert (response.status, response.body, response.complete) == (201, b"done", True)


async def test_a_head_answer_has_no_body_whatever_its_length_says(client: HttpClient) -> None:
    async def sized(request: web.Request) -> web.StreamResponse:
        return web.Response(text="x" * 100)

    app = web.Application()
    app.router.add_route("*", "/hook", sized)
    async with serving_app(app) as url:
        head = await send(client, url, method="HEAD")
        after = await send(client, url)

    assert (head.status, head.headers["content-length"], head.body) == (200, "100", b"")
    assert head.complete
    assert after.body == b"x" * 100


async def test_connection_close_ends_reuse(client: HttpClient, raw_server: StartRawServer) -> None:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)  # a client that ignored the close would be stuck here

    server = await raw_server(closing)

    await send(client, server.url)
    await send(client, server.url)

    assert server.connections == 2


# --- broken answers -----------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
    ],
)
async def test_an_answer_that_is_not_http_1_is_a_protocol_error(
    client: HttpClient, raw_server: StartRawServer, answer: bytes
) -> None:
    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(5)

    server = await raw_server(broken)

    with pytest.raises(ProtocolError):
        await send(client, server.url)


async def test_a_bad_chunk_cuts_the_body_off_but_the_status_stands(
    client: HttpClient, raw_server: StartRawServer
) -> None:
    async def bad_chunk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    server = await raw_server(bad_chunk)

    response = await send(client, server.url)

    assert (response.status, response.body, response.complete) == (200, b"hello", False)


async def test_a_malformed_answer_fails_the_delivery_as_invalid_response_without_retry(
    raw_server: StartRawServer,
) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"garbage\r\n\r\n")
        await writer.drain()

    server = await raw_server(garbage)
    async with Dispatcher(
        max_concurrency=2, max_response_bytes=1024, clock=SystemClock(), target_policy=OPEN
    ) as dispatcher:
        result = await dispatcher.deliver(webhook(server.url, retry=RetryPolicy(max_attempts=3)))

    assert result.status is ExecutionStatus.FAILURE
    assert result.error is not None
    assert result.error.type == "invalid_response"
    assert result.attempts == 1


# --- sent at once, answered later ----------------------------------------------------

_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def test_send_writes_at_once_on_a_kept_connection_else_once_one_opens(
    client: HttpClient,
) -> None:
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        target = parse_target(f"http://127.0.0.1:{listener.getsockname()[1]}/hook")
        data = message(target)
        opening = client.send(target, data, deadline=loop.time() + 5)  # none open yet
        peer, _ = await loop.sock_accept(listener)
        with peer:
            peer.setblocking(False)
            assert await loop.sock_recv(peer, 65536) == data, "sent before its answer is asked for"
            await loop.sock_sendall(peer, _OK)
            first = await client.request(
                "POST", target, data, deadline=loop.time() + 5, max_body=100, sent=opening
            )
            assert (first.status, first.body) == (200, b"ok")

            kept = client.send(target, data, deadline=loop.time() + 5)

            peer.settimeout(5)  # a blocking read: the loop does not run while it waits
            assert peer.recv(65536) == data, "written before send returned"
            peer.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\nmade")
            second = await client.request(
                "POST", target, data, deadline=loop.time() + 5, max_body=100, sent=kept
            )
    assert (second.status, second.body) == (201, b"made")


async def test_a_request_sent_then_let_go_closes_its_connection(client: HttpClient) -> None:
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        target = parse_target(f"http://127.0.0.1:{listener.getsockname()[1]}/hook")
        data = message(target)
        sent = client.send(target, data, deadline=loop.time() + 5)
        peer, _ = await loop.sock_accept(listener)
        with peer:
            peer.setblocking(False)
            assert await loop.sock_recv(peer, 65536) == data

            sent.cancel()

            assert await asyncio.wait_for(loop.sock_recv(peer, 65536), 5) == b"", "closed"


async def test_a_request_sent_where_nothing_listens_fails_when_its_answer_is_asked_for(
    client: HttpClient,
) -> None:
    target = parse_target(f"http://127.0.0.1:{free_port()}/hook")
    deadline = asyncio.get_running_loop().time() + 5

    sent = client.send(target, message(target), deadline=deadline)

    with pytest.raises(ConnectionRefusedError):
        await client.request(
            "POST", target, message(target), deadline=deadline, max_body=100, sent=sent
        )


async def test_an_idempotent_request_sent_at_once_on_a_dropped_connection_goes_again(
    client: HttpClient, raw_server: StartRawServer
) -> None:
    server = await raw_server(drops_second_request())
    await send(client, server.url, method="GET")
    target = parse_target(server.url)
    deadline = asyncio.get_running_loop().time() + 5

    sent = client.send(target, message(target, "GET"), deadline=deadline)
    response = await client.request(
        "GET", target, message(target, "GET"), deadline=deadline, max_body=100, sent=sent
    )

    assert (response.status, response.body) == (200, b"ok")
    assert server.connections == 2


# --- kept-alive connections the peer drops ------------------------------------------


async def test_an_idempotent_request_on_a_dropped_connection_goes_again_on_a_new_one(
    client: HttpClient, raw_server: StartRawServer
) -> None:
    server = await raw_server(drops_second_request())
    await send(client, server.url, method="GET")
    # The peer has not closed yet when the next request is written on the kept connection.
    response = await send(client, server.url, method="GET")

    assert (response.status, response.body) == (200, b"ok")
    assert server.connections == 2


async def test_the_second_try_goes_on_a_new_connection_not_another_idle_one(
    client: HttpClient, raw_server: StartRawServer
) -> None:
    async def slow_then_drop(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> None:
        await read_request(reader)
        await asyncio.sleep(0.05)  # so two requests hold two connections at once
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)

    server = await raw_server(slow_then_drop)
    await asyncio.gather(send(client, server.url, method="GET"), send(client, server.url, "GET"))
    assert server.connections == 2  # both kept idle, both to be dropped at their next request

    response = await send(client, server.url, method="GET")

    assert (response.status, response.body) == (200, b"ok")
    assert server.connections == 3


async def test_a_post_on_a_dropped_connection_is_not_sent_again(
    client: HttpClient, raw_server: StartRawServer
) -> None:
    server = await raw_server(drops_second_request())
    await send(client, server.url)

    with pytest.raises(ConnectionError):
        await send(client, server.url)
    assert server.connections == 1, "a POST is never repeated on the client's own"


async def test_a_connection_the_peer_closed_while_idle_is_not_used(
    client: HttpClient, raw_server: StartRawServer
) -> None:
    async def one_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    server = await raw_server(one_each)
    await send(client, server.url)
    await asyncio.sleep(0.2)  # the close reaches the client while the connection is idle

    response = await send(client, server.url)

    assert response.body == b"ok"
    assert server.connections == 2


async def test_idle_connections_past_the_limit_are_closed(
    raw_server: StartRawServer,
) -> None:
    closed = asyncio.Event()

    async def counting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while await read_request(reader):
            await asyncio.sleep(0.05)  # so both requests are open at once
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        closed.set()

    server = await raw_server(counting)
    guard = GuardedResolver(OPEN)
    http = HttpClient(guard=guard, max_idle=1)
    try:
        await asyncio.gather(send(http, server.url), send(http, server.url))
        async with asyncio.timeout(5):  # kept both idle, it would never come
            await closed.wait()
        assert server.connections == 2
    finally:
        await http.aclose()
        await guard.close()


# --- where a connection may not go ------------------------------------------------------


async def test_a_name_that_resolves_to_nothing_is_a_connection_error() -> None:
    async with Dispatcher(
        max_concurrency=2,
        max_response_bytes=1024,
        clock=SystemClock(),
        target_policy=OPEN,
        resolver=ScriptedResolver([]),
    ) as dispatcher:
        result = await dispatcher.deliver(webhook("http://hooks.example.test/hook"))

    assert result.status is ExecutionStatus.FAILURE
    assert result.error is not None
    assert result.error.type == "connection_error"
    assert "no address" in result.error.message


@pytest.mark.parametrize("host", ["256.0.0.1", "1.2.3.4.5", "[::1::2]"])
async def test_a_host_that_looks_like_an_address_but_is_none_is_refused(host: str) -> None:
    resolver = ScriptedResolver(["127.0.0.1"])
    async with Dispatcher(
        max_concurrency=2,
        max_response_bytes=1024,
        clock=SystemClock(),
        target_policy=OPEN,
        resolver=resolver,
    ) as dispatcher:
        result = await dispatcher.deliver(webhook(f"http://{host}/hook"))

    assert result.status is ExecutionStatus.FAILURE
    assert result.error is not None
    assert result.error.type == "target_not_allowed"
    assert "not a valid IP address" in result.error.message
    assert resolver.lookups == [], "never handed to DNS"


# --- TLS ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


async def test_https_targets_are_verified_and_their_connections_kept(
    authority: trustme.CA,
) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    peers: list[object] = []

    async def hook(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return web.Response(text=f"over {request.scheme}")

    async with (
        serving(hook, ssl_context=server_context) as url,
        Dispatcher(
            max_concurrency=2,
            max_response_bytes=1024,
            clock=SystemClock(),
            target_policy=OPEN,
            ssl_context=client_context,
        ) as dispatcher,
    ):
        first = await dispatcher.deliver(webhook(url))
        second = await dispatcher.deliver(webhook(url))

    assert url.startswith("https://")
    assert (first.status, first.response_body) == (ExecutionStatus.SUCCESS, "over https")
    assert second.response_body == "over https"
    assert peers[0] == peers[1], "the TLS connection was not kept"


async def test_a_certificate_no_trusted_authority_signed_fails_as_a_connection_error(
    authority: trustme.CA,
) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)

    async def hook(request: web.Request) -> web.Response:
        return web.Response(text="must not be reached")

    async with (
        serving(hook, ssl_context=server_context) as url,
        Dispatcher(
            max_concurrency=2, max_response_bytes=1024, clock=SystemClock(), target_policy=OPEN
        ) as dispatcher,
    ):
        result = await dispatcher.deliver(webhook(url))

    assert result.status is ExecutionStatus.FAILURE
    assert result.error is not None
    assert result.error.type == "connection_error"
    assert "certificate" in result.error.message.lower()


# --- helpers ---------------------------------------------------------------------------


def serving(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ssl_context: ssl.SSLContext | None = None,
) -> _Serving:
    app = web.Application()
    app.router.add_route("*", "/hook", handler)
    return serving_app(app, ssl_context)


def serving_app(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> _Serving:
    return _Serving(app, ssl_context)


class _Serving:
    """An aiohttp app on 127.0.0.1 for the block; yields its /hook URL."""

    def __init__(self, app: web.Application, ssl_context: ssl.SSLContext | None) -> None:
        self._app = app
        self._ssl = ssl_context
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> str:
        runner = web.AppRunner(self._app, access_log=None)
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self._ssl)
        await site.start()
        port = runner.addresses[0][1]
        scheme = "https" if self._ssl else "http"
        return f"{scheme}://127.0.0.1:{port}/hook"

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()
