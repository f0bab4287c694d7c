"""The scheduler keeps only the jobs this instance owns (`cronsvc.ownership`),
and moves jobs in and out as the owners change. Real scheduler on a real
SQLite store; its due ticks go to a sink that records them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime

import pytest

from cronsvc import jobsync
from cronsvc.clock import Clock, SystemClock
from cronsvc.config import SchedulerConfig
from cronsvc.domain import Job, JobSpec
from cronsvc.health import Dependency, HealthMonitor
from cronsvc.ids import new_id
from cronsvc.leader import LeaderDuties
from cronsvc.metrics import Metrics
from cronsvc.ownership import Membership, Ownership
from cronsvc.scheduler import LOADING_SHARE_S, Scheduler
from cronsvc.service import _hand_over
from cronsvc.store import SchedulePage, Store
from cronsvc.ticks import DueTick, HandBack
from tests.fakes import SteppedClock
from tests.fixtures_redis import Opener, RedisServer
from tests.processes import stopped

ME, OTHER = "instance-a", "instance-b"
JOBS = 40


class Fired:
    """A tick sink: what it was handed, by job."""

    def __init__(self) -> None:
        self.jobs: set[str] = set()

    def claim_lead(self, configured_s: float) -> float:
        return configured_s

    def fire(self, due: Sequence[DueTick]) -> None:
        self.jobs.update(d.job.id for d in due)


def job() -> Job:
    now = datetime.now(UTC)
    return Job(
        id=new_id(),
        spec=JobSpec(
            name=new_id(), cron_expression="* * * * * *", webhook_url="http://127.0.0.1:9/"
        ),
        created_at=now,
        updated_at=now,
        last_tick=now,
    )


class Rig:
    def __init__(self, store: Store, clock: Clock | None = None) -> None:
        self.store = store
        self.metrics = Metrics()
        self.membership = Membership(ME)
        self.membership.update([ME, OTHER])
        self.fired = Fired()
        self.scheduler = Scheduler(
            store=store,
            sink=self.fired,
            handback=HandBack(),
            clock=clock or SystemClock(),
            config=SchedulerConfig(),
            metrics=self.metrics,
            health=HealthMonitor(probes={Dependency.STORE: store.ping}, metrics=self.metrics),
            instance_id=ME,
            started_at=datetime.now(UTC),
            membership=self.membership,
        )

    def moves(self, direction: str) -> float:
        return self.metrics.get("cronsvc_ownership_moves_total", direction=direction)


@pytest.fixture
async def rig(store: Store) -> AsyncIterator[tuple[Rig, list[Job]]]:
    jobs = [job() for _ in range(JOBS)]
    for j in jobs:
        await store.create_job(j)
    made = Rig(store)
    running = asyncio.create_task(made.scheduler.run())
    await asyncio.wait_for(made.scheduler.ready.wait(), 10)
    yield made, jobs
    made.scheduler.stop()
    await asyncio.wait_for(running, 10)


def split(jobs: list[Job]) -> tuple[set[str], set[str]]:
    both = Ownership(ME, [OTHER])
    mine = {j.id for j in jobs if both.owns(j.id)}
    return mine, {j.id for j in jobs} - mine


async def until(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    async with asyncio.timeout(within_s):
        while True:
            if condition():
                return
            await asyncio.sleep(0.05)


async def test_an_instance_loads_and_fires_only_the_jobs_it_owns(
    rig: tuple[Rig, list[Job]],
) -> None:
    made, jobs = rig
    mine, theirs = split(jobs)
    assert mine and theirs  # both own some of 40
    assert made.scheduler.jobs_owned() == len(mine)
    await until(lambda: made.fired.jobs >= mine)
    await asyncio.sleep(1.1)  # another tick of every job
    assert made.fired.jobs == mine


async def test_a_leavers_jobs_move_in_and_a_newcomers_move_out(
    rig: tuple[Rig, list[Job]],
) -> None:
    made, jobs = rig
    mine, theirs = split(jobs)
    made.membership.update([])  # the other instance is gone
    await until(lambda: made.scheduler.jobs_owned() == JOBS)
    assert made.moves("in") == len(theirs)
    await until(lambda: made.fired.jobs >= theirs)

    made.membership.update([OTHER])  # it is back
    await until(lambda: made.scheduler.jobs_owned() == len(mine))
    assert made.moves("out") == len(theirs)
    made.fired.jobs.clear()
    await asyncio.sleep(2.1)
    assert made.fired.jobs == mine


async def test_a_change_to_another_instances_job_is_not_read(
    rig: tuple[Rig, list[Job]],
) -> None:
    made, jobs = rig
    mine, theirs = split(jobs)
    asked: list[str] = []
    read = made.store.active_jobs

    async def recorded(job_ids: Sequence[str]) -> list[Job]:
        asked.extend(job_ids)
        return await read(job_ids)

    made.store.active_jobs = recorded  # type: ignore[method-assign]
    ours, other = sorted(mine)[0], sorted(theirs)[0]
    made.scheduler.notify_job_changed(other)
    made.scheduler.notify_job_changed(ours)
    await until(lambda: ours in asked)
    assert other not in asked
    assert made.scheduler.jobs_owned() == len(mine)


async def test_a_job_created_for_another_instance_is_left_to_it(
    rig: tuple[Rig, list[Job]],
) -> None:
    made, _ = rig
    both = Ownership(ME, [OTHER])
    new = [job() for _ in range(20)]
    for j in new:
        await made.store.create_job(j)
        made.scheduler.notify_job_changed(j.id)
    mine = {j.id for j in new if both.owns(j.id)}
    await until(lambda: made.fired.jobs >= mine)
    await asyncio.sleep(1.1)
    assert not made.fired.jobs & {j.id for j in new} - mine


async def test_a_first_load_is_answered_only_the_share_owned(store: Store) -> None:
    """The store decodes only the owned share of each page, so an instance's
    memory holds its share, not every job's schedule for a moment."""
    jobs = [job() for _ in range(JOBS)]
    for j in jobs:
        await store.create_job(j)
    made = Rig(store)
    read = store.active_schedules
    answered: list[str] = []

    async def recorded(
        after: str | None, limit: int, *, keep: Callable[[str], bool] | None = None
    ) -> SchedulePage:
        page = await read(after, limit, keep=keep)
        answered.extend(row.id for row in page.rows)
        return page

    store.active_schedules = recorded  # type: ignore[method-assign]
    running = asyncio.create_task(made.scheduler.run())
    try:
        await asyncio.wait_for(made.scheduler.ready.wait(), 10)
    finally:
        made.scheduler.stop()
        await asyncio.wait_for(running, 10)
    mine, _ = split(jobs)
    assert sorted(answered) == sorted(mine)


async def test_a_first_load_keeps_the_share_the_latest_heartbeat_names(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Instances starting together hear of each other while they load: pages
    read after that keep only this instance's share, and what an earlier page
    took of another's share is dropped once the load is done."""
    monkeypatch.setattr(jobsync, "SYNC_PAGE", 10)
    jobs = [job() for _ in range(JOBS)]
    for j in jobs:
        await store.create_job(j)
    made = Rig(store)
    made.membership.update([])  # no other instance heard of yet
    read = store.active_schedules

    async def heard_of_other(
        after: str | None, limit: int, *, keep: Callable[[str], bool] | None = None
    ) -> SchedulePage:
        if after is not None:  # the first page is read: the other announces itself
            made.membership.update([OTHER])
        return await read(after, limit, keep=keep)

    store.active_schedules = heard_of_other  # type: ignore[method-assign]
    first_page = {j.id for j in sorted(jobs, key=lambda j: j.id)[:10]}
    mine, theirs = split(jobs)
    running = asyncio.create_task(made.scheduler.run())
    try:
        await asyncio.wait_for(made.scheduler.ready.wait(), 10)
        await until(lambda: made.scheduler.jobs_owned() == len(mine))
        assert made.moves("out") == len(first_page & theirs)  # not all of theirs
        made.fired.jobs.clear()
        await asyncio.sleep(1.1)  # every job's next tick
        assert made.fired.jobs == mine
    finally:
        made.scheduler.stop()
        await asyncio.wait_for(running, 10)


async def test_an_instance_asks_to_keep_its_share_only_while_it_first_loads_and_not_for_long(
    store: Store,
) -> None:
    clock = SteppedClock()
    made = Rig(store, clock)
    assert made.scheduler.loading()
    clock.advance(LOADING_SHARE_S)  # one that cannot finish gives its share up
    assert not made.scheduler.loading()

    made = Rig(store, clock)
    made.scheduler.leaving = True
    assert not made.scheduler.loading()
    made = Rig(store, clock)
    running = asyncio.create_task(made.scheduler.run())
    try:
        await asyncio.wait_for(made.scheduler.ready.wait(), 10)
        assert not made.scheduler.loading()
        assert made.scheduler.jobs_owned() == 0
    finally:
        made.scheduler.stop()
        await asyncio.wait_for(running, 10)


@contextlib.contextmanager
def redis_down(server: RedisServer) -> Iterator[None]:
    server.stop()
    yield


def redis_stalled(server: RedisServer) -> contextlib.AbstractContextManager[None]:
    return stopped(server.pid)


@pytest.mark.parametrize("fault", [redis_down, redis_stalled])
async def test_a_hand_over_whose_announcement_fails_still_ends(
    store: Store,
    open_redis: Opener,
    start_redis_server: Callable[..., RedisServer],
    fault: Callable[[RedisServer], contextlib.AbstractContextManager[None]],
) -> None:
    """At stop, the announcement that this instance owns nothing may not get
    through (Redis down or stalled): the others then take its jobs when its
    announcement expires, and the stop goes on after one interval."""
    server = start_redis_server()
    made = Rig(store)  # shares the jobs with another instance
    leader = LeaderDuties(
        store=store,
        coordinator=await open_redis(server.url, "handover"),
        clock=SystemClock(),
        metrics=made.metrics,
        instance_id=ME,
        started_at=datetime.now(UTC),
        heartbeat_interval_s=0.5,
        retention_days=30,
        reap_grace=True,
        on_adopted=lambda adopted: None,
        jobs_owned=made.scheduler.jobs_owned,
        loading=made.scheduler.loading,
        membership=made.membership,
    )
    with fault(server):
        async with asyncio.timeout(10):
            await _hand_over(made.scheduler, leader, made.membership, 0.5)
    assert made.scheduler.leaving
    assert made.scheduler.jobs_owned() is None
    assert not made.scheduler.loading()
