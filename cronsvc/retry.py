"""The one helper that retries transient store and coordinator failures."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from cronsvc.clock import Clock
from cronsvc.errors import StoreUnavailable

T = TypeVar("T")
log = structlog.get_logger(__name__)

TRANSIENT: tuple[type[BaseException], ...] = (StoreUnavailable, ConnectionError, TimeoutError)


def backoff_delay(attempt: int, base_s: float, cap_s: float) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]. The
    exponent is bounded only to keep the float finite; the cap bites first."""
    return random.uniform(0.0, min(cap_s, base_s * 2.0 ** min(attempt - 1, 64)))


async def retry_transient(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    clock: Clock,
    attempts: int = 8,
    base_s: float = 0.1,
    cap_s: float = 5.0,
) -> T:
    """Run `operation`, retrying only TRANSIENT errors with backoff and jitter;
    the last error propagates."""
    for attempt in range(1, attempts + 1):
        try:
            return await operation()
        except TRANSIENT as exc:
            if attempt == attempts:
                raise
            delay = backoff_delay(attempt, base_s, cap_s)
            log.warning(
                "transient_error",
                what=what,
                attempt=attempt,
                error=str(exc),
                retry_in_s=round(delay, 3),
            )
            await clock.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
