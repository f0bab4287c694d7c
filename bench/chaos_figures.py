"""What one chaos scenario cost, from the receiver's arrivals and the
service's execution records: pure functions over a window of ticks, for
`bench.chaos`, and the Markdown table of its rows.

Like `bench.figures`, the ticks each job owes follow from its `Cadence`
alone: the harness checks the service's cron maths, it does not borrow it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.figures import Cadence, percentile, tick_seconds
from bench.receiver import Arrival

EVERY_SECOND_JOBS = 30
EVERY_FIVE_SECONDS_JOBS = 10
ON_TIME_S = 1.0
"""A delivery this soon after its tick is on time (recovery)."""
GRACE_FLOOR_S = 1.0
"""cronsvc fires a tick up to this late even with a grace of 0
(`cronsvc.misfire.MIN_GRACE_S`, documented there)."""
SEND_ALLOWANCE_S = 0.25
"""Time allowed from the decision to fire to the request's arrival."""
STALL_P99_TARGET_MS = 250.0


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSpec:
    cadence: Cadence
    policy: str
    """`misfirePolicy`: `skip` or `fire_once`."""
    grace_s: int

    @property
    def fields(self) -> dict[str, object]:
        return {"misfirePolicy": self.policy, "misfireGraceSeconds": self.grace_s}

    @property
    def late_after_s(self) -> float:
        """A skip-policy delivery later than this after its tick breaks the policy."""
        return max(self.grace_s, GRACE_FLOOR_S) + SEND_ALLOWANCE_S


def job_mix() -> list[JobSpec]:
    """Every third job (by position) `skip` with no grace, the rest
    `fire_once` with 60 s; the five-second jobs spread over the five offsets."""

    def spec(n: int, cadence: Cadence) -> JobSpec:
        skip = n % 3 == 0
        return JobSpec(
            cadence=cadence, policy="skip" if skip else "fire_once", grace_s=0 if skip else 60
        )

    every_second = [spec(n, Cadence(1)) for n in range(EVERY_SECOND_JOBS)]
    every_five = [spec(n, Cadence(5, n % 5)) for n in range(EVERY_FIVE_SECONDS_JOBS)]
    return every_second + every_five


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """An execution record, as much of it as the figures need."""

    job_id: str
    tick: int
    status: str
    trigger: str


def records_from_wire(documents: Iterable[Mapping[str, Any]]) -> list[Record]:
    documents = list(documents)
    ticks = tick_seconds(str(d["scheduledAt"]) for d in documents)
    return [
        Record(
            job_id=str(d["cronJobId"]),
            tick=ticks[str(d["scheduledAt"])],
            status=str(d["status"]),
            trigger=str(d["trigger"]),
        )
        for d in documents
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    """Ticks `first` to `last` (Unix seconds, both included) are counted; the
    fault lasted from `fault_start` to `fault_end` (Unix time)."""

    first: int
    last: int
    fault_start: float
    fault_end: float


Key = tuple[str, int]
"""A job and one of its ticks."""


def owed_ticks(jobs: Mapping[str, JobSpec], window: Window) -> set[Key]:
    return {
        (job, tick)
        for job, spec in jobs.items()
        for tick in spec.cadence.ticks(window.first, window.last)
    }


def lags_by_tick(arrivals: Sequence[Arrival], owed: set[Key]) -> dict[Key, list[float]]:
    """Seconds from tick to arrival of every delivery of an owed tick."""
    ticks = tick_seconds(a.tick for a in arrivals)
    lags: dict[Key, list[float]] = {}
    for arrival in arrivals:
        key = (arrival.job_id, ticks[arrival.tick])
        if key in owed:
            lags.setdefault(key, []).append(arrival.arrived - key[1])
    return lags


def recovery_s(owed: set[Key], lags: Mapping[Key, list[float]], window: Window) -> float | None:
    """0 when every owed tick after the fault's end was delivered once and
    on time; else the seconds from the fault's end to the first tick from
    which every owed tick was, up to the window's end; None when the window
    ends before that."""

    def on_time(key: Key) -> bool:
        delivered = lags.get(key, [])
        return len(delivered) == 1 and delivered[0] <= ON_TIME_S

    late = [key[1] for key in owed if key[1] >= window.fault_end and not on_time(key)]
    if not late:
        return 0.0
    steady = sorted(tick for _, tick in owed if tick > max(late))
    return round(steady[0] - window.fault_end, 1) if steady else None


def skip_late(jobs: Mapping[str, JobSpec], lags: Mapping[Key, list[float]]) -> int:
    """Deliveries of skip-policy jobs that came later than their grace allows."""
    return sum(
        1
        for (job, _), delivered in lags.items()
        if jobs[job].policy == "skip"
        for lag in delivered
        if lag > jobs[job].late_after_s
    )


def fire_once_extra_late(jobs: Mapping[str, JobSpec], lags: Mapping[Key, list[float]]) -> int:
    """Late deliveries of fire_once jobs (past the normal course: more than
    `GRACE_FLOOR_S` + `SEND_ALLOWANCE_S` after the tick) beyond each job's
    first in the window. One fault leaves such a job one catch-up to fire,
    its other overdue ticks coalesced into it (recorded MISSED)."""
    late = Counter(
        job
        for (job, _), delivered in lags.items()
        if jobs[job].policy == "fire_once"
        for lag in delivered
        if lag > GRACE_FLOOR_S + SEND_ALLOWANCE_S
    )
    return sum(n - 1 for n in late.values())


def worst_by_second(lags: Mapping[Key, list[float]], window: Window) -> dict[str, float]:
    """The worst lag (ms) of the ticks of each second of the fault, keyed by
    seconds from the fault's start: which batch a lag percentile comes from."""
    worst: dict[str, float] = {}
    for (_, tick), found in lags.items():
        if window.fault_start <= tick <= window.fault_end:
            key = f"{tick - window.fault_start:.1f}"
            worst[key] = max(worst.get(key, 0.0), round(1000 * max(found), 1))
    return dict(sorted(worst.items(), key=lambda item: float(item[0])))


def _ms(values: list[float], q: float) -> float | None:
    return round(1000 * percentile(values, q), 1) if values else None


def figures(
    window: Window,
    jobs: Mapping[str, JobSpec],
    arrivals: Sequence[Arrival],
    records: Iterable[Record],
    *,
    stall_lag: bool = False,
) -> dict[str, Any]:
    """What the receiver's arrivals and the service's records say about the
    window's owed ticks. With `stall_lag`, also the lag p99 of the ticks from
    one second into the fault to its end."""
    owed = owed_ticks(jobs, window)
    lags = lags_by_tick(arrivals, owed)
    statuses: dict[Key, list[str]] = {}
    for record in records:
        key = (record.job_id, record.tick)
        if key in owed and record.trigger != "manual":
            statuses.setdefault(key, []).append(record.status)
    by_status = Counter(status for found in statuses.values() for status in found)
    outside = [
        lag
        for (_, tick), found in lags.items()
        if not window.fault_start <= tick <= window.fault_end
        for lag in found
    ]
    every = [lag for found in lags.values() for lag in found]
    missing = owed - lags.keys() - statuses.keys()
    result: dict[str, Any] = {
        "expected": len(owed),
        "delivered": len(lags),
        "duplicate_deliveries": sum(len(found) - 1 for found in lags.values()),
        "duplicate_records": sum(len(found) - 1 for found in statuses.values()),
        "unexplained_missing": len(missing),
        "unexplained_missing_sample": [
            {"job": job, "tick": tick} for job, tick in sorted(missing, key=lambda k: k[1])[:10]
        ],
        "unrecorded": len(owed - statuses.keys()),
        "delivered_unrecorded": len(lags.keys() - statuses.keys()),
        "records_by_status": dict(sorted(by_status.items())),
        "missed": by_status["MISSED"],
        "lost": by_status["LOST"],
        "lag_ms_p50": _ms(outside, 0.50),
        "lag_ms_p99": _ms(outside, 0.99),
        "worst_lag_s": round(max(every), 2) if every else None,
        "recovery_s": recovery_s(owed, lags, window),
        "skip_late": skip_late(jobs, lags),
        "fire_once_extra_late": fire_once_extra_late(jobs, lags),
    }
    if stall_lag:
        stalled = [
            lag
            for (_, tick), found in lags.items()
            if window.fault_start + 1 <= tick <= window.fault_end
            for lag in found
        ]
        result["stall_lag_ms_p99"] = _ms(stalled, 0.99)
        result["stall_worst_ms_by_second"] = worst_by_second(lags, window)
    return result


TARGETS = {
    "duplicate_deliveries": "0 duplicate deliveries",
    "duplicate_records": "0 duplicate records",
    "unexplained_missing": "0 unexplained missing",
    "stuck_running": "0 stuck RUNNING",
    "max_leaders": "at most one leader at a time",
    "skip_late": "0 skip-policy deliveries later than their grace",
    "stall_lag_ms_p99": f"lag p99 within a Redis stall at most {STALL_P99_TARGET_MS:g} ms",
}


def missed_targets(row: Mapping[str, Any]) -> list[str]:
    """The keys of `TARGETS` a scenario's row misses."""
    missed = [
        key
        for key in ("duplicate_deliveries", "duplicate_records", "unexplained_missing")
        if row[key] != 0
    ]
    if row["stuck_running"] != 0:
        missed.append("stuck_running")
    if row["max_leaders"] > 1:
        missed.append("max_leaders")
    if row["skip_late"] != 0:
        missed.append("skip_late")
    if "stall_lag_ms_p99" in row and (
        row["stall_lag_ms_p99"] is None or row["stall_lag_ms_p99"] > STALL_P99_TARGET_MS
    ):
        missed.append("stall_lag_ms_p99")
    return missed


_COLUMNS = (
    "scenario",
    "expected",
    "delivered",
    "dup deliv.",
    "dup rec.",
    "unexplained missing",
    "unrecorded (ledger gaps)",
    "MISSED",
    "LOST",
    "stuck RUNNING (none left by s)",
    "lag p50 / p99 ms",
    "worst lag s",
    "recovery s",
    "max leaders",
    "skip late",
    "fire_once extra late",
    "stall p99 ms",
    "targets",
)
_SHORT = {
    "duplicate_deliveries": "dup deliv.",
    "duplicate_records": "dup rec.",
    "unexplained_missing": "missing",
    "stuck_running": "stuck",
    "max_leaders": "leaders",
    "skip_late": "skip late",
    "stall_lag_ms_p99": "stall p99",
}


def table(rows: Iterable[Mapping[str, Any]]) -> str:
    """The rows as a Markdown table, with the targets each one missed."""

    def cells(row: Mapping[str, Any]) -> list[Any]:
        if "not_run" in row or "error" in row:
            why = f"not run: {row['not_run']}" if "not_run" in row else f"ERROR: {row['error']}"
            return [row["scenario"], *[""] * (len(_COLUMNS) - 2), why]
        missed = missed_targets(row)
        recovery = row["recovery_s"]
        return [
            row["scenario"],
            row["expected"],
            row["delivered"],
            row["duplicate_deliveries"],
            row["duplicate_records"],
            row["unexplained_missing"],
            f"{row['unrecorded']} ({row['ledger_gaps']})",
            row["missed"],
            row["lost"],
            f"{row['stuck_running']} ({row['running_cleared_s']})",
            f"{row['lag_ms_p50']} / {row['lag_ms_p99']}",
            row["worst_lag_s"],
            f">{row['window_after_fault_s']}" if recovery is None else recovery,
            row["max_leaders"],
            row["skip_late"],
            row.get("fire_once_extra_late", "-"),
            row.get("stall_lag_ms_p99", "-"),
            "FAIL: " + ", ".join(_SHORT[k] for k in missed) if missed else "pass",
        ]

    lines = [_line(_COLUMNS), _line("---" for _ in _COLUMNS)]
    lines += [_line(cells(row)) for row in rows]
    return "\n".join(lines)


def _line(cells: Iterable[Any]) -> str:
    return "| " + " | ".join("" if c is None else str(c) for c in cells) + " |"
