"""The buffer both the result writer and the alert engine empty in
batches: `cronsvc.results.Drain`, driven by a flush the test scripts."""

from __future__ import annotations

import asyncio

from cronsvc.clock import SystemClock
from cronsvc.results import Drain


async def no_linger() -> None:
    return None


class Script:
    """A flush that refuses the first `refusals` batches, records the rest."""

    def __init__(self, refusals: int = 0) -> None:
        self.refusals = refusals
        self.taken: list[list[int]] = []
        self.offered = 0
        self.given_up: list[int] = []
        self.took = asyncio.Event()

    async def flush(self, batch: list[int]) -> bool:
        self.offered += 1
        if self.refusals:
            self.refusals -= 1
            return False
        self.taken.append(list(batch))
        self.took.set()
        return True

    def drain(self, batch: int = 3) -> Drain[int]:
        return Drain[int](
            clock=SystemClock(),
            flush=self.flush,
            give_up=self.given_up.extend,
            linger=no_linger,
            batch=batch,
        )


async def test_items_are_flushed_oldest_first_in_batches_of_the_given_size() -> None:
    script = Script()
    drain = script.drain(batch=3)
    for item in range(7):
        drain.put(item)
    drain.stop()
    await asyncio.wait_for(drain.run(give_up_after_s=5), 10)

    assert script.taken == [[0, 1, 2], [3, 4, 5], [6]]
    assert drain.items == [] and script.given_up == []


async def test_a_refused_batch_is_kept_and_tried_again_until_taken() -> None:
    script = Script(refusals=2)
    drain = script.drain()
    running = asyncio.create_task(drain.run(give_up_after_s=5))
    drain.put(1)
    await asyncio.wait_for(script.took.wait(), 10)
    assert script.offered == 3 and script.taken == [[1]]
    assert drain.failures == 0  # reset once a batch is taken
    drain.stop()
    await asyncio.wait_for(running, 10)


async def test_what_is_never_taken_is_given_up_after_stop_not_lost() -> None:
    script = Script(refusals=10_000)
    drain = script.drain()
    running = asyncio.create_task(drain.run(give_up_after_s=0.3))
    for item in range(5):
        drain.put(item)
    drain.stop()
    await asyncio.wait_for(running, 10)

    assert script.taken == [] and script.offered >= 1
    assert script.given_up == [0, 1, 2, 3, 4]
    assert drain.items == []
