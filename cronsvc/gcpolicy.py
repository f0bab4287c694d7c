"""When the garbage collector runs in a serving process. Nearly all a process
makes lives as long as it does, and a burst of fires makes objects that die by
reference count: by default the collector walks the long-lived ones over and
over inside the bursts, stalling the event loop (BENCHMARKS.md has the figures)."""

from __future__ import annotations

import gc

FIRST_GENERATION = 50_000
"""Allocations between collections of the youngest generation, once serving."""


def before_loading() -> None:
    """Keep what exists out of every pass; loading makes an object or more per
    job, so collect nothing while the jobs load."""
    gc.freeze()
    gc.disable()


def after_loading(loaded: bool) -> None:
    """Called when the first load ended, or the process stops before it did."""
    gc.enable()
    if loaded:
        gc.freeze()
        gc.set_threshold(FIRST_GENERATION, 20, 100)


def at_exit() -> None:
    gc.enable()
