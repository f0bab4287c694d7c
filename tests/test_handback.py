"""What the run path hands back to the scheduler: each hand-back wakes it,
and it takes everything handed back since its last turn, once."""

from __future__ import annotations

from cronsvc.domain import Trigger
from cronsvc.ticks import DueTick, HandBack
from tests.helpers_store import at, make_job


def test_held_ticks_and_stale_jobs_wake_the_scheduler_and_are_taken_once() -> None:
    handback = HandBack()
    first, second = make_job("first"), make_job("second")
    due = [DueTick(first, at(1), Trigger.SCHEDULE), DueTick(second, at(1), Trigger.SCHEDULE)]
    assert not handback.wake.is_set()

    handback.hold(due[:1])
    assert handback.wake.is_set()
    handback.wake.clear()
    handback.stale(second.id)
    handback.stale(second.id)  # named twice, read again once
    handback.hold(due[1:])
    assert handback.wake.is_set()

    assert handback.take() == (due, [second.id])
    assert handback.take() == ([], [])
