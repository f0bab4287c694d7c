"""Due ticks, where the scheduler hands them on and what comes back: its own
module so the scheduler depends on a protocol, not on the claim pipeline, and
the run path hands back to a `HandBack` made before either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from cronsvc.domain import Job, Trigger


@dataclass(frozen=True, slots=True)
class DueTick:
    job: Job
    tick: datetime
    trigger: Trigger


class TickSink(Protocol):
    """Where due ticks go: the scheduler decides when, the sink runs them."""

    def claim_lead(self, configured_s: float) -> float:
        """How long before its instant a tick is handed over: at least
        `configured_s` (0: at its instant)."""
        ...

    def fire(self, due: Sequence[DueTick]) -> None:
        """Start the runs in the background (returns at once)."""
        ...


class HandBack:
    """What the run path gives back to the scheduler, which takes it before it
    looks at what is due: ticks the store did not take (taken again once it
    answers) and jobs found changed (read again before their next tick)."""

    def __init__(self) -> None:
        self.wake = asyncio.Event()  # the scheduler's loop waits on it
        self._held: list[DueTick] = []
        self._stale: dict[str, None] = {}

    def hold(self, due: Sequence[DueTick]) -> None:
        self._held.extend(due)
        self.wake.set()

    def stale(self, job_id: str) -> None:
        self._stale[job_id] = None
        self.wake.set()

    def take(self) -> tuple[list[DueTick], list[str]]:
        held, self._held = self._held, []
        stale, self._stale = list(self._stale), {}
        return held, stale
