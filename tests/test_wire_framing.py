"""The webhook client's answer reading on its own: a connection protocol fed
bytes as the network would hand them (whole, split anywhere, early, with
more than was asked for), without sockets (`RecordingTransport` stands in
for asyncio's)."""

from __future__ import annotations

import asyncio
import zlib

import pytest

from cronsvc.wire_framing import (
    _READ_HIGH_WATER,
    MAX_HEAD_BYTES,
    Connection,
    Disconnected,
    ProtocolError,
    Sink,
)
from tests.fakes import RecordingTransport

_OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


def connection() -> tuple[Connection, RecordingTransport]:
    opened = Connection(("http", "example.test", 80), set())
    return opened, RecordingTransport(opened)


async def answer_to(
    opened: Connection, *segments: bytes, max_body: int = 1024, head_only: bool = False
) -> tuple[bytes, bool]:
    """Feed `segments` as the answer to a request just written; the body
    read and whether it is complete."""
    opened.begin(head_only=head_only)
    for segment in segments:
        opened.data_received(segment)
    await opened.read_head(max_body)
    await opened.read_body()
    assert opened.sink is not None
    return opened.sink.result(opened.complete)


async def test_an_answer_split_at_every_byte_reads_as_one_whole() -> None:
    text = (
        b"HTTP/1.1 201 Created Here\r\nX-Multi: a\r\nx-multi: b \t\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: t\r\n\r\n"
    )
    whole, _ = connection()
    split, _ = connection()

    assert await answer_to(whole, text) == (b"abcde", True)
    assert await answer_to(split, *(text[i : i + 1] for i in range(len(text)))) == (b"abcde", True)
    for opened in (whole, split):
        assert (opened.status, opened.reason) == (201, "Created Here")
        assert opened.headers == {"x-multi": "a, b", "transfer-encoding": "chunked"}
        assert opened.keep_alive and opened.reusable


@pytest.mark.parametrize(
    ("head", "kept"),
    [
        (b"HTTP/1.1 200 OK\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n", False),
        (b"HTTP/1.0 200 OK\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n", True),
    ],
)
async def test_the_version_and_the_connection_header_decide_whether_it_is_kept(
    head: bytes, kept: bool
) -> None:
    opened, _ = connection()

    await answer_to(opened, head + b"Content-Length: 2\r\n\r\nok")

    assert opened.keep_alive is kept


async def test_a_head_answer_ends_at_its_head_and_the_next_answer_reads_on() -> None:
    opened, _ = connection()

    head = await answer_to(
        opened, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", head_only=True
    )
    assert (head, opened.headers["content-length"], opened.reusable) == ((b"", True), "100", True)

    assert await answer_to(opened, _OK) == (b"ok", True)
    assert opened.reusable


async def test_a_body_after_a_head_answer_or_a_second_answer_ends_reuse() -> None:
    after_head, _ = connection()
    second, _ = connection()
    idle, _ = connection()

    await answer_to(after_head, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", head_only=True)
    assert await answer_to(second, _OK + b"HTTP/1.1 200 OK\r\n") == (b"ok", True)
    await answer_to(idle, _OK)
    idle.data_received(b"HTTP/1.1 408 Request Timeout\r\n\r\n")

    assert not after_head.reusable
    assert not second.reusable
    assert not idle.reusable


async def test_a_body_that_came_before_it_was_asked_for_pauses_reading_then_is_capped() -> None:
    opened, transport = connection()
    size = 2 * _READ_HIGH_WATER
    opened.begin(head_only=False)
    opened.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
    for _ in range(size // 65536):
        opened.data_received(b"x" * 65536)
    assert transport.paused

    await opened.read_head(10)
    await opened.read_body()

    assert not transport.paused
    assert opened.sink is not None
    assert opened.sink.result(opened.complete) == (b"x" * 10, False)


async def test_the_peer_closing_ends_a_close_framed_body_but_cuts_a_sized_one_short() -> None:
    framed_by_close, _ = connection()
    sized, _ = connection()
    framed_by_close.begin(head_only=False)
    sized.begin(head_only=False)

    framed_by_close.data_received(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
    sized.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
    for opened in (framed_by_close, sized):
        opened.eof_received()
        await opened.read_head(1024)

    await framed_by_close.read_body()
    assert framed_by_close.complete
    with pytest.raises(Disconnected):
        await sized.read_body()


async def test_a_head_longer_than_the_limit_is_refused_however_it_arrives() -> None:
    big = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n"
    for segments in ([big], [big[i : i + 1000] for i in range(0, len(big), 1000)]):
        opened, _ = connection()
        with pytest.raises(ProtocolError, match="longer than"):
            await answer_to(opened, *segments)


async def test_switching_protocols_unasked_is_refused() -> None:
    opened, _ = connection()

    with pytest.raises(ProtocolError, match="switched protocols"):
        await answer_to(opened, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n")


async def test_the_deadline_ends_the_wait_for_the_head_and_cuts_the_body_off() -> None:
    waiting, _ = connection()
    reading, _ = connection()
    waiting.begin(head_only=False)
    reading.begin(head_only=False)
    reading.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
    await reading.read_head(1024)

    asyncio.get_running_loop().call_soon(waiting.expire)
    asyncio.get_running_loop().call_soon(reading.expire)
    with pytest.raises(TimeoutError):
        await waiting.read_head(1024)
    await reading.read_body()

    assert reading.sink is not None
    assert reading.sink.result(reading.complete) == (b"half", False)


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS])
def test_deflate_is_decoded_zlib_wrapped_or_raw_even_one_byte_at_a_time(wbits: int) -> None:
    coder = zlib.compressobj(wbits=wbits)
    coded = coder.compress(b"hello " * 50) + coder.flush()
    sink = Sink("Deflate", 1024)

    for i in range(len(coded)):
        sink.add(coded[i : i + 1])

    assert sink.result(True) == (b"hello " * 50, True)
