"""A token bucket per client, in a map that cannot grow without end.

Each key (an API token's position, or a client address) has a bucket of
`burst` requests that refills at `rate` per second. A bucket left alone for
`burst / rate` seconds is full again, the same as one never made, so it is
dropped: the map holds only clients seen in that window. `max_buckets`
bounds it even under a flood of new keys; past it the least recently seen
bucket goes first (that client starts again from a full bucket).

Time is the injected clock's monotonic reading, so tests step it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cronsvc.clock import Clock

MAX_BUCKETS = 10_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    """Monotonic time `tokens` was last brought up to date."""


class RateLimiter:
    def __init__(
        self, *, rate: float, burst: int, clock: Clock, max_buckets: int = MAX_BUCKETS
    ) -> None:
        if rate <= 0 or burst < 1 or max_buckets < 1:
            raise ValueError("rate must be positive, burst and max_buckets at least 1")
        self._rate = rate
        self._burst = float(burst)
        self._refill_s = burst / rate
        self._clock = clock
        self._max_buckets = max_buckets
        self._buckets: dict[str, _Bucket] = {}
        """Least recently used first: a key is re-inserted on every use."""

    def __len__(self) -> int:
        return len(self._buckets)

    def acquire(self, key: str) -> int:
        """Take one request from `key`'s bucket. Returns 0 if it may proceed,
        else the whole seconds (at least 1) until it may; a refused request
        takes nothing."""
        now = self._clock.monotonic()
        self._drop_idle(now)
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(tokens=self._burst, at=now)
        else:
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.at) * self._rate)
            bucket.at = now
        self._buckets[key] = bucket
        if len(self._buckets) > self._max_buckets:
            del self._buckets[next(iter(self._buckets))]
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0
        return max(1, math.ceil((1 - bucket.tokens) / self._rate))

    def _drop_idle(self, now: float) -> None:
        # Oldest first, so stop at the first bucket used too recently.
        while self._buckets:
            key = next(iter(self._buckets))
            if now - self._buckets[key].at < self._refill_s:
                return
            del self._buckets[key]
