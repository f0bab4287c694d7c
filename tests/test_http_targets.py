"""What real webhook targets do, through the dispatcher's HTTP client: a
name whose first address never answers, compressed and chunked answers, a host written
with a trailing dot, a per-host connection limit, `Connection: close`, and
answers the peer cuts short. Real servers on loopback: aiohttp servers where
a framework would answer so, raw ones (`RawServer`) where it would not."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator

import pytest
import trustme
from aiohttp import web

from cronsvc.dispatch import DeliveryResult
from cronsvc.domain import ExecutionStatus, HttpMethod
from cronsvc.netguard import TargetPolicy
from tests.fakes import (
    HOLD_LIMIT_S,
    ScriptedResolver,
    StartRawServer,
    StartReceiver,
    drops_second_request,
    read_request,
)
from tests.helpers_dispatch import MakeDispatcher, webhook


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


# --- the SSRF guard ------------------------------------------------------------------


async def test_the_ssrf_guard_judges_address_literals_and_what_names_resolve_to(
    start_receiver: StartReceiver, make_dispatcher: MakeDispatcher
) -> None:
    receiver = await start_receiver()
    port = port_of(receiver.url)
    dispatcher = await make_dispatcher(
        target_policy=TargetPolicy(), resolver=ScriptedResolver(["127.0.0.1"])
    )

    literal = await dispatcher.deliver(webhook(f"http://127.0.0.1:{port}/hook"))
    named = await dispatcher.deliver(webhook(f"http://hooks.example.test:{port}/hook"))

    for result in (literal, named):
        assert result.status is ExecutionStatus.FAILURE
        assert result.error is not None
        assert result.error.type == "target_not_allowed"
        assert "a loopback address" in result.error.message
    assert receiver.requests == []


# --- a name whose first address never answers ----------------------------------------


@contextlib.contextmanager
def unanswering(address: str, port: int) -> Iterator[None]:
    """`address:port` takes no new connection and refuses none: a listener
    whose queue of connections not yet accepted is full, so the kernel drops
    the SYNs that come next, as a blackholed address does."""
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind((address, port))
        listener.listen(0)
        for _ in range(3):
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect((address, port))
        yield


async def test_a_first_address_that_never_answers_does_not_spend_the_timeout(
    start_receiver: StartReceiver, make_dispatcher: MakeDispatcher
) -> None:
    receiver = await start_receiver()
    port = port_of(receiver.url)
    dispatcher = await make_dispatcher(resolver=ScriptedResolver(["127.0.0.2", "127.0.0.1"]))

    with unanswering("127.0.0.2", port):
        started = time.monotonic()
        result = await dispatcher.deliver(
            webhook(f"http://hooks.example.test:{port}/hook", timeout_s=5.0)
        )
        elapsed = time.monotonic() - started

    assert result.status is ExecutionStatus.SUCCESS, result.error
    assert elapsed < 2.5, "the dead address held the call until its timeout"
    assert len(receiver.requests) == 1


# --- content codings ---------------------------------------------------------------------

TEXT = "a webhook answer, compressed " * 40


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),  # zlib-wrapped, as RFC 9110 says
        ("deflate", _raw_deflate),  # raw DEFLATE, as some servers send it
    ],
    ids=["gzip", "deflate-zlib", "deflate-raw"],
)
async def test_compressed_answers_are_decoded(
    start_receiver: StartReceiver,
    make_dispatcher: MakeDispatcher,
    coding: str,
    encode: Callable[[bytes], bytes],
) -> None:
    async def compressed(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=encode(TEXT.encode()),
            headers={"Content-Encoding": coding, "Content-Type": "text/plain"},
        )

    receiver = await start_receiver(compressed)
    dispatcher = await make_dispatcher()

    result = await dispatcher.deliver(webhook(receiver.url))

    assert (result.status, result.response_body) == (ExecutionStatus.SUCCESS, TEXT)
    assert result.response_truncated is False


# --- chunked answers -------------------------------------------------------------------


async def test_a_chunked_answer_with_extensions_and_trailers_is_read_whole(
    raw_server: StartRawServer, make_dispatcher: MakeDispatcher
) -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while await read_request(reader):
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
                b"6;name=value\r\nhello \r\n"
                b"5;flag\r\nworld\r\n"
                b"0;last=yes\r\nX-Checksum: 5d41\r\n\r\n"
            )
            await writer.drain()

    server = await raw_server(chunked)
    dispatcher = await make_dispatcher()

    first = await dispatcher.deliver(webhook(server.url))
    second = await dispatcher.deliver(webhook(server.url))

    assert (first.status, first.response_body) == (ExecutionStatus.SUCCESS, "hello world")
    assert first.response_truncated is False
    assert second.response_body == "hello world"
    assert server.connections == 1, "the trailers were not read to their end"


# --- a host written with a trailing dot ---------------------------------------------------


async def test_a_trailing_dot_is_left_out_of_the_host_header(
    start_receiver: StartReceiver, make_dispatcher: MakeDispatcher
) -> None:
    receiver = await start_receiver()
    port = port_of(receiver.url)
    resolver = ScriptedResolver(["127.0.0.1"])
    dispatcher = await make_dispatcher(resolver=resolver)

    result = await dispatcher.deliver(webhook(f"http://localhost.:{port}/hook"))

    assert result.status is ExecutionStatus.SUCCESS, result.error
    assert receiver.requests[0].headers["Host"] == f"localhost:{port}"


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


async def test_a_trailing_dot_is_left_out_of_the_tls_server_name(
    authority: trustme.CA, make_dispatcher: MakeDispatcher
) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    names: list[str | None] = []

    def server_name(sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        names.append(name)

    server_context.sni_callback = server_name

    async def hook(request: web.Request) -> web.Response:
        return web.Response(text=f"over {request.scheme}")

    runner = web.AppRunner(_app(hook), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
        await site.start()
        port = runner.addresses[0][1]
        dispatcher = await make_dispatcher(
            resolver=ScriptedResolver(["127.0.0.1"]), ssl_context=client_context
        )

        result = await dispatcher.deliver(webhook(f"https://localhost.:{port}/hook"))
    finally:
        await runner.cleanup()

    assert (result.status, result.response_body) == (ExecutionStatus.SUCCESS, "over https")
    assert names == ["localhost"]


def _app(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/hook", handler)
    return app


# --- a per-host connection limit ---------------------------------------------------------


async def test_calls_to_one_host_open_at_most_its_limit_of_connections(
    start_receiver: StartReceiver, make_dispatcher: MakeDispatcher
) -> None:
    gate = asyncio.Semaphore(0)

    async def held(request: web.Request) -> web.StreamResponse:
        async with asyncio.timeout(HOLD_LIMIT_S):
            await gate.acquire()
        return web.Response(text="done")

    receiver = await start_receiver(held)
    dispatcher = await make_dispatcher(max_concurrency=8, max_connections_per_host=2)
    deliveries = [
        asyncio.create_task(dispatcher.deliver(webhook(receiver.url, execution_id=f"e{n}")))
        for n in range(6)
    ]

    await receiver.wait_active(2)
    await asyncio.sleep(0.1)  # room for a call past the limit to show up
    assert receiver.active == 2
    for _ in range(6):
        gate.release()
    results = await asyncio.gather(*deliveries)

    assert [r.status for r in results] == [ExecutionStatus.SUCCESS] * 6
    assert receiver.max_active == 2
    assert len({r.peer for r in receiver.requests}) <= 2


# --- Connection: close -------------------------------------------------------------------


async def test_an_answer_with_connection_close_ends_the_connection(
    raw_server: StartRawServer, make_dispatcher: MakeDispatcher
) -> None:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)  # a client that reused it would be answered nothing

    server = await raw_server(closing)
    dispatcher = await make_dispatcher()

    results = [await dispatcher.deliver(webhook(server.url)) for _ in range(2)]

    assert [r.status for r in results] == [ExecutionStatus.SUCCESS] * 2
    assert server.connections == 2


# --- answers cut short -------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n10\r\nmid-chu",
    ],
    ids=["before-content-length", "mid-chunk"],
)
async def test_an_answer_the_peer_cuts_short_fails_the_call_at_once(
    raw_server: StartRawServer, make_dispatcher: MakeDispatcher, answer: bytes
) -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()

    server = await raw_server(cut)
    dispatcher = await make_dispatcher()

    started = time.monotonic()
    result = await dispatcher.deliver(webhook(server.url, timeout_s=5.0))

    assert time.monotonic() - started < 2.5, "waited for the rest of the answer"
    assert result.status is ExecutionStatus.FAILURE
    assert result.error is not None
    assert result.error.type == "connection_error"
    assert "closed the connection before the answer's body ended" in result.error.message
    assert result.response_status == 200
    assert result.response_truncated is True


async def test_an_idempotent_call_on_a_dropped_kept_connection_goes_again_on_a_new_one(
    raw_server: StartRawServer, make_dispatcher: MakeDispatcher
) -> None:
    server = await raw_server(drops_second_request())
    dispatcher = await make_dispatcher()
    await dispatcher.deliver(webhook(server.url, method=HttpMethod.GET))

    result = await dispatcher.deliver(webhook(server.url, method=HttpMethod.GET))

    assert (result.status, result.response_body) == (ExecutionStatus.SUCCESS, "ok")
    assert server.connections == 2


async def test_a_post_on_a_dropped_kept_connection_is_not_sent_again(
    raw_server: StartRawServer, make_dispatcher: MakeDispatcher
) -> None:
    server = await raw_server(drops_second_request())
    dispatcher = await make_dispatcher()
    await dispatcher.deliver(webhook(server.url))

    result: DeliveryResult = await dispatcher.deliver(webhook(server.url))

    assert result.status is ExecutionStatus.FAILURE
    assert result.error is not None
    assert result.error.type == "connection_error"
    assert server.connections == 1, "a POST is never repeated on the client's own"
