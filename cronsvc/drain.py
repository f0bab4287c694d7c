"""A buffer one background task empties in batches, for the result writer and the
alert engine: a batch not taken is retried with backoff; after `stop`, what is left
when trying ends goes to `give_up`, so nothing is dropped quietly. Bounding the
buffer is the owner's part.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from cronsvc.clock import Clock
from cronsvc.retry import backoff_delay

T = TypeVar("T")


class Drain(Generic[T]):
    def __init__(
        self,
        *,
        clock: Clock,
        flush: Callable[[list[T]], Awaitable[bool]],
        give_up: Callable[[list[T]], None],
        linger: Callable[[], Awaitable[None]],
        batch: int,
    ) -> None:
        """`flush(batch)`: False to keep the batch and try again. `linger()`: waits
        for a batch to gather after its first item."""
        self.items: list[T] = []
        """Oldest first; only the task takes items out."""
        self.failures = 0
        """In a row."""
        self.stopping = False
        self._clock = clock
        self._flush = flush
        self._give_up = give_up
        self._linger = linger
        self._batch = batch
        self._wake = asyncio.Event()

    def put(self, item: T) -> None:
        self.items.append(item)
        self._wake.set()

    def stop(self) -> None:
        self.stopping = True
        self._wake.set()

    async def run(self, give_up_after_s: float) -> None:
        """After `stop`, tries for at most `give_up_after_s`."""
        deadline: float | None = None
        while True:
            await self._wake.wait()
            if not self.stopping:
                await self._linger()
            self._wake.clear()
            if self.stopping and deadline is None:
                deadline = self._clock.monotonic() + give_up_after_s
            while self.items:
                if deadline is not None and self._clock.monotonic() > deadline:
                    left, self.items = self.items, []
                    self._give_up(left)
                    break
                batch = self.items[: self._batch]
                if await self._flush(batch):
                    self.failures = 0
                    del self.items[: len(batch)]
                    continue
                self.failures += 1
                delay = backoff_delay(self.failures, 0.2, 5.0)
                if deadline is not None:
                    delay = min(delay, max(0.0, deadline - self._clock.monotonic()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                self._wake.clear()
            if self.stopping and not self.items:
                return
