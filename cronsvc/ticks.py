"""A tick that fell due, where the scheduler hands such ticks on, and what
comes back from there.

A module of its own so the scheduler depends on the protocol, not on the
claim pipeline that implements it (`cronsvc.claims.ClaimPipeline`), and the
run path hands ticks back to a `HandBack` made before either, not to the
scheduler itself.
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
        """How long before its tick a tick is to be handed over: at least
        `configured_s` (0 hands every tick over at its instant)."""
        ...

    def fire(self, due: Sequence[DueTick]) -> None:
        """Start the runs of ticks that fell due together, in the background
        (returns at once)."""
        ...


class HandBack:
    """What the run path gives back to the scheduler: ticks the store did
    not take (`hold`: taken again once it answers) and jobs found changed
    since the scheduler read them (`stale`: read again before their next
    tick). Each wakes the scheduler, which takes them at its next turn,
    before it looks at what is due."""

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        """The scheduler's loop waits on it."""
        self._held: list[DueTick] = []
        self._stale: dict[str, None] = {}

    def hold(self, due: Sequence[DueTick]) -> None:
        self._held.extend(due)
        self.wake.set()

    def stale(self, job_id: str) -> None:
        self._stale[job_id] = None
        self.wake.set()

    def take(self) -> tuple[list[DueTick], list[str]]:
        """What was handed back since the last call: held ticks, stale job ids."""
        held, self._held = self._held, []
        stale, self._stale = list(self._stale), {}
        return held, stale
