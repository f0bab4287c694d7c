"""Ticks whose lease another instance won: each instance remembers the ones
it lost for a while (`LostLeases`), so the leader can claim them if their
winner leaves without claiming them (the leader's side is in
tests/test_leader.py)."""

from __future__ import annotations

from datetime import timedelta

from cronsvc.adoption import OrphanClaims, keep_lost_s
from cronsvc.claims import MAX_CLAIM_LEAD_S, Leases, LostLeases
from cronsvc.coord.local import LocalCoordinator
from cronsvc.domain import Trigger
from cronsvc.health import Dependency, HealthMonitor
from cronsvc.metrics import Metrics
from cronsvc.ownership import Ownership
from cronsvc.store import Store
from cronsvc.ticks import DueTick
from tests.fakes import FakeClock
from tests.helpers_store import make_job


def due_at(clock: FakeClock, in_s: float, jobs: int = 1) -> list[DueTick]:
    tick = clock.now() + timedelta(seconds=in_s)
    return [DueTick(make_job(f"job-{i}"), tick, Trigger.SCHEDULE) for i in range(jobs)]


def test_a_lost_lease_is_remembered_while_its_tick_is_recent_and_taken_once() -> None:
    clock = FakeClock()
    lost = LostLeases(clock=clock, keep_s=30)
    old = due_at(clock, 1, jobs=2)
    lost.remember(old)
    clock.advance(32)
    recent = due_at(clock, 1)
    lost.remember(recent)

    assert lost.take() == recent
    assert lost.take() == []


def test_ticks_whose_claim_failed_are_given_back_for_the_next_try() -> None:
    clock = FakeClock()
    lost = LostLeases(clock=clock, keep_s=30)
    batch = due_at(clock, 1, jobs=3)
    lost.remember(batch)
    taken = lost.take()
    lost.give_back(taken[1:])

    assert lost.take() == batch[1:]


async def test_only_the_leases_this_instance_lost_are_remembered() -> None:
    coordinator = LocalCoordinator(lock_path=None)
    clock = FakeClock()

    def fence() -> tuple[Leases, LostLeases]:
        metrics = Metrics()
        health = HealthMonitor(probes={Dependency.COORDINATOR: coordinator.ping}, metrics=metrics)
        lost = LostLeases(clock=clock, keep_s=30)
        return Leases(
            coordinator=coordinator, health=health, metrics=metrics, lease_ttl_s=5, lost=lost
        ), lost

    (winner, winner_lost), (loser, loser_lost) = fence(), fence()
    first = due_at(clock, 1, jobs=2)
    assert await winner.lease(first[:1], 0.5) == (first[:1], True)
    assert await loser.lease(first, 0.5) == (first[1:], True)

    assert loser_lost.take() == first[:1]
    assert loser.share < winner.share == 1.0  # a tick lost counts as lost
    assert winner_lost.take() == []


def test_a_lost_lease_outlives_the_time_a_leader_takes_to_see_its_winner_gone() -> None:
    # An announcement lasts 1.5 intervals, a dead leader's lease as long, and
    # a new leader may wait one announcement lifetime before it reaps.
    for interval_s in (0.5, 1.0, 5.0, 30.0):
        assert keep_lost_s(interval_s) > 3 * 1.5 * interval_s + 5.0


def test_after_an_instance_left_leases_lost_within_its_claim_lead_are_claimed_anyway() -> None:
    clock = FakeClock()
    lost = LostLeases(clock=clock, keep_s=30)
    lost.claim_until(clock.time() + 5)
    soon, later = due_at(clock, 4), due_at(clock, 6)

    assert lost.lost(soon) == soon  # the one that left may hold it: claim it
    assert lost.lost(later) == ()  # leased after it left: its winner is live
    assert lost.take() == later


async def test_an_instance_claims_every_lost_lease_while_it_shares_the_jobs(
    store: Store,
) -> None:
    """A job's ticks are leased by its owner alone: a lease another holds is a
    former owner's, maybe one that left without claiming it. The owner claims
    the tick anyway, the store's unique claim fencing it; alone again, it claims
    only what an instance that left may hold."""
    clock = FakeClock()
    lost = LostLeases(clock=clock, keep_s=30)
    orphans = OrphanClaims(
        store=store, lost=lost, clock=clock, metrics=Metrics(), instance_id="instance-a"
    )
    alone, shared = Ownership("instance-a", []), Ownership("instance-a", ["instance-b"])
    later = due_at(clock, 60)
    assert lost.lost(later) == ()
    orphans.owners_changed(alone, shared)  # a newcomer
    assert lost.lost(later) == later
    orphans.owners_changed(shared, alone)  # it left
    assert lost.lost(due_at(clock, MAX_CLAIM_LEAD_S - 0.5)) != ()
    assert lost.lost(later) == ()
