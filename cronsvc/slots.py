"""Concurrency slots for webhook deliveries: unlike asyncio.Semaphore, taken without
awaiting (a burst's first requests are written from plain code before any task
runs) and telling who waits (so queued deliveries send before one's bookkeeping).
Like it: first come first served, and a cancelled waiter never loses a slot.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Slots:
    """At most `size` holders at once; each gives its slot back with `give`, once."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._waiting = 0  # in `take`, those handed a slot but not resumed included
        self._none_waiting = asyncio.Event()
        self._none_waiting.set()

    @property
    def waiting(self) -> int:
        return self._waiting

    def try_take(self) -> bool:
        """Take a slot if one is free and nobody waits for it."""
        if self._free and not self._waiters:
            self._free -= 1
            return True
        return False

    async def take(self) -> None:
        if self.try_take():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._waiting += 1
        self._none_waiting.clear()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed a slot just as it was cancelled: pass it on
            elif waiter in self._waiters:  # (`give` may have passed over it already)
                self._waiters.remove(waiter)
            raise
        finally:
            self._waiting -= 1
            if not self._waiting:
                self._none_waiting.set()

    def give(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    async def none_waiting(self) -> None:
        await self._none_waiting.wait()
