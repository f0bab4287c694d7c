"""A measuring window: the ticks of D whole seconds, the CPU the processes
spent on them, and their memory at its end.

CPU is sampled half a second before the window's first tick and then half a
second after each tick, so each one-second slice holds one tick's work (its
claim is taken `scheduler.claim_ahead_s` early, its requests go out at the
tick). The median slice is the cost of a second in the normal course; the
total includes whatever else fell in the window (a full resync of the store
every `scheduler.resync_interval_s`, say).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Mapping
from typing import Any

from bench.figures import Cadence, summarise
from bench.procstat import ProcSample, cpu_between, sample_all
from bench.receiver import Arrival


async def sleep_until(instant: float) -> None:
    """Sleep until the wall-clock instant `instant` (Unix seconds)."""
    await asyncio.sleep(max(0.0, instant - time.time()))


def _service_cpu(
    before: dict[str, ProcSample | None], after: dict[str, ProcSample | None]
) -> float:
    used = cpu_between(before, after)
    return sum(v for name, v in used.items() if name.startswith("cronsvc") and v is not None)


async def measure_window(
    arrivals: list[Arrival],
    cadences: Mapping[str, Cadence],
    pids: dict[str, int],
    *,
    seconds: int,
    lead_s: int = 2,
    drain_s: float = 2.0,
) -> dict[str, Any]:
    """Wait `lead_s` whole seconds, count `seconds` ticks, wait `drain_s` for
    the last ones to arrive; answer the figures of `summarise` with `cpu`
    (seconds per process, and per fire of the `cronsvc` processes) and
    `processes` (each one's CPU and memory since it started)."""
    first = int(time.time()) + 1 + lead_s
    last = first + seconds - 1
    await sleep_until(first - 0.5)
    start = previous = sample_all(pids)
    slices = []
    for tick in range(first, last + 1):
        await sleep_until(tick + 0.5)
        current = sample_all(pids)
        slices.append(_service_cpu(previous, current))
        previous = current
    await sleep_until(last + drain_s)
    end = sample_all(pids)
    figures = summarise(arrivals, cadences, first, last)
    service_cpu = _service_cpu(start, previous)
    fires_per_s = figures["fires"] / seconds
    return {
        "first_tick": first,
        "last_tick": last,
        **figures,
        "cpu": {
            "seconds_by_process": cpu_between(start, previous),
            "service_seconds": round(service_cpu, 3),
            "service_percent_of_one_core": round(100 * service_cpu / seconds, 1),
            "service_us_per_fire": (
                round(1e6 * service_cpu / figures["fires"], 1) if figures["fires"] else None
            ),
            "service_us_per_fire_median_second": (
                round(1e6 * statistics.median(slices) / fires_per_s, 1) if fires_per_s else None
            ),
            "service_seconds_max_second": round(max(slices), 3),
        },
        # Since each process started: CPU seconds, resident MiB now and at the peak.
        "processes": {
            name: None
            if s is None
            else {
                "cpu_total_s": round(s.cpu_s, 2),
                "rss_mib": round(s.rss_mib),
                "peak_rss_mib": round(s.peak_rss_mib),
            }
            for name, s in end.items()
        },
    }
