"""Leadership: renewed on its own schedule, never held up by the store, and
given up (as far as this instance is concerned) before the lease can end."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cronsvc.adoption import OrphanClaims
from cronsvc.claims import Leases, LostLeases
from cronsvc.config import Config, CoordinationConfig, StoreConfig
from cronsvc.coord import Coordinator
from cronsvc.coord.local import LocalCoordinator
from cronsvc.domain import Execution, ExecutionStatus, Trigger
from cronsvc.health import Dependency, HealthMonitor
from cronsvc.leader import LeaderDuties
from cronsvc.metrics import Metrics
from cronsvc.ownership import Membership
from cronsvc.share import RecentFires
from cronsvc.store import ExecutionQuery, Store
from cronsvc.ticks import DueTick
from tests.fakes import FreezingProxy, SteppedClock, sample
from tests.fixtures_mongo import start_nx_27017
from tests.fixtures_redis import Opener, RedisServer
from tests.helpers_api import MakeClient
from tests.helpers_store import at, claimed, create
from tests.processes import stopped

HEARTBEAT_S = 20.0
"""Announcements and the lease last 30 s of real time in Redis: nothing
expires while a test runs. The reap grace (30 s) passes on a stepped clock."""
GRACE_S = HEARTBEAT_S * 1.5


async def test_a_leader_that_has_not_renewed_stops_counting_itself_leader_before_its_lease_ends(
    store: Store,
) -> None:
    clock = SteppedClock()
    coordinator = LocalCoordinator(lock_path=None)
    leader = LeaderDuties(
        store=store,
        coordinator=coordinator,
        clock=clock,
        metrics=Metrics(),
        instance_id="a",
        started_at=clock.now(),
        heartbeat_interval_s=2.0,  # lease 3 s, renewed every 1 s
        retention_days=30,
        reap_grace=False,  # as with local coordination
        on_adopted=lambda adopted: None,
    )
    await leader.renew()
    assert leader.is_leader
    clock.advance(1.99)  # a renewal missed: the lease still has 1 s to run
    assert leader.is_leader
    clock.advance(0.02)  # one renewal period before the lease can end
    assert not leader.is_leader
    await leader.renew()
    assert leader.is_leader


async def test_each_heartbeat_announces_the_ticks_fired_in_the_last_minute(store: Store) -> None:
    clock = SteppedClock()
    coordinator = LocalCoordinator(lock_path=None)
    recent = RecentFires(clock)
    leader = LeaderDuties(
        store=store,
        coordinator=coordinator,
        clock=clock,
        metrics=Metrics(),
        instance_id="a",
        started_at=clock.now(),
        heartbeat_interval_s=2.0,
        retention_days=30,
        reap_grace=False,
        on_adopted=lambda adopted: None,
        recent=recent,
    )
    for _ in range(3):
        recent.add()
    await leader.renew()
    (announced,) = await coordinator.live_instances()
    assert announced.ticks_fired_last_minute == 3
    clock.advance(60)
    await leader.renew()
    (announced,) = await coordinator.live_instances()
    assert announced.ticks_fired_last_minute == 0


async def sharing_leaders(
    store: Store,
    open: Callable[[], Awaitable[Coordinator]],
    memberships: dict[str, Membership],
    owned: dict[str, int | None],
    loading: dict[str, bool] | None = None,
) -> dict[str, LeaderDuties]:
    """One instance's duties per name, each on a coordinator of its own, each
    telling its `owned` entry (and `loading` one) and feeding its membership."""
    clock = SteppedClock()
    return {
        name: LeaderDuties(
            store=store,
            coordinator=await open(),
            clock=clock,
            metrics=Metrics(),
            instance_id=name,
            started_at=clock.now(),
            heartbeat_interval_s=HEARTBEAT_S,
            retention_days=30,
            reap_grace=True,
            on_adopted=lambda adopted: None,
            jobs_owned=functools.partial(owned.get, name),
            loading=None if loading is None else functools.partial(loading.__getitem__, name),
            membership=membership,
        )
        for name, membership in memberships.items()
    }


async def test_each_heartbeat_tells_the_jobs_owned_and_learns_the_owners(
    store: Store, open_redis: Opener, redis_url: str, redis_prefix: str
) -> None:
    """Two instances on one Redis: each takes a share once it tells how many
    jobs it owns, and each hears of the other's at its next heartbeat."""
    owned: dict[str, int | None] = {"a": None, "b": None}
    memberships = {name: Membership(name) for name in owned}
    changes: list[str] = []
    memberships["a"].listeners.append(lambda before, after: changes.append("a"))
    leaders = await sharing_leaders(
        store, functools.partial(open_redis, redis_url, redis_prefix), memberships, owned
    )
    await leaders["a"].renew()
    await leaders["b"].renew()
    assert memberships["b"].current.members == ("b",)  # a still loads its jobs
    owned["a"] = 7
    await leaders["a"].renew()
    assert memberships["a"].current.members == ("a",)  # b still loads its jobs
    await leaders["b"].renew()
    assert memberships["b"].current.members == ("a", "b")
    owned["b"] = 5
    await leaders["b"].renew()
    await leaders["a"].renew()
    assert memberships["a"].current.members == ("a", "b")
    assert changes == ["a"]
    live = await (await open_redis(redis_url, redis_prefix)).live_instances()
    assert {info.id: info.jobs_owned for info in live} == {"a": 7, "b": 5}


async def test_instances_starting_together_each_keep_their_share_while_loading(
    store: Store, open_redis: Opener, redis_url: str, redis_prefix: str
) -> None:
    """The heartbeat tells that an instance loads; the first to finish does not
    take the share of those that began loading with it, but a newcomer to a
    cluster that schedules gets no share until it has loaded."""
    owned: dict[str, int | None] = {"a": None, "b": None, "c": None}
    loading = {"a": True, "b": True, "c": True}
    memberships = {name: Membership(name) for name in owned}
    leaders = await sharing_leaders(
        store, functools.partial(open_redis, redis_url, redis_prefix), memberships, owned, loading
    )
    await leaders["a"].renew()
    await leaders["b"].renew()
    assert memberships["b"].current.members == ("a", "b")
    owned["a"], loading["a"] = 7, False
    await leaders["a"].renew()
    assert memberships["a"].current.members == ("a", "b")  # b's share waits for it
    await leaders["c"].renew()  # begins after a schedules: a newcomer
    await leaders["a"].renew()
    assert memberships["a"].current.members == ("a", "b")
    assert memberships["c"].current.members == ("a", "b", "c")  # it loads its share
    live = await (await open_redis(redis_url, redis_prefix)).live_instances()
    assert {info.id: info.loading for info in live} == {"a": False, "b": True, "c": True}


async def test_the_leader_keeps_renewing_while_the_store_stalls(
    make_client: MakeClient,
    config: Config,
    start_redis_server: Callable[..., RedisServer],
    tmp_path: Path,
) -> None:
    redis_server = start_redis_server()
    nx = start_nx_27017(tmp_path / "nx")
    try:
        client = await make_client(
            store=StoreConfig(url=f"{nx.url}/leader"),
            coordination=CoordinationConfig(url=redis_server.url, key_prefix="leader"),
            scheduler=config.scheduler.model_copy(update={"heartbeat_interval_s": 1.0}),
        )

        async def leader() -> tuple[str | None, float]:
            cluster = await (await client.get("/api/cluster")).json()
            gauge = sample(await (await client.get("/metrics")).text(), "cronsvc_is_leader")
            return cluster["leader"], gauge

        async with asyncio.timeout(10):
            while True:
                if (await leader())[1] == 1.0:
                    break
                await asyncio.sleep(0.1)
        (me, _) = await leader()
        assert me is not None
        await asyncio.sleep(2)  # past the reap grace: the duties now call the store
        with stopped(nx.process.pid):
            # Three lease lifetimes (1.5 s each) with every store call hanging.
            seen = []
            for _ in range(45):
                seen.append(await leader())
                await asyncio.sleep(0.1)
        assert set(seen) == {(me, 1.0)}
    finally:
        nx.stop()


class Instance:
    """One instance's heartbeats and leader duties on a stepped clock, and
    the ticks it adopted."""

    def __init__(self, instance_id: str, store: Store, coordinator: Coordinator) -> None:
        self.id = instance_id
        self.coordinator = coordinator
        self.clock = SteppedClock()
        self.adopted: list[Execution] = []
        self.metrics = Metrics()
        probes = {Dependency.COORDINATOR: coordinator.ping}
        health = HealthMonitor(probes=probes, metrics=self.metrics)
        lost = LostLeases(clock=self.clock, keep_s=10**9)  # the test's ticks are in the past
        self.leases = Leases(
            coordinator=coordinator, health=health, metrics=self.metrics, lease_ttl_s=60, lost=lost
        )
        orphans = OrphanClaims(
            store=store, lost=lost, clock=self.clock, metrics=self.metrics, instance_id=instance_id
        )
        self.leader = LeaderDuties(
            store=store,
            coordinator=coordinator,
            clock=self.clock,
            metrics=self.metrics,
            instance_id=instance_id,
            started_at=self.clock.now(),
            heartbeat_interval_s=HEARTBEAT_S,
            retention_days=36500,  # the test's ticks are in 2026
            reap_grace=True,
            on_adopted=self.adopted.extend,
            claim_orphans=orphans.claim,
        )

    async def settle(self) -> None:
        """Announce itself without a gap for one reap grace."""
        await self.leader.renew()
        self.clock.advance(GRACE_S)
        await self.leader.renew()

    async def die(self) -> None:
        """Its lease and its announcement end, as their TTLs would."""
        await self.coordinator.resign(self.id)
        await self.coordinator.forget_instance(self.id)


async def status(store: Store, execution: Execution) -> ExecutionStatus:
    return (await store.get_execution(execution.id)).status


async def test_an_instance_announced_for_long_takes_a_dead_leaders_work_over_at_once(
    store: Store, open_redis: Opener, redis_url: str, redis_prefix: str
) -> None:
    a = Instance("a", store, await open_redis(redis_url, redis_prefix))
    b = Instance("b", store, await open_redis(redis_url, redis_prefix))
    await a.settle()
    await b.settle()
    assert a.leader.is_leader and not b.leader.is_leader
    job = await create(store)
    sent = await claimed(store, job, at(1), instance_id="a", dispatched=True)
    unsent = await claimed(store, job, at(2), instance_id="a", dispatched=False)
    running = await claimed(store, job, at(3), instance_id="b", dispatched=True)

    await a.die()
    await b.leader.step()  # its next renewal: it takes the lease, no grace to wait

    assert b.leader.is_leader
    assert [e.id for e in b.adopted] == [unsent.id]
    assert await status(store, sent) is ExecutionStatus.LOST
    assert await status(store, running) is ExecutionStatus.RUNNING


async def test_ticks_an_instance_leased_and_left_unclaimed_are_claimed_once_it_is_gone(
    store: Store, open_redis: Opener, redis_url: str, redis_prefix: str
) -> None:
    a = Instance("a", store, await open_redis(redis_url, redis_prefix))
    b = Instance("b", store, await open_redis(redis_url, redis_prefix))
    await a.settle()
    await b.settle()
    await a.leader.duties()  # it took the lead: it has claimed what it had lost before
    job = await create(store)
    # Minutes ahead: later than any tick an instance that left may have leased.
    t1 = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=2)
    t2 = t1 + timedelta(minutes=1)
    due = [DueTick(job, t1, Trigger.SCHEDULE), DueTick(job, t2, Trigger.SCHEDULE)]
    assert await b.leases.lease(due, 0.5) == (due, True)
    assert await a.leases.lease(due, 0.5) == ([], True)
    # b claims the first tick; it dies before its claim of the second lands.
    first = await claimed(store, job, t1, instance_id="b", dispatched=False)

    await a.leader.duties()  # nobody left: nothing is claimed for b
    assert a.adopted == []
    await b.die()
    await a.leader.duties()

    # The first through its record (b's, adopted), the second claimed anew.
    assert [(e.scheduled_at, e.instance_id, e.status) for e in a.adopted] == [
        (t1, "a", ExecutionStatus.RUNNING),
        (t2, "a", ExecutionStatus.RUNNING),
    ]
    assert a.adopted[0].id == first.id
    records = (await store.list_executions(ExecutionQuery(job_id=job.id))).items
    assert sorted(e.id for e in records) == sorted(e.id for e in a.adopted)
    assert a.metrics.get("cronsvc_ticks_orphaned_total") == 1


async def test_after_redis_lost_its_data_no_leader_takes_a_live_instance_for_dead(
    store: Store, open_redis: Opener, start_redis_server: Callable[..., RedisServer]
) -> None:
    server = start_redis_server()
    a = Instance("a", store, await open_redis(server.url, "c1"))
    b = Instance("b", store, await open_redis(server.url, "c1"))
    await a.settle()
    await b.settle()
    job = await create(store)
    live = [
        await claimed(store, job, at(1), instance_id="a", dispatched=True),
        await claimed(store, job, at(2), instance_id="b", dispatched=True),
        await claimed(store, job, at(3), instance_id="b", dispatched=False),
    ]
    dead = await claimed(store, job, at(9), instance_id="c", dispatched=True)

    server.flushall()
    # a still counts itself leader, and has not heard of the loss: it sees
    # its own announcement gone with the others, and leaves them be.
    await a.leader.duties()
    # b finds its announcement gone and the lease free: it takes the lease,
    # but a has not announced itself again yet, and still counts itself
    # leader until its own renewal fails: b does not count itself leader yet.
    await b.leader.step()
    assert a.leader.is_leader and not b.leader.is_leader
    await b.leader.duties()
    b.clock.advance(GRACE_S - 1)
    await b.leader.step()
    assert not b.leader.is_leader
    assert [await status(store, e) for e in (*live, dead)] == [ExecutionStatus.RUNNING] * 4
    assert a.adopted == b.adopted == []

    await a.leader.renew()  # a heartbeat within the grace, as every live instance's is
    assert not a.leader.is_leader  # the lease is b's now
    b.clock.advance(1)
    await b.leader.step()
    assert b.leader.is_leader
    assert [await status(store, e) for e in live] == [ExecutionStatus.RUNNING] * 3
    assert await status(store, dead) is ExecutionStatus.LOST


async def test_an_instance_that_has_just_started_waits_before_it_reaps(
    store: Store, open_redis: Opener, redis_url: str, redis_prefix: str
) -> None:
    """It cannot tell whether Redis has just lost its data: a live instance
    may not have announced itself again yet."""
    job = await create(store)
    dead = await claimed(store, job, at(1), instance_id="c", dispatched=True)
    a = Instance("a", store, await open_redis(redis_url, redis_prefix))

    await a.leader.step()
    assert not a.leader.is_leader  # the lease is its, but it counts only after the grace
    a.clock.advance(GRACE_S - 1)
    await a.leader.step()
    assert await status(store, dead) is ExecutionStatus.RUNNING

    a.clock.advance(1)
    await a.leader.step()
    assert a.leader.is_leader
    assert await status(store, dead) is ExecutionStatus.LOST


async def test_a_heartbeat_that_did_not_get_through_starts_the_wait_afresh(
    store: Store, open_redis: Opener, start_redis_server: Callable[..., RedisServer]
) -> None:
    """Redis kept its data, but other instances may not have got through
    either while this one could not, and their announcements expired."""
    server = start_redis_server()
    async with FreezingProxy(server.port) as proxy:
        coordinator = await open_redis(
            proxy.url, "c1", connect_timeout_s=0.2, command_timeout_s=0.2
        )
        a = Instance("a", store, coordinator)
        await a.settle()
        job = await create(store)
        dead = await claimed(store, job, at(1), instance_id="c", dispatched=True)
        with proxy.frozen(), pytest.raises(ConnectionError):
            await a.leader.renew()

        await a.leader.step()
        assert a.leader.is_leader
        assert await status(store, dead) is ExecutionStatus.RUNNING
        a.clock.advance(GRACE_S)
        await a.leader.step()
        assert await status(store, dead) is ExecutionStatus.LOST
