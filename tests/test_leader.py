"""Leadership: renewed on its own schedule, never held up by the store, and
given up (as far as this instance is concerned) before the lease can end."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from cronsvc.config import Config, CoordinationConfig, StoreConfig
from cronsvc.coord.local import LocalCoordinator
from cronsvc.leader import LeaderDuties
from cronsvc.metrics import Metrics
from cronsvc.store import Store, open_store
from tests.conftest import MakeClient
from tests.fixtures_mongo import start_nx_27017
from tests.fixtures_redis import RedisServer
from tests.test_auth import SteppedClock
from tests.test_health import sample, stopped


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(f"sqlite:///{tmp_path}/leader.db", retention_days=30)
    yield opened
    await opened.aclose()


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
        reap_grace=True,
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
            scheduler=dataclasses.replace(config.scheduler, heartbeat_interval_s=1.0),
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
