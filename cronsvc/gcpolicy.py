"""When the garbage collector runs in a serving process.

Almost everything a cronsvc process makes lives as long as the process (the
modules, the app, every job's schedule entry), and a burst of fires makes
objects that die by reference count. Left to its defaults, the collector
walks the long-lived objects over and over, and its passes land inside the
bursts, stalling the event loop. So: what exists when serving begins is
frozen out of its passes; it is off while the scheduler loads every job
(each load makes an object or more per job); once loaded, that too is
frozen and the first generation is collected per `FIRST_GENERATION`
allocations rather than Python's 700. The figures behind each step are in
BENCHMARKS.md, "Why the constants are what they are".
"""

from __future__ import annotations

import gc

FIRST_GENERATION = 50_000
"""Allocations between collections of the youngest generation, once serving."""


def before_loading() -> None:
    """Serving begins: keep what exists out of every pass, and collect
    nothing while the jobs load."""
    gc.freeze()
    gc.disable()


def after_loading(loaded: bool) -> None:
    """The first load ended (or the process stops before it did): collect
    again. With `loaded`, what the load made is frozen too, and the young
    generation is collected less often."""
    gc.enable()
    if loaded:
        gc.freeze()
        gc.set_threshold(FIRST_GENERATION, 20, 100)


def at_exit() -> None:
    """Whatever happened, leave the collector on."""
    gc.enable()
