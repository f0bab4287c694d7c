"""What this instance did lately: ticks fired in the last minute, announced
with each heartbeat so `GET /api/cluster` shows each instance's share."""

from __future__ import annotations

from cronsvc.clock import Clock

WINDOW_S = 60


class RecentFires:
    """Counted in one-second buckets of the monotonic clock; a bucket older
    than the window is reused, not kept."""

    __slots__ = ("_clock", "_counts", "_seconds")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._counts = [0] * WINDOW_S
        self._seconds = [-WINDOW_S] * WINDOW_S  # the second each bucket counts

    def add(self) -> None:
        second = int(self._clock.monotonic())
        i = second % WINDOW_S
        if self._seconds[i] != second:
            self._seconds[i] = second
            self._counts[i] = 0
        self._counts[i] += 1

    def last_minute(self) -> int:
        now = int(self._clock.monotonic())
        return sum(
            n
            for n, second in zip(self._counts, self._seconds, strict=True)
            if now - second < WINDOW_S
        )
