"""The chaos harness's figures (bench.chaos_figures): what a scenario's arrivals and
records add up to. Pure tests over made-up windows; the harness itself, with
its faults, is run by `make chaos`, not here."""

from __future__ import annotations

from typing import Any

from bench.chaos_figures import (
    JobSpec,
    Record,
    Window,
    figures,
    job_mix,
    missed_targets,
    records_from_wire,
    table,
)
from bench.figures import Cadence
from bench.receiver import Arrival
from tests.helpers_api import stamp

T0 = 1_800_000_000  # a whole minute: 2027-01-15T08:00:00Z
EVERY_SECOND = JobSpec(cadence=Cadence(1), policy="fire_once", grace_s=60)
SKIP = JobSpec(cadence=Cadence(1), policy="skip", grace_s=0)


def on_time(job: str, ticks: range, lag: float = 0.01) -> list[Arrival]:
    return [Arrival(job, stamp(t), t + lag) for t in ticks]


def recorded(job: str, ticks: range, status: str = "SUCCESS") -> list[Record]:
    return [Record(job_id=job, tick=t, status=status, trigger="schedule") for t in ticks]


def window(fault_start: float, fault_end: float, last: int = 20) -> Window:
    return Window(first=T0, last=T0 + last, fault_start=T0 + fault_start, fault_end=T0 + fault_end)


def test_the_mix_holds_every_second_and_five_second_jobs_some_skipping_with_no_grace() -> None:
    mix = job_mix()
    assert [s.cadence.cron for s in mix].count("* * * * * *") == 30
    assert {s.cadence.cron for s in mix[30:]} == {f"{n}/5 * * * * *" for n in range(5)}
    skip = [s for s in mix if s.policy == "skip"]
    assert skip and all(s.grace_s == 0 for s in skip)
    assert {s.policy for s in mix} == {"skip", "fire_once"}
    assert list(Cadence(5, 2).ticks(T0, T0 + 12)) == [T0 + 2, T0 + 7, T0 + 12]


def test_records_are_read_from_the_api_documents() -> None:
    document = {"cronJobId": "a", "scheduledAt": stamp(T0 + 3), "status": "MISSED"}
    (record,) = records_from_wire([{**document, "trigger": "catchup", "id": "x"}])
    assert record == Record(job_id="a", tick=T0 + 3, status="MISSED", trigger="catchup")


def test_a_tick_delivered_or_recorded_twice_is_a_duplicate() -> None:
    jobs = {"a": EVERY_SECOND}
    arrivals = [*on_time("a", range(T0, T0 + 21)), Arrival("a", stamp(T0 + 4), T0 + 9.0)]
    records = recorded("a", range(T0, T0 + 21))
    records.append(Record(job_id="a", tick=T0 + 5, status="SUCCESS", trigger="catchup"))
    result = figures(window(10, 10), jobs, arrivals, records)
    assert (result["expected"], result["delivered"]) == (21, 21)
    assert (result["duplicate_deliveries"], result["duplicate_records"]) == (1, 1)
    assert result["worst_lag_s"] == 5.0


def test_a_tick_neither_delivered_nor_recorded_is_unexplained_and_a_missed_one_is_not() -> None:
    jobs = {"a": EVERY_SECOND, "b": EVERY_SECOND}
    arrivals = on_time("a", range(T0, T0 + 21)) + on_time("b", range(T0, T0 + 10))
    records = recorded("a", range(T0, T0 + 18))  # a's last three ticks: delivered, unrecorded
    records += recorded("b", range(T0, T0 + 10)) + recorded("b", range(T0 + 10, T0 + 15), "MISSED")
    result = figures(window(10, 15), jobs, arrivals, records)
    assert result["unexplained_missing"] == 6  # b's ticks 15 to 20
    assert result["unexplained_missing_sample"][0] == {"job": "b", "tick": T0 + 15}
    assert (result["unrecorded"], result["delivered_unrecorded"]) == (9, 3)
    assert (result["missed"], result["lost"]) == (5, 0)
    assert result["records_by_status"] == {"MISSED": 5, "SUCCESS": 28}


def test_a_manual_run_settles_no_tick() -> None:
    records = [Record(job_id="a", tick=T0 + 3, status="SUCCESS", trigger="manual")]
    result = figures(window(10, 10, last=5), {"a": EVERY_SECOND}, [], records)
    assert (result["unexplained_missing"], result["duplicate_records"]) == (6, 0)


def test_lag_outside_the_fault_leaves_out_the_ticks_within_it() -> None:
    arrivals = on_time("a", range(T0, T0 + 10), 0.02) + on_time("a", range(T0 + 10, T0 + 13), 4.0)
    arrivals += on_time("a", range(T0 + 13, T0 + 21), 0.02)
    result = figures(window(9.5, 12.5), {"a": EVERY_SECOND}, arrivals, [], stall_lag=True)
    assert result["lag_ms_p50"] == result["lag_ms_p99"] == 20.0
    assert result["worst_lag_s"] == 4.0
    assert result["stall_lag_ms_p99"] == 4000.0  # ticks 11 and 12: one second in, to the end


def test_the_stall_row_names_the_worst_lag_of_each_second_of_the_fault() -> None:
    arrivals = on_time("a", range(T0, T0 + 10), 0.02) + on_time("a", range(T0 + 10, T0 + 13), 4.0)
    arrivals += on_time("b", range(T0, T0 + 21), 0.25)
    jobs = {"a": EVERY_SECOND, "b": EVERY_SECOND}
    result = figures(window(9.5, 12.5), jobs, arrivals, [], stall_lag=True)
    assert result["stall_worst_ms_by_second"] == {"0.5": 4000.0, "1.5": 4000.0, "2.5": 4000.0}
    assert "stall_worst_ms_by_second" not in figures(window(9.5, 12.5), jobs, arrivals, [])


def test_recovery_runs_from_the_fault_end_to_the_first_on_time_tick_after_the_last_late_one() -> (
    None
):
    late_until_14 = on_time("a", range(T0, T0 + 15), 2.0) + on_time("a", range(T0 + 15, T0 + 21))
    assert figures(window(5, 10.5), {"a": EVERY_SECOND}, late_until_14, [])["recovery_s"] == 4.5
    steady = on_time("a", range(T0, T0 + 21))
    assert figures(window(5, 10.5), {"a": EVERY_SECOND}, steady, [])["recovery_s"] == 0.0
    missing_last = on_time("a", range(T0, T0 + 20))
    assert figures(window(5, 10.5), {"a": EVERY_SECOND}, missing_last, [])["recovery_s"] is None


def test_a_skip_job_delivered_past_its_grace_is_late_and_a_fire_once_job_is_not() -> None:
    jobs = {"skip": SKIP, "once": EVERY_SECOND}
    arrivals = [
        Arrival("skip", stamp(T0), T0 + 0.9),  # within the service's 1 s floor
        Arrival("skip", stamp(T0 + 1), T0 + 1 + 30.0),
        Arrival("once", stamp(T0 + 1), T0 + 1 + 30.0),  # fire_once, 60 s of grace
    ]
    assert figures(window(0, 0, last=1), jobs, arrivals, [])["skip_late"] == 1


def test_a_fire_once_job_fires_one_catch_up_per_fault_and_more_are_counted() -> None:
    jobs = {"once": EVERY_SECOND, "other": EVERY_SECOND}
    arrivals = [
        Arrival("once", stamp(T0), T0 + 1.0),  # late, but within the normal course
        Arrival("once", stamp(T0 + 1), T0 + 1 + 8.0),  # the catch-up
        Arrival("once", stamp(T0 + 2), T0 + 2 + 7.0),  # one more: should have been MISSED
        Arrival("once", stamp(T0 + 3), T0 + 3 + 6.0),
        Arrival("other", stamp(T0 + 1), T0 + 1 + 8.0),
    ]
    assert figures(window(0, 0, last=3), jobs, arrivals, [])["fire_once_extra_late"] == 2


def row(**changes: Any) -> dict[str, Any]:
    good = {
        "scenario": "x",
        "expected": 10,
        "delivered": 10,
        "duplicate_deliveries": 0,
        "duplicate_records": 0,
        "unexplained_missing": 0,
        "unrecorded": 0,
        "ledger_gaps": 0,
        "missed": 0,
        "lost": 0,
        "stuck_running": 0,
        "running_cleared_s": 23.0,
        "lag_ms_p50": 2.0,
        "lag_ms_p99": 9.0,
        "worst_lag_s": 0.1,
        "recovery_s": 0.0,
        "window_after_fault_s": 20,
        "max_leaders": 1,
        "skip_late": 0,
    }
    return good | changes


def test_each_target_a_row_misses_is_named() -> None:
    assert missed_targets(row()) == []
    assert missed_targets(row(max_leaders=0)) == []  # none leading is not two leading
    bad = row(duplicate_records=1, unexplained_missing=3, stuck_running=2, max_leaders=2)
    assert missed_targets(bad) == [
        "duplicate_records",
        "unexplained_missing",
        "stuck_running",
        "max_leaders",
    ]
    assert missed_targets(row(skip_late=4, stall_lag_ms_p99=251.0)) == [
        "skip_late",
        "stall_lag_ms_p99",
    ]
    assert missed_targets(row(stall_lag_ms_p99=250.0)) == []


def test_the_table_marks_failed_and_skipped_scenarios() -> None:
    lines = table(
        [
            row(),
            row(scenario="y", skip_late=2, recovery_s=None),
            {"scenario": "z", "not_run": "n"},
            {"scenario": "e", "error": "RuntimeError: no leader"},
        ]
    ).splitlines()
    assert lines[2].endswith("| pass |")
    assert "| >20 |" in lines[3] and lines[3].endswith("| FAIL: skip late |")
    assert lines[4].startswith("| z |") and lines[4].endswith("| not run: n |")
    assert lines[5].endswith("| ERROR: RuntimeError: no leader |")
