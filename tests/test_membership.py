"""Which instance a job's ticks go to first while leases are down: rendezvous
hashing over the live instances, as pure functions, and the view a heartbeat
keeps of those instances."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

from cronsvc.coord.local import LocalCoordinator
from cronsvc.leader import LeaderDuties
from cronsvc.membership import Membership, preferred
from cronsvc.metrics import Metrics
from cronsvc.store import Store
from tests.fakes import SteppedClock

JOBS = [f"job-{n:04d}" for n in range(3000)]
FOUR = ["i-a", "i-b", "i-c", "i-d"]


def owners(instances: list[str]) -> dict[str, str | None]:
    return {job: preferred(job, instances) for job in JOBS}


def test_a_leaving_instance_moves_only_the_jobs_that_preferred_it() -> None:
    before = owners(FOUR)
    after = owners(FOUR[:3])
    moved = {job for job in JOBS if before[job] != after[job]}
    assert moved == {job for job in JOBS if before[job] == "i-d"}


def test_a_joining_instance_takes_about_its_share_and_nothing_moves_between_the_others() -> None:
    before = owners(FOUR[:3])
    after = owners(FOUR)
    moved = [job for job in JOBS if before[job] != after[job]]
    assert {after[job] for job in moved} == {"i-d"}
    assert len(JOBS) / 4 * 0.8 < len(moved) < len(JOBS) / 4 * 1.2


def test_jobs_spread_evenly_over_the_instances() -> None:
    shares = Counter(owners(FOUR[:3]).values())
    assert set(shares) == set(FOUR[:3])
    assert all(len(JOBS) / 3 * 0.85 < count < len(JOBS) / 3 * 1.15 for count in shares.values())


def test_the_preference_is_the_same_in_every_process() -> None:
    """Not Python's salted `hash`: two processes must agree on the instance."""
    script = "from cronsvc.membership import preferred; print(preferred('job-7', ['a', 'b', 'c']))"
    answers = {
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            cwd=Path(__file__).parent.parent,
        ).stdout.strip()
        for seed in ("1", "2", "3")
    }
    assert answers == {preferred("job-7", ["a", "b", "c"])}


def test_split_keeps_the_jobs_that_prefer_this_instance_first() -> None:
    membership = Membership("i-b")
    membership.update(["i-c", "i-a", "i-b", "i-a"])
    assert membership.live == ("i-a", "i-b", "i-c")
    mine, others = membership.split(JOBS, lambda job: job)
    assert sorted(mine + others) == sorted(JOBS)
    assert mine and all(preferred(job, FOUR[:3]) == "i-b" for job in mine)
    assert all(preferred(job, FOUR[:3]) != "i-b" for job in others)


def test_split_gives_every_job_to_an_instance_that_knows_no_view_including_itself() -> None:
    unknown = Membership("i-b")
    assert unknown.split(JOBS[:10], lambda job: job) == (JOBS[:10], [])
    lost = Membership("i-b")
    lost.update(["i-a", "i-c"])  # the coordinator lost its state since our heartbeat
    assert lost.split(JOBS[:10], lambda job: job) == (JOBS[:10], [])
    alone = Membership("i-b")
    alone.update(["i-b"])
    assert alone.split(JOBS[:10], lambda job: job) == (JOBS[:10], [])


async def test_each_heartbeat_round_reads_the_live_instances_into_the_view(store: Store) -> None:
    coordinator = LocalCoordinator(lock_path=None)
    clock = SteppedClock()
    views = {}
    for instance in ("i-a", "i-b"):
        views[instance] = Membership(instance)
        leader = LeaderDuties(
            store=store,
            coordinator=coordinator,
            clock=clock,
            metrics=Metrics(),
            instance_id=instance,
            started_at=clock.now(),
            heartbeat_interval_s=20.0,
            retention_days=36500,
            reap_grace=False,
            on_adopted=lambda executions: None,
            membership=views[instance],
        )
        await leader.step()
    assert views["i-a"].live == ("i-a",)  # read before the second instance announced itself
    assert views["i-b"].live == ("i-a", "i-b")
