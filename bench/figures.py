"""What a run's arrivals say: fires against the ticks expected, lag percentiles.

Every benchmark job fires on whole seconds at a fixed `Cadence`, so the ticks
it owes in a window follow from Unix time alone, without cronsvc's cron code:
the harness checks the service, it does not borrow its maths.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bench.receiver import Arrival

DAY_S = 86400
SHAPES = ("every-second", "per-minute")


@dataclass(frozen=True, slots=True)
class Cadence:
    """Fires every `period_s` seconds (1, a divisor of 60, 60 or 86400),
    `offset_s` into each period of Unix time: as the cron expression `cron`
    does in UTC."""

    period_s: int
    offset_s: int = 0

    @property
    def cron(self) -> str:
        if self.period_s == 1:
            return "* * * * * *"
        if self.period_s < 60 and 60 % self.period_s == 0:
            return f"{self.offset_s}/{self.period_s} * * * * *"
        if self.period_s == 60:
            return f"{self.offset_s} * * * * *"
        if self.period_s == DAY_S:
            hour, rest = divmod(self.offset_s, 3600)
            minute, second = divmod(rest, 60)
            return f"{minute} {hour} * * *" if second == 0 else f"{second} {minute} {hour} * * *"
        raise ValueError(f"no cron expression for a period of {self.period_s} s")

    def ticks(self, first: int, last: int) -> range:
        """Its ticks from `first` to `last` (Unix seconds, both included)."""
        start = first + (self.offset_s - first) % self.period_s
        return range(start, last + 1, self.period_s)


def shape_cadences(shape: str, count: int, *, start_s: int = 0) -> list[Cadence]:
    """`every-second`: all due on every second. `per-minute`: once a minute
    each, at seconds spread evenly from `start_s` (count/60 due each second)."""
    if shape == "every-second":
        return [Cadence(1)] * count
    if shape == "per-minute":
        return [Cadence(60, (start_s + i) % 60) for i in range(count)]
    raise ValueError(f"unknown shape {shape!r}")


def percentile(values: list[float], q: float) -> float:
    """Nearest rank on the sorted values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ms(values: list[float], q: float) -> float | None:
    return round(percentile(values, q), 1) if values else None


def tick_seconds(stamps: Iterable[str]) -> dict[str, int]:
    """Unix seconds of each distinct `scheduledAt` stamp."""
    return {
        s: round(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()) for s in set(stamps)
    }


def summarise(
    arrivals: list[Arrival], cadences: Mapping[str, Cadence], first: int, last: int
) -> dict[str, Any]:
    """Figures for the ticks from `first` to `last` (Unix seconds, both
    included) of the jobs in `cadences`: every arrival whose tick lies there
    is counted, the jobs' owed ticks that never arrived are `missed`, second
    copies `duplicates`, and arrivals of ticks no job owes `unexpected`."""
    ticks = tick_seconds(a.tick for a in arrivals)
    in_window = [(a, ticks[a.tick]) for a in arrivals if first <= ticks[a.tick] <= last]
    counts = Counter((a.job_id, tick) for a, tick in in_window)
    expected = {(job, tick) for job, c in cadences.items() for tick in c.ticks(first, last)}
    lags = [(a.arrived - tick) * 1000 for a, tick in in_window]
    by_tick: dict[int, list[float]] = {}
    for (_, tick), lag in zip(in_window, lags, strict=True):
        by_tick.setdefault(tick, []).append(lag)
    firsts = [min(v) for v in by_tick.values()]
    lasts = [max(v) for v in by_tick.values()]
    seconds = last - first + 1
    arrived_expected = len(expected & counts.keys())
    return {
        "window_s": seconds,
        "expected_fires": len(expected),
        "fires": arrived_expected,
        "expected_per_s": round(len(expected) / seconds, 1),
        "fires_per_s": round(arrived_expected / seconds, 1),
        "duplicates": sum(n - 1 for n in counts.values() if n > 1),
        "missed": len(expected) - arrived_expected,
        "unexpected": len(counts.keys() - expected),
        "lag_ms_p50": _ms(lags, 0.50),
        "lag_ms_p90": _ms(lags, 0.90),
        "lag_ms_p99": _ms(lags, 0.99),
        "lag_ms_max": _ms(lags, 1.0),
        # A tick's burst: when its first and its last request arrived.
        "burst_first_ms_p50": _ms(firsts, 0.50),
        "burst_first_ms_p99": _ms(firsts, 0.99),
        "burst_last_ms_p50": _ms(lasts, 0.50),
        "burst_last_ms_p99": _ms(lasts, 0.99),
        # Tick by tick, to show what comes back periodically (None: nothing arrived).
        "burst_last_ms_by_tick": [
            round(max(by_tick[t])) if t in by_tick else None for t in range(first, last + 1)
        ],
    }


def correct(figures: Mapping[str, Any]) -> bool:
    """Every owed tick arrived, once, and nothing else did."""
    counts = [figures[k] for k in ("expected_fires", "missed", "duplicates", "unexpected")]
    return counts[0] > 0 and counts[1:] == [0, 0, 0]
