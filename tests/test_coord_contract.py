"""The `Coordinator` contract, run against every backend unchanged.

Each test speaks only the `Coordinator` protocol. A test gets `coordinator`
and, through `peer()`, another instance of the same cluster: for `redis` a
second `RedisCoordinator` on the same key prefix, for `local` (one process by
design) the same object. What only a backend with expiry can show (leases and
announcements that time out) lives in `test_coord_redis.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest

from cronsvc.coord import Coordinator, open_coordinator
from cronsvc.domain import InstanceInfo
from tests.helpers_coord import T0, Cancels, Notices, instance, later, tick

Peer = Callable[[], Awaitable[Coordinator]]

TTL_S = 30.0


@pytest.fixture(params=["local", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def peer(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[Peer]:
    """Open coordinators of one cluster; the first is the test's `coordinator`."""
    opened: list[Coordinator] = []

    async def open_peer() -> Coordinator:
        if backend == "local":
            if not opened:
                opened.append(open_coordinator("local", lock_path=None))
                await opened[0].start()
            return opened[0]
        url: str = request.getfixturevalue("redis_url")
        prefix: str = request.getfixturevalue("redis_prefix")
        coordinator = open_coordinator(url, lock_path=None, key_prefix=prefix)
        await coordinator.start()
        opened.append(coordinator)
        return coordinator

    yield open_peer
    for coordinator in opened:
        await coordinator.aclose()


@pytest.fixture
async def coordinator(peer: Peer) -> Coordinator:
    return await peer()


# Tick leases


async def test_first_lease_of_a_tick_wins_and_a_peer_loses_it(
    coordinator: Coordinator, peer: Peer
) -> None:
    assert await coordinator.try_lease_ticks([("job-a", tick(0))], TTL_S) == [True]
    other = await peer()
    assert await other.try_lease_ticks([("job-a", tick(0))], TTL_S) == [False]


async def test_lease_batch_answers_in_order(coordinator: Coordinator, peer: Peer) -> None:
    assert await coordinator.try_lease_ticks([("job-a", tick(1)), ("job-c", tick(1))], TTL_S) == [
        True,
        True,
    ]
    other = await peer()
    batch = [("job-a", tick(1)), ("job-b", tick(1)), ("job-c", tick(1)), ("job-d", tick(1))]
    assert await other.try_lease_ticks(batch, TTL_S) == [False, True, False, True]


async def test_leases_of_different_ticks_and_jobs_are_independent(
    coordinator: Coordinator, peer: Peer
) -> None:
    assert await coordinator.try_lease_ticks([("job-a", tick(0))], TTL_S) == [True]
    other = await peer()
    assert await other.try_lease_ticks(
        [("job-a", tick(1)), ("job-b", tick(0)), ("job-a", T0 + timedelta(milliseconds=1))],
        TTL_S,
    ) == [True, True, True]


async def test_empty_lease_batch_is_empty(coordinator: Coordinator) -> None:
    assert await coordinator.try_lease_ticks([], TTL_S) == []


# Job-change notices


async def test_notice_reaches_every_subscriber_including_the_publisher(
    coordinator: Coordinator, peer: Peer
) -> None:
    other = await peer()
    mine, theirs = Notices(), Notices()
    coordinator.subscribe_job_changes(mine)
    other.subscribe_job_changes(theirs)

    await coordinator.publish_job_change("job-42")

    await mine.wait_for("job-42")
    await theirs.wait_for("job-42")


async def test_notices_arrive_once_each_and_in_order(coordinator: Coordinator) -> None:
    notices = Notices()
    coordinator.subscribe_job_changes(notices)
    for job_id in ("job-1", "job-2", "job-3"):
        await coordinator.publish_job_change(job_id)
    await notices.wait_for("job-3")
    assert notices.received == ["job-1", "job-2", "job-3"]


# Cancel notices


async def test_cancel_notice_reaches_every_subscriber_including_the_publisher(
    coordinator: Coordinator, peer: Peer
) -> None:
    other = await peer()
    mine, theirs = Cancels(), Cancels()
    coordinator.subscribe_cancels(mine)
    other.subscribe_cancels(theirs)

    await coordinator.publish_cancel(["exec-1", "exec-2"])

    await mine.wait_for(["exec-1", "exec-2"])
    await theirs.wait_for(["exec-1", "exec-2"])


async def test_cancel_notices_arrive_once_each_and_in_order(
    coordinator: Coordinator, peer: Peer
) -> None:
    other = await peer()
    cancels = Cancels()
    other.subscribe_cancels(cancels)
    for n in range(3):
        await coordinator.publish_cancel([f"exec-{n}"])
    await cancels.wait_for(["exec-2"])
    assert cancels.received == [["exec-0"], ["exec-1"], ["exec-2"]]


async def test_cancel_notices_and_job_change_notices_do_not_cross(
    coordinator: Coordinator, peer: Peer
) -> None:
    other = await peer()
    notices, cancels = Notices(), Cancels()
    other.subscribe_job_changes(notices)
    other.subscribe_cancels(cancels)

    await coordinator.publish_cancel(["exec-9"])
    await coordinator.publish_job_change("job-9")

    await notices.wait_for("job-9")
    await cancels.wait_for(["exec-9"])
    assert notices.received == ["job-9"]
    assert cancels.received == [["exec-9"]]


async def test_an_empty_cancel_notice_reaches_nobody(coordinator: Coordinator) -> None:
    cancels = Cancels()
    coordinator.subscribe_cancels(cancels)

    await coordinator.publish_cancel([])
    await coordinator.publish_cancel(["exec-1"])

    await cancels.wait_for(["exec-1"])
    assert cancels.received == [["exec-1"]]


# Leadership


async def test_first_to_lead_gets_a_token_and_renewing_keeps_it(
    coordinator: Coordinator,
) -> None:
    token = await coordinator.try_lead("instance-a", TTL_S)
    assert token is not None
    assert await coordinator.try_lead("instance-a", TTL_S) == token
    assert await coordinator.current_leader() == "instance-a"


async def test_another_instance_cannot_lead_while_the_lease_is_held(
    coordinator: Coordinator, peer: Peer
) -> None:
    token = await coordinator.try_lead("instance-a", TTL_S)
    other = await peer()
    assert await other.try_lead("instance-b", TTL_S) is None
    assert await coordinator.current_leader() == "instance-a"
    assert await coordinator.try_lead("instance-a", TTL_S) == token


async def test_after_resigning_the_next_leader_gets_a_larger_token(
    coordinator: Coordinator, peer: Peer
) -> None:
    first = await coordinator.try_lead("instance-a", TTL_S)
    assert first is not None
    await coordinator.resign("instance-a")
    assert await coordinator.current_leader() is None

    other = await peer()
    second = await other.try_lead("instance-b", TTL_S)
    assert second is not None and second > first
    assert await other.current_leader() == "instance-b"


async def test_resigning_a_lease_one_does_not_hold_changes_nothing(
    coordinator: Coordinator, peer: Peer
) -> None:
    token = await coordinator.try_lead("instance-a", TTL_S)
    other = await peer()
    await other.resign("instance-b")
    assert await coordinator.current_leader() == "instance-a"
    assert await coordinator.try_lead("instance-a", TTL_S) == token


async def test_nobody_leads_at_first(coordinator: Coordinator) -> None:
    assert await coordinator.current_leader() is None


# Heartbeats


async def test_announced_instances_are_live(coordinator: Coordinator, peer: Peer) -> None:
    other = await peer()
    a, b = instance("instance-a"), instance("instance-b")
    await coordinator.heartbeat(a, TTL_S)
    await other.heartbeat(b, TTL_S)

    live = await other.live_instances()

    assert sorted(live, key=lambda info: info.id) == [a, b]


async def test_an_announcement_carries_the_ticks_its_instance_fired(
    coordinator: Coordinator, peer: Peer
) -> None:
    other = await peer()
    busy = dataclasses.replace(instance("instance-a"), ticks_fired_last_minute=42)
    await coordinator.heartbeat(busy, TTL_S)
    assert await other.live_instances() == [busy]


async def test_a_heartbeat_names_the_instances_that_schedule_their_share(
    coordinator: Coordinator, peer: Peer
) -> None:
    """An instance still loading its jobs (`jobs_owned` None) is live but
    takes no share yet; once it tells how many it owns, it does."""
    other = await peer()
    a = dataclasses.replace(instance("instance-a"), jobs_owned=3)
    b = instance("instance-b")
    assert (await coordinator.heartbeat(a, TTL_S)).owners == {"instance-a"}
    assert (await other.heartbeat(b, TTL_S)).owners == {"instance-a"}
    loaded = dataclasses.replace(later(b), jobs_owned=0)
    assert (await other.heartbeat(loaded, TTL_S)).owners == {"instance-a", "instance-b"}
    assert await coordinator.live_instances() == [a, loaded]

    stopped_owning = dataclasses.replace(later(a), jobs_owned=None)
    assert (await coordinator.heartbeat(stopped_owning, TTL_S)).owners == {"instance-b"}
    await other.forget_instance("instance-b")
    assert (await coordinator.heartbeat(later(stopped_owning), TTL_S)).owners == set()


async def test_a_cluster_starting_together_keeps_the_share_of_those_still_loading(
    coordinator: Coordinator, peer: Peer
) -> None:
    """Instances that began loading while no instance was an owner keep their
    share while they load; one that begins when an owner schedules does not
    (it takes its share once it can fire it), nor one that gave loading up."""
    other, third = await peer(), await peer()
    a = dataclasses.replace(instance("instance-a"), loading=True)
    b = dataclasses.replace(instance("instance-b"), loading=True)
    assert (await coordinator.heartbeat(a, TTL_S)).loading == {"instance-a"}
    beat = await other.heartbeat(b, TTL_S)
    assert (beat.owners, beat.loading) == (set(), {"instance-a", "instance-b"})

    a_loaded = dataclasses.replace(later(a), loading=False, jobs_owned=4)
    beat = await coordinator.heartbeat(a_loaded, TTL_S)
    assert (beat.owners, beat.loading) == ({"instance-a"}, {"instance-b"})
    c = dataclasses.replace(instance("instance-c"), loading=True)
    beat = await third.heartbeat(c, TTL_S)  # a newcomer: a schedules already
    assert (beat.owners, beat.loading) == ({"instance-a"}, {"instance-b"})
    assert (await other.heartbeat(later(b), TTL_S)).loading == {"instance-b"}  # still loading

    gave_up = dataclasses.replace(later(b, 10), loading=False)
    assert (await other.heartbeat(gave_up, TTL_S)).loading == set()
    assert (await other.heartbeat(later(b, 15), TTL_S)).loading == set()  # not again
    assert [info.loading for info in await coordinator.live_instances()] == [
        False,
        True,
        True,
    ]
    await third.forget_instance("instance-c")


async def test_a_new_heartbeat_replaces_the_announcement(coordinator: Coordinator) -> None:
    first = instance("instance-a")
    later = InstanceInfo(
        id=first.id,
        host=first.host,
        version=first.version,
        started_at=first.started_at,
        last_heartbeat=first.last_heartbeat + timedelta(seconds=5),
    )
    await coordinator.heartbeat(first, TTL_S)
    await coordinator.heartbeat(later, TTL_S)
    assert await coordinator.live_instances() == [later]


async def test_a_heartbeat_says_whether_the_instance_was_still_announced(
    coordinator: Coordinator, peer: Peer
) -> None:
    other = await peer()
    a = instance("instance-a")
    assert (await coordinator.heartbeat(a, TTL_S)).renewed is False  # the first
    assert (await coordinator.heartbeat(later(a), TTL_S)).renewed is True
    # Whoever renews it: the answer is about the announcement, not the caller.
    assert (await other.heartbeat(later(a, 10), TTL_S)).renewed is True
    assert (await other.heartbeat(instance("instance-b"), TTL_S)).renewed is False


async def test_a_heartbeat_after_the_instance_was_forgotten_says_so(
    coordinator: Coordinator,
) -> None:
    a = instance("instance-a")
    await coordinator.heartbeat(a, TTL_S)
    await coordinator.forget_instance("instance-a")
    assert (await coordinator.heartbeat(later(a), TTL_S)).renewed is False
    assert (await coordinator.heartbeat(later(a, 10), TTL_S)).renewed is True


async def test_forgotten_instance_is_gone_at_once(coordinator: Coordinator) -> None:
    await coordinator.heartbeat(instance("instance-a"), TTL_S)
    await coordinator.heartbeat(instance("instance-b"), TTL_S)

    await coordinator.forget_instance("instance-a")

    assert [info.id for info in await coordinator.live_instances()] == ["instance-b"]
    await coordinator.forget_instance("never-announced")


async def test_ping_answers_when_reachable(coordinator: Coordinator) -> None:
    await coordinator.ping()
