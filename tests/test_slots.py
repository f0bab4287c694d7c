"""The dispatcher's concurrency slots: taken without awaiting when free,
first come first served, and never lost to a cancellation, whether it hits
a waiter, a holder, or a waiter just handed a slot."""

from __future__ import annotations

import asyncio

import pytest

from cronsvc.dispatch import Slots


async def hold(slots: Slots, order: list[str], name: str, release: asyncio.Event) -> None:
    await slots.take()
    try:
        order.append(name)
        await release.wait()
    finally:
        slots.give()


def test_a_free_slot_is_taken_without_awaiting_and_a_full_set_refuses() -> None:
    slots = Slots(2)

    assert slots.try_take()
    assert slots.try_take()
    assert not slots.try_take()
    slots.give()
    assert slots.try_take()


async def test_a_free_slot_never_goes_past_a_waiter() -> None:
    slots = Slots(1)
    assert slots.try_take()
    waiter = asyncio.create_task(slots.take())
    await asyncio.sleep(0)

    slots.give()  # handed to the waiter, which has not resumed yet

    assert not slots.try_take()
    await waiter
    assert slots.waiting == 0


async def test_many_waiters_take_their_turns_in_order_never_more_than_the_size() -> None:
    slots = Slots(2)
    order: list[str] = []
    release = asyncio.Event()
    holders = [asyncio.create_task(hold(slots, order, f"h{n}", release)) for n in range(6)]
    await asyncio.sleep(0.01)
    assert order == ["h0", "h1"]
    assert slots.waiting == 4

    release.set()
    await asyncio.gather(*holders)

    assert order == [f"h{n}" for n in range(6)]
    assert slots.waiting == 0
    assert slots.try_take() and slots.try_take() and not slots.try_take()


async def test_a_waiter_cancelled_while_it_waits_takes_no_slot() -> None:
    slots = Slots(1)
    assert slots.try_take()
    cancelled = asyncio.create_task(slots.take())
    order: list[str] = []
    release = asyncio.Event()
    release.set()
    next_one = asyncio.create_task(hold(slots, order, "next", release))
    await asyncio.sleep(0)

    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    slots.give()
    await next_one

    assert order == ["next"]
    assert slots.try_take(), "the slot is free again"


async def test_a_holder_cancelled_while_it_holds_gives_its_slot_to_the_next() -> None:
    slots = Slots(1)
    order: list[str] = []
    never = asyncio.Event()
    holder = asyncio.create_task(hold(slots, order, "holder", never))
    await asyncio.sleep(0)
    released = asyncio.Event()
    released.set()
    next_one = asyncio.create_task(hold(slots, order, "next", released))
    await asyncio.sleep(0)

    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    await next_one

    assert order == ["holder", "next"]
    assert slots.try_take()


async def test_a_waiter_cancelled_just_as_it_is_handed_a_slot_passes_it_on() -> None:
    slots = Slots(1)
    assert slots.try_take()
    unlucky = asyncio.create_task(slots.take())
    order: list[str] = []
    release = asyncio.Event()
    release.set()
    next_one = asyncio.create_task(hold(slots, order, "next", release))
    await asyncio.sleep(0)

    slots.give()  # handed to `unlucky`...
    unlucky.cancel()  # ...which is cancelled before it resumes
    with pytest.raises(asyncio.CancelledError):
        await unlucky
    await next_one

    assert order == ["next"]
    assert slots.waiting == 0
    assert slots.try_take(), "no slot was lost"


async def test_a_waiter_cancelled_and_passed_over_before_it_resumes_leaves_no_trace() -> None:
    slots = Slots(1)
    assert slots.try_take()
    waiter = asyncio.create_task(slots.take())
    await asyncio.sleep(0)  # waiting for the one slot
    waiter.cancel()
    slots.give()  # passes over the cancelled waiter, which has not resumed yet

    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert slots.waiting == 0
    assert slots.try_take(), "the slot is free"


async def test_none_waiting_returns_once_the_last_waiter_has_its_slot() -> None:
    slots = Slots(1)
    assert slots.try_take()
    waiter = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    done = asyncio.create_task(slots.none_waiting())
    await asyncio.sleep(0)
    assert not done.done()

    slots.give()
    await asyncio.wait_for(done, 1)

    await waiter
