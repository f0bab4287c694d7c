"""A batch's leases, against the in-process coordinator: two instances
asking for the same ticks split them, the loser's share of leases won
falls; a coordinator taken for down is not asked, and every tick goes on
unfenced until it answers again; ticks won and handed back unclaimed stay
this instance's when taken again."""

from __future__ import annotations

import pytest

from cronsvc.claims import Leases
from cronsvc.coord.local import LocalCoordinator
from cronsvc.domain import Trigger
from cronsvc.health import Dependency, HealthMonitor
from cronsvc.metrics import Metrics
from cronsvc.ticks import DueTick
from tests.helpers_store import at, make_job


@pytest.fixture
def coordinator() -> LocalCoordinator:
    return LocalCoordinator(lock_path=None)


def leases(coordinator: LocalCoordinator, metrics: Metrics | None = None) -> Leases:
    metrics = metrics or Metrics()
    health = HealthMonitor(probes={Dependency.COORDINATOR: coordinator.ping}, metrics=metrics)
    return Leases(coordinator=coordinator, health=health, metrics=metrics, lease_ttl_s=5.0)


def batch(count: int) -> list[DueTick]:
    return [DueTick(make_job(f"job-{i}"), at(1), Trigger.SCHEDULE) for i in range(count)]


async def test_the_instance_that_loses_a_batch_sees_its_share_fall(
    coordinator: LocalCoordinator,
) -> None:
    first, second = leases(coordinator), leases(coordinator)
    due = batch(4)

    assert await first.lease(due, 0.5) == (due, True)
    assert await second.lease(due, 0.5) == ([], True)

    assert first.share == 1.0
    assert second.share == pytest.approx(0.8)


async def test_a_coordinator_taken_for_down_is_skipped_until_it_answers(
    coordinator: LocalCoordinator,
) -> None:
    metrics = Metrics()
    health = HealthMonitor(probes={Dependency.COORDINATOR: coordinator.ping}, metrics=metrics)
    fence = Leases(coordinator=coordinator, health=health, metrics=metrics, lease_ttl_s=5.0)
    health.report(Dependency.COORDINATOR, "ConnectionError")
    due = batch(3)

    assert await fence.lease(due, 0.5) == (due, False)
    assert fence.down
    assert metrics.get("cronsvc_lease_total", result="skipped") == 3
    assert await coordinator.try_lease_ticks([(d.job.id, d.tick) for d in due], 5.0) == [True] * 3

    await health.probe()  # it answers again
    later = batch(2)
    assert await fence.lease(later, 0.5) == (later, True)
    assert not fence.down


async def test_ticks_won_and_handed_back_are_this_instances_when_taken_again(
    coordinator: LocalCoordinator,
) -> None:
    fence = leases(coordinator)
    won, fresh = batch(2), batch(1)
    assert await fence.lease(won, 0.5) == (won, True)
    fence.keep(won)  # the store did not take their claims

    # The coordinator would refuse them now, even to this instance.
    assert await fence.lease(won + fresh, 0.5) == (won + fresh, True)
    assert await fence.lease(won, 0.5) == ([], True)  # kept once only
