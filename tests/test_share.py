"""Ticks fired in the last minute: what each instance announces as its share."""

from __future__ import annotations

from cronsvc.share import RecentFires
from tests.fakes import SteppedClock


def test_fires_count_for_a_minute_then_drop_out() -> None:
    clock = SteppedClock()
    recent = RecentFires(clock)
    assert recent.last_minute() == 0
    recent.add()
    recent.add()
    clock.advance(30)
    recent.add()
    assert recent.last_minute() == 3
    clock.advance(30)
    assert recent.last_minute() == 1  # the first two are a minute old
    clock.advance(30)
    assert recent.last_minute() == 0


def test_a_second_seen_again_a_minute_later_starts_from_zero() -> None:
    clock = SteppedClock()
    recent = RecentFires(clock)
    for _ in range(5):
        recent.add()
    clock.advance(60)
    recent.add()
    assert recent.last_minute() == 1


def test_every_second_of_a_busy_minute_counts() -> None:
    clock = SteppedClock()
    recent = RecentFires(clock)
    for _ in range(90):
        for _ in range(10):
            recent.add()
        clock.advance(1)
    assert recent.last_minute() == 590  # 59 whole seconds before now, none yet in this one
