"""A tick that fell due, and where the scheduler hands such ticks on.

A module of its own so the scheduler depends on the protocol, not on the
runner that implements it (`cronsvc.runner.TickRunner`).
"""

from __future__ import annotations

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
