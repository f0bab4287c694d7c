"""The webhook client's pool: idle connections kept for reuse (most recently idled
first) and closed once idle too long or past the idle limit (oldest first); with
a per-host limit, the connections open to a host counted and the requests past it
queued, first come first served.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable

from cronsvc.wire_connect import Target
from cronsvc.wire_framing import Connection, PoolKey

IDLE_TIMEOUT_S = 15.0
"""An idle pooled connection is closed after this long (aiohttp's keep-alive default)."""

Connect = Callable[[Target, set[Connection]], Awaitable[Connection]]
"""Opens a connection to a target; the connection adds itself to the set once it ends."""


class Pool:
    def __init__(self, connect: Connect, *, max_idle: int, max_per_host: int) -> None:
        self._connect = connect
        self._max_idle = max_idle
        self._idle: dict[PoolKey, list[Connection]] = {}
        self._idle_order: OrderedDict[Connection, None] = OrderedDict()
        self._open: set[Connection] = set()
        self._lost: set[Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._hosts = _HostLimit(max_per_host) if max_per_host else None

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()
        self._idle_order.clear()

    async def open(self, target: Target, *, fresh: bool) -> tuple[Connection, bool]:
        """A new connection, or with a per-host limit, one that came free while
        waiting for room (unless `fresh`: at the limit, it closes an idle one to
        make room); and whether it was reused."""
        hosts = self._hosts
        if hosts is None:
            return await self._new(target), False
        key = target.pool_key
        while True:
            if (idle := self.reuse(target)) is not None:
                if not fresh:
                    return idle, True
                idle.close()  # its end makes room, below
            elif hosts.try_take(key):
                try:
                    connection = await self._new(target)
                except BaseException:
                    hosts.give(key)
                    raise
                if connection.closed:  # ended before it could be counted
                    hosts.give(key)
                else:
                    connection.gone = hosts.gone
                return connection, False
            await hosts.wait(key)

    async def _new(self, target: Target) -> Connection:
        connection = await self._connect(target, self._lost)
        self._open.add(connection)
        return connection

    def reuse(self, target: Target) -> Connection | None:
        """An idle connection to `target` still open, unused and not idle too long."""
        self._forget_lost()
        now = asyncio.get_running_loop().time()
        while (connection := self._take_idle(target.pool_key)) is not None:
            if connection.reusable and now - connection.idle_since < IDLE_TIMEOUT_S:
                return connection
            connection.close()
        return None

    def release(self, connection: Connection) -> None:
        if self._hosts is not None:
            self._hosts.wake(connection.key)  # a request waiting for room takes it
        connection.idle_since = asyncio.get_running_loop().time()
        self._idle.setdefault(connection.key, []).append(connection)
        self._idle_order[connection] = None
        while len(self._idle_order) > self._max_idle:
            self._close_idle(next(iter(self._idle_order)))
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(IDLE_TIMEOUT_S, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        self._forget_lost()
        now = asyncio.get_running_loop().time()
        while self._idle_order:
            oldest = next(iter(self._idle_order))
            if now - oldest.idle_since < IDLE_TIMEOUT_S:
                break
            self._close_idle(oldest)
        if self._idle_order:
            self._sweeper = asyncio.get_running_loop().call_later(IDLE_TIMEOUT_S / 2, self._sweep)

    def _forget_lost(self) -> None:
        """Drop the connections that ended since (the peer closed them, mostly idle ones)."""
        if not self._lost:
            return
        for connection in self._lost:
            self._open.discard(connection)
            if connection in self._idle_order:
                self._close_idle(connection)
        self._lost.clear()

    def _take_idle(self, key: PoolKey) -> Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        connection = idle.pop()  # from the end: no search on the hot path
        del self._idle_order[connection]
        if not idle:
            del self._idle[key]
        return connection

    def _close_idle(self, connection: Connection) -> None:
        # A host's list goes with its last connection, so hosts called once do not pile up.
        del self._idle_order[connection]
        idle = self._idle[connection.key]
        idle.remove(connection)
        if not idle:
            del self._idle[connection.key]
        connection.close()  # nothing to do for one already lost


class _HostLimit:
    """Connections open per host, and the requests waiting for room or an idle one."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[PoolKey, int] = {}
        self._waiters: dict[PoolKey, deque[asyncio.Future[None]]] = {}

    def try_take(self, key: PoolKey) -> bool:
        count = self._open.get(key, 0)
        if count >= self.limit:
            return False
        self._open[key] = count + 1
        return True

    def give(self, key: PoolKey) -> None:
        count = self._open[key] - 1
        if count:
            self._open[key] = count
        else:
            del self._open[key]
        self.wake(key)

    def gone(self, connection: Connection) -> None:
        self.give(connection.key)

    def wake(self, key: PoolKey) -> None:
        waiters = self._waiters.get(key)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break
        if waiters is not None and not waiters:
            del self._waiters[key]

    async def wait(self, key: PoolKey) -> None:
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
