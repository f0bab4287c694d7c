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
MEMBERSHIP_JOBS = 200
"""Every-second jobs on the rig whose instances come and go."""
ON_TIME_S = 1.0
"""A delivery this soon after its tick is on time (recovery)."""
GRACE_FLOOR_S = 1.0
"""cronsvc fires a tick up to this late even with a grace of 0
(`cronsvc.misfire.MIN_GRACE_S`, documented there)."""
SEND_ALLOWANCE_S = 0.25
"""Time allowed from the decision to fire to the request's arrival."""
STALL_P99_TARGET_MS = 250.0
HANDOVER_SLACK_S = 2.0
"""Beyond the heartbeats a membership change waits for: a resync of the
jobs and one claim."""
HANDOVER_SAMPLE = 5


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


def job_mix(
    every_second: int = EVERY_SECOND_JOBS, every_five: int = EVERY_FIVE_SECONDS_JOBS
) -> list[JobSpec]:
    """Every third job (by position) `skip` with no grace, the rest
    `fire_once` with 60 s; the five-second jobs spread over the five offsets."""

    def spec(n: int, cadence: Cadence) -> JobSpec:
        skip = n % 3 == 0
        return JobSpec(
            cadence=cadence, policy="skip" if skip else "fire_once", grace_s=0 if skip else 60
        )

    return [spec(n, Cadence(1)) for n in range(every_second)] + [
        spec(n, Cadence(5, n % 5)) for n in range(every_five)
    ]


def membership_mix() -> list[JobSpec]:
    """`MEMBERSHIP_JOBS` every-second jobs, their policies mixed as in `job_mix`."""
    return job_mix(MEMBERSHIP_JOBS, 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """An execution record, as much of it as the figures need."""

    job_id: str
    tick: int
    status: str
    trigger: str
    instance: str = ""
    """The `instanceId` of the instance that claimed the tick."""


def records_from_wire(documents: Iterable[Mapping[str, Any]]) -> list[Record]:
    documents = list(documents)
    ticks = tick_seconds(str(d["scheduledAt"]) for d in documents)
    return [
        Record(
            job_id=str(d["cronJobId"]),
            tick=ticks[str(d["scheduledAt"])],
            status=str(d["status"]),
            trigger=str(d["trigger"]),
            instance=str(d.get("instanceId") or ""),
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Membership:
    """One change of the live instances within a window."""

    joined: bool
    """True: `instance` joined the cluster; False: it was killed."""
    instance: str
    """Its `instanceId`."""
    at: float
    """Unix time: the newcomer's first `/readyz` 200, or the kill."""
    target_s: float


def handover_target_s(heartbeat_interval_s: float, *, joined: bool) -> float:
    """What a change may take, from the cluster's heartbeat interval: the
    others see a newcomer at their next announcement (half an interval); a
    dead instance's announcement expires (1.5 intervals) and is noticed at
    the next one. Either way `HANDOVER_SLACK_S` on top."""
    noticed = heartbeat_interval_s / 2
    expired = 0.0 if joined else 1.5 * heartbeat_interval_s
    return expired + noticed + HANDOVER_SLACK_S


def handover(
    change: Membership, records: Iterable[Record], arrivals: Sequence[Arrival]
) -> dict[str, Any]:
    """How long the jobs a membership change moved waited for their new
    owner, from the records (which instance claimed each tick) and the
    arrivals (when it was delivered: a fire is timed by its first arrival,
    as lag is).

    A join moves the jobs the newcomer fired at least once: each waited from
    its readiness to its first delivery of the job. A kill moves the jobs the
    killed instance delivered before the kill: each waited from the kill to
    the first delivery of the job by another instance, arriving after it
    (`None`, counted as `handover_unfired`, when none came in the window)."""
    ticks = tick_seconds(a.tick for a in arrivals)
    arrived: dict[Key, float] = {}
    for arrival in arrivals:
        key = (arrival.job_id, ticks[arrival.tick])
        arrived[key] = min(arrived.get(key, arrival.arrived), arrival.arrived)
    fired: dict[str, list[tuple[float, str]]] = {}
    for record in records:
        at = arrived.get((record.job_id, record.tick))
        if at is not None and record.trigger != "manual":
            fired.setdefault(record.job_id, []).append((at, record.instance))
    waits: dict[str, float | None] = {}
    for job, fires in fired.items():
        if change.joined:
            newcomer = [at for at, by in fires if by == change.instance]
            if newcomer:
                waits[job] = min(newcomer) - change.at
        elif any(by == change.instance and at < change.at for at, by in fires):
            survivors = [at for at, by in fires if by != change.instance and at >= change.at]
            waits[job] = min(survivors) - change.at if survivors else None
    known = [wait for wait in waits.values() if wait is not None]
    slowest = sorted(waits.items(), key=lambda item: float("inf") if item[1] is None else item[1])
    return {
        "handover": "join" if change.joined else "kill",
        "handover_jobs": len(waits),
        "handover_unfired": len(waits) - len(known),
        "handover_s": round(max(known), 2) if known else None,
        "handover_target_s": round(change.target_s, 2),
        "fired_by_instance": dict(
            sorted(Counter(by for fires in fired.values() for _, by in fires).items())
        ),
        "handover_slowest": [
            {"job": job, "s": None if wait is None else round(wait, 2)}
            for job, wait in slowest[::-1][:HANDOVER_SAMPLE]
        ],
    }


def handover_missed(row: Mapping[str, Any]) -> bool:
    """No job moved (the change measured nothing), one never fired on its new
    owner, or one waited longer than the target."""
    return (
        row["handover_jobs"] == 0
        or row["handover_unfired"] != 0
        or row["handover_s"] is None
        or row["handover_s"] > row["handover_target_s"]
    )


TARGETS = {
    "duplicate_deliveries": "0 duplicate deliveries",
    "duplicate_records": "0 duplicate records",
    "unexplained_missing": "0 unexplained missing",
    "stuck_running": "0 stuck RUNNING",
    "max_leaders": "at most one leader at a time",
    "skip_late": "0 skip-policy deliveries later than their grace",
    "stall_lag_ms_p99": f"lag p99 within a Redis stall at most {STALL_P99_TARGET_MS:g} ms",
    "handover": "every job a membership change moved fired by its new owner within the target",
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
    if "handover" in row and handover_missed(row):
        missed.append("handover")
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
    "handover s (jobs) / target",
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
    "handover": "handover",
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
            _handover_cell(row),
            "FAIL: " + ", ".join(_SHORT[k] for k in missed) if missed else "pass",
        ]

    lines = [_line(_COLUMNS), _line("---" for _ in _COLUMNS)]
    lines += [_line(cells(row)) for row in rows]
    return "\n".join(lines)


def _handover_cell(row: Mapping[str, Any]) -> str:
    if "handover" not in row:
        return "-"
    never = f", {row['handover_unfired']} never" if row["handover_unfired"] else ""
    jobs = f"{row['handover_jobs']} {row['handover']}{never}"
    return f"{row['handover_s']} ({jobs}) / {row['handover_target_s']:g}"


def _line(cells: Iterable[Any]) -> str:
    return "| " + " | ".join("" if c is None else str(c) for c in cells) + " |"
