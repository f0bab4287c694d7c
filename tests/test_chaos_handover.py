"""The chaos harness's handover figure (bench.chaos_figures.handover): how long
the jobs a membership change moved waited for their new owner, read from
which instance each record names and when its tick arrived. Pure tests over
made-up records and arrivals."""

from __future__ import annotations

from bench.chaos_figures import (
    Membership,
    Record,
    handover,
    handover_target_s,
    missed_targets,
    table,
)
from bench.receiver import Arrival
from tests.helpers_api import stamp
from tests.test_chaos import row

T0 = 1_800_000_000


def fired(job: str, by: str, ticks: range, lag: float = 0.01) -> tuple[list[Record], list[Arrival]]:
    records = [
        Record(job_id=job, tick=t, status="SUCCESS", trigger="schedule", instance=by) for t in ticks
    ]
    return records, [Arrival(job, stamp(t), t + lag) for t in ticks]


def merge(*parts: tuple[list[Record], list[Arrival]]) -> tuple[list[Record], list[Arrival]]:
    return [r for p in parts for r in p[0]], [a for p in parts for a in p[1]]


def test_the_targets_follow_from_the_heartbeat_interval() -> None:
    assert handover_target_s(5.0, joined=True) == 2.5 + 2.0
    assert handover_target_s(5.0, joined=False) == 7.5 + 2.5 + 2.0


def test_a_join_times_each_job_the_newcomer_fired_from_its_readiness_to_its_first_arrival() -> None:
    records, arrivals = merge(
        fired("a", "old", range(T0, T0 + 13)),
        fired("a", "new", range(T0 + 13, T0 + 20), lag=0.05),
        fired("b", "old", range(T0, T0 + 20)),  # not moved
        fired("c", "old", range(T0, T0 + 11)),
        fired("c", "new", range(T0 + 11, T0 + 20)),
    )
    change = Membership(joined=True, instance="new", at=T0 + 10.5, target_s=4.5)
    result = handover(change, records, arrivals)
    assert (result["handover"], result["handover_jobs"], result["handover_unfired"]) == (
        "join",
        2,
        0,
    )
    assert result["handover_s"] == 2.55  # a: tick 13 arrived 50 ms after it
    assert result["handover_slowest"][0] == {"job": "a", "s": 2.55}
    assert missed_targets(row(**result)) == []


def test_a_kill_times_each_job_the_victim_fired_from_the_kill_to_a_survivors_first_arrival() -> (
    None
):
    records, arrivals = merge(
        fired("a", "dead", range(T0, T0 + 10)),
        fired("a", "s1", range(T0 + 18, T0 + 20)),  # 8 s after the kill
        fired("b", "s2", range(T0, T0 + 20)),  # never the victim's
        fired("c", "dead", range(T0, T0 + 5)),
        fired("c", "s2", range(T0 + 5, T0 + 20)),
    )
    change = Membership(joined=False, instance="dead", at=T0 + 9.9, target_s=12.0)
    result = handover(change, records, arrivals)
    assert (result["handover_jobs"], result["handover_s"]) == (2, 8.11)
    assert missed_targets(row(**result)) == []
    slow = Membership(joined=False, instance="dead", at=T0 + 9.9, target_s=5.0)
    assert missed_targets(row(**handover(slow, records, arrivals))) == ["handover"]


def test_a_tick_recorded_but_never_delivered_is_no_fire_and_a_job_never_taken_over_misses() -> None:
    records, arrivals = fired("a", "dead", range(T0, T0 + 10))
    # Claimed by the victim just before the kill, never sent: the survivor's
    # MISSED record of a later tick is not a fire either.
    records += [
        Record(job_id="a", tick=T0 + 10, status="RUNNING", trigger="schedule", instance="dead"),
        Record(job_id="a", tick=T0 + 11, status="MISSED", trigger="catchup", instance="s1"),
    ]
    change = Membership(joined=False, instance="dead", at=T0 + 9.9, target_s=12.0)
    result = handover(change, records, arrivals)
    assert (result["handover_jobs"], result["handover_unfired"], result["handover_s"]) == (
        1,
        1,
        None,
    )
    assert result["handover_slowest"] == [{"job": "a", "s": None}]
    assert missed_targets(row(**result)) == ["handover"]


def test_a_change_that_moved_nothing_measured_nothing_and_misses() -> None:
    records, arrivals = fired("a", "old", range(T0, T0 + 20))
    change = Membership(joined=True, instance="new", at=T0 + 10.5, target_s=4.5)
    result = handover(change, records, arrivals)
    assert (result["handover_jobs"], result["handover_s"]) == (0, None)
    assert missed_targets(row(**result)) == ["handover"]


def test_the_table_shows_the_handover_against_its_target_and_dashes_for_other_rows() -> None:
    records, arrivals = merge(
        fired("a", "dead", range(T0, T0 + 10)), fired("a", "s1", range(T0 + 10, T0 + 20))
    )
    change = Membership(joined=False, instance="dead", at=T0 + 9.9, target_s=12.0)
    lines = table([row(**handover(change, records, arrivals)), row()]).splitlines()
    assert "| handover s (jobs) / target |" in lines[0]
    assert lines[2].endswith("| 0.11 (1 kill) / 12 | pass |")
    assert lines[3].endswith("| - | - | pass |")
