"""The webhook client's pool on its own: which idle connection a request
gets, which ones are never reused, the idle limit, and the per-host limit's
queue; connections without sockets (`RecordingTransport`)."""

from __future__ import annotations

import asyncio

from cronsvc.wire_connect import Target, parse_target
from cronsvc.wire_framing import Connection
from cronsvc.wire_pool import Pool
from tests.fakes import RecordingTransport

A = parse_target("http://a.example/hook")
B = parse_target("http://b.example/hook")


class Opener:
    """Opens connections without sockets, each answered and ready for reuse."""

    def __init__(self) -> None:
        self.opened: list[Connection] = []

    async def __call__(self, target: Target, lost: set[Connection]) -> Connection:
        connection = Connection(target.pool_key, lost)
        RecordingTransport(connection)
        self.opened.append(connection)
        return connection


async def test_the_most_recently_idled_connection_to_the_host_is_reused_first() -> None:
    opener = Opener()
    pool = Pool(opener, max_idle=8, max_per_host=0)
    first, _ = await pool.open(A, fresh=False)
    second, _ = await pool.open(A, fresh=False)
    other, _ = await pool.open(B, fresh=False)
    for connection in (first, second, other):
        pool.release(connection)

    assert pool.reuse(A) is second
    assert pool.reuse(A) is first
    assert pool.reuse(A) is None
    assert pool.reuse(B) is other
    pool.close()


async def test_a_connection_that_ended_or_got_bytes_unasked_is_not_reused() -> None:
    opener = Opener()
    pool = Pool(opener, max_idle=8, max_per_host=0)
    ended, _ = await pool.open(A, fresh=False)
    stray, _ = await pool.open(A, fresh=False)
    pool.release(ended)
    pool.release(stray)

    ended.close()
    stray.data_received(b"HTTP/1.1 408 Request Timeout\r\n\r\n")

    assert pool.reuse(A) is None
    assert stray.closed, "dropped from the pool, it is closed"
    pool.close()


async def test_idle_connections_past_the_limit_close_oldest_first() -> None:
    opener = Opener()
    pool = Pool(opener, max_idle=2, max_per_host=0)
    connections = [(await pool.open(A, fresh=False))[0] for _ in range(3)]
    for connection in connections:
        pool.release(connection)

    assert [connection.closed for connection in connections] == [True, False, False]
    pool.close()
    assert all(connection.closed for connection in connections)


async def test_past_the_host_limit_a_request_waits_and_takes_the_connection_released() -> None:
    opener = Opener()
    pool = Pool(opener, max_idle=8, max_per_host=1)
    first, reused = await pool.open(A, fresh=False)
    assert not reused

    waiting = asyncio.create_task(pool.open(A, fresh=False))
    await pool.open(B, fresh=False)  # another host has room of its own
    await asyncio.sleep(0)
    assert not waiting.done()
    pool.release(first)

    assert await waiting == (first, True)
    assert len(opener.opened) == 2
    pool.close()
