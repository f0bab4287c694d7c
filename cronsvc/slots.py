"""Concurrency slots for webhook deliveries: a semaphore the dispatcher can
take without awaiting, and that says when nobody waits for it.

asyncio.Semaphore offers neither: `acquire` is a coroutine, while a burst's
first requests are written one after another from plain code, slot by slot,
before any task runs (`Dispatcher.send_first`); and it does not tell how many
wait, which a delivery needs in order to let queued ones send before its own
bookkeeping. What it does guarantee, this keeps:

- first come, first served: a free slot never goes past a waiter;
- a waiter cancelled while it waits takes no slot; one cancelled just as it
  was handed a slot passes the slot on, so no slot is ever lost;
- every `give` frees one slot or hands it to the next waiter.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Slots:
    """At most `size` holders at once; the rest wait their turn, first come
    first served. A holder gives its slot back with `give`, once."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._waiting = 0
        """Callers in `take`, including those handed a slot that have not
        resumed yet."""
        self._none_waiting = asyncio.Event()
        self._none_waiting.set()

    @property
    def waiting(self) -> int:
        return self._waiting

    def try_take(self) -> bool:
        """Take a slot if one is free and nobody waits for it; never waits."""
        if self._free and not self._waiters:
            self._free -= 1
            return True
        return False

    async def take(self) -> None:
        """Take a slot, waiting behind earlier callers for one to be given."""
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
        """Hand the slot to the first waiter, or free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    async def none_waiting(self) -> None:
        """Return once no caller waits in `take`."""
        await self._none_waiting.wait()
