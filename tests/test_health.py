"""The background probe of the store and the coordinator, and what readiness
makes of it: a stalled store is unreadiness, a stalled Redis a degradation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cronsvc.config import Config, CoordinationConfig, StoreConfig
from cronsvc.health import UNPROBED, Dependency, HealthMonitor, Probed, after_probe
from cronsvc.metrics import Metrics
from tests.fakes import Receiver, sample
from tests.fixtures_mongo import start_nx_27017
from tests.fixtures_redis import RedisServer
from tests.helpers_api import Client, MakeClient
from tests.processes import stopped


@pytest.mark.parametrize(
    ("previous", "failure", "expected"),
    [
        (UNPROBED, None, UNPROBED),
        (
            UNPROBED,
            "ConnectionError",
            Probed(up=True, detail="unavailable: ConnectionError", failures=1),
        ),
        (
            Probed(up=True, detail="unavailable: ConnectionError", failures=1),
            "no answer within 0.8 s",
            Probed(up=False, detail="unavailable: no answer within 0.8 s", failures=2),
        ),
        (
            Probed(up=False, detail="unavailable: x", failures=7),
            "x",
            Probed(up=False, detail="unavailable: x", failures=8),
        ),
        (Probed(up=False, detail="unavailable: x", failures=7), None, UNPROBED),
    ],
)
def test_a_dependency_is_down_after_two_failed_probes_in_a_row_and_up_at_its_first_answer(
    previous: Probed, failure: str | None, expected: Probed
) -> None:
    assert after_probe(previous, failure, down_after=2) == expected


async def test_a_probe_that_never_answers_is_cut_off_and_counted_as_a_failure() -> None:
    never = asyncio.Event()

    async def hangs() -> None:
        await never.wait()

    async def refuses() -> None:
        raise ConnectionRefusedError("refused")

    metrics = Metrics()
    monitor = HealthMonitor(
        probes={Dependency.STORE: hangs, Dependency.COORDINATOR: refuses},
        metrics=metrics,
        timeout_s=0.05,
    )
    await monitor.probe()
    assert monitor.state(Dependency.STORE).up  # once is not yet an outage
    await monitor.probe()
    assert monitor.state(Dependency.STORE) == Probed(
        up=False, detail="unavailable: no answer within 0.05 s", failures=2
    )
    assert monitor.state(Dependency.COORDINATOR).detail == "unavailable: ConnectionRefusedError"
    rendered = metrics.render().decode()
    assert "cronsvc_store_up 0.0" in rendered
    assert "cronsvc_coordinator_up 0.0" in rendered


async def test_a_reported_dependency_is_down_until_a_probe_begun_after_the_report_answers() -> None:
    answer = asyncio.Event()

    async def answers_when_let() -> None:
        await answer.wait()

    monitor = HealthMonitor(probes={Dependency.COORDINATOR: answers_when_let}, metrics=Metrics())
    under_way = asyncio.create_task(monitor.probe())
    await asyncio.sleep(0)  # the probe has begun
    monitor.report(Dependency.COORDINATOR, "no answer to a lease within 0.5 s")
    assert not monitor.is_up(Dependency.COORDINATOR)
    answer.set()
    await under_way  # begun before the report: its answer proves nothing
    assert monitor.state(Dependency.COORDINATOR).detail == (
        "unavailable: no answer to a lease within 0.5 s"
    )
    await monitor.probe()
    assert monitor.is_up(Dependency.COORDINATOR)


async def test_the_probe_loop_stops_when_asked() -> None:
    probed: list[int] = []
    third = asyncio.Event()

    async def answers() -> None:
        probed.append(1)
        if len(probed) == 3:
            third.set()

    monitor = HealthMonitor(probes={Dependency.STORE: answers}, metrics=Metrics(), interval_s=0.01)
    loop = asyncio.create_task(monitor.run())
    await asyncio.wait_for(third.wait(), 10)
    monitor.stop()
    await asyncio.wait_for(loop, 10)
    assert monitor.state(Dependency.STORE) == UNPROBED


async def test_a_dependency_answering_the_services_calls_is_not_pinged_until_they_stop() -> None:
    pings: list[int] = []
    stalled = asyncio.Event()
    never = asyncio.Event()
    calls = 0

    async def ping() -> None:
        pings.append(1)
        if stalled.is_set():
            await never.wait()

    monitor = HealthMonitor(
        probes={Dependency.STORE: ping},
        metrics=Metrics(),
        answers={Dependency.STORE: lambda: calls},
        timeout_s=0.05,
    )
    await monitor.probe()
    assert len(pings) == 1  # nothing answered yet

    for _ in range(3):
        calls += 2  # the service's own calls answered in this round
        await monitor.probe()
    assert len(pings) == 1
    assert monitor.state(Dependency.STORE) == UNPROBED

    stalled.set()  # the answers stop: the probe pings, and times out
    await monitor.probe()
    await monitor.probe()
    assert len(pings) == 3
    assert not monitor.is_up(Dependency.STORE)


async def test_a_down_dependency_is_pinged_whatever_its_answers_and_a_ping_is_no_answer() -> None:
    pings: list[int] = []
    calls = 0

    async def ping() -> None:
        nonlocal calls
        pings.append(1)
        calls += 1  # as a store counts its own ping

    monitor = HealthMonitor(
        probes={Dependency.COORDINATOR: ping},
        metrics=Metrics(),
        answers={Dependency.COORDINATOR: lambda: calls},
    )
    await monitor.probe()
    await monitor.probe()
    assert len(pings) == 2  # the first ping's answer did not spare the second

    monitor.report(Dependency.COORDINATOR, "no answer to a lease within 0.5 s")
    calls += 5
    await monitor.probe()
    assert len(pings) == 3
    assert monitor.is_up(Dependency.COORDINATOR)


async def readiness_until(
    client: Client, done: Callable[[int, dict[str, Any]], bool]
) -> tuple[int, dict[str, Any]]:
    async with asyncio.timeout(15):
        while True:
            response = await client.get("/readyz")
            body: dict[str, Any] = await response.json()
            if done(response.status, body):
                return response.status, body
            await asyncio.sleep(0.1)


async def test_a_stalled_redis_is_a_named_degradation_not_unreadiness(
    make_client: MakeClient, start_redis_server: Callable[..., RedisServer]
) -> None:
    server = start_redis_server()
    client = await make_client(coordination=CoordinationConfig(url=server.url, key_prefix="health"))
    with stopped(server.pid):
        status, body = await readiness_until(client, lambda _, b: b["status"] != "ok")
        assert status == 200
        assert body["status"] == "degraded" and body["degraded"] == ["coordinator"]
        assert body["checks"]["coordinator"] == "unavailable: no answer within 0.8 s"
        assert body["checks"]["store"] == "ok"
        assert (await client.get("/api/health-check")).status == 200
        metrics = await (await client.get("/metrics")).text()
        assert "cronsvc_coordinator_up 0.0" in metrics and "cronsvc_store_up 1.0" in metrics
    status, body = await readiness_until(client, lambda _, b: b["status"] == "ok")
    assert status == 200 and "degraded" not in body
    assert "cronsvc_coordinator_up 1.0" in await (await client.get("/metrics")).text()


async def test_a_stalled_store_makes_the_instance_unready_until_it_answers(
    make_client: MakeClient, tmp_path: Path
) -> None:
    server = start_nx_27017(tmp_path / "nx")
    try:
        client = await make_client(store=StoreConfig(url=f"{server.url}/health"))
        with stopped(server.process.pid):
            status, body = await readiness_until(client, lambda s, _: s != 200)
            assert status == 503 and body["status"] == "unavailable"
            assert body["checks"]["store"].startswith("unavailable: ")
            assert "cronsvc_store_up 0.0" in await (await client.get("/metrics")).text()
        status, body = await readiness_until(client, lambda s, _: s == 200)
        assert body["checks"] == {"store": "ok", "coordinator": "ok", "scheduler": "ok"}
    finally:
        server.stop()


async def test_a_stalled_redis_costs_the_tick_path_one_wait_then_leases_are_skipped(
    make_client: MakeClient,
    start_redis_server: Callable[..., RedisServer],
    receiver: Receiver,
) -> None:
    server = start_redis_server()
    client = await make_client(coordination=CoordinationConfig(url=server.url, key_prefix="stall"))
    job = {"name": "every second", "cronExpression": "* * * * * *", "webhookUrl": receiver.url}
    assert (await client.post("/api/cron", json=job)).status == 201
    await receiver.wait_for(1)
    with stopped(server.pid):
        before = len(receiver.requests)
        # Six ticks fall due while Redis answers nothing: each goes on to the
        # store's claim, and only the first batch waits for its leases.
        await receiver.wait_for(before + 6, within_s=15)
        metrics = await (await client.get("/metrics")).text()
    assert sample(metrics, 'cronsvc_coordinator_errors_total{op="lease"}') <= 2
    assert sample(metrics, 'cronsvc_lease_total{result="skipped"}') >= 4
    await receiver.wait_for(len(receiver.requests) + 2, within_s=15)  # and on, once it is back
    ticks = [r.json()["scheduledAt"] for r in receiver.requests]
    assert len(ticks) == len(set(ticks))


@pytest.mark.timeout(120)
async def test_claims_the_store_refuses_are_counted_and_the_ticks_waiting_on_it_shown(
    make_client: MakeClient, config: Config, tmp_path: Path, receiver: Receiver
) -> None:
    server = start_nx_27017(tmp_path / "nx")
    client = await make_client(
        store=StoreConfig(url=f"{server.url}/claims"),
        # Runs still retrying their claims when the test ends are not waited for long.
        server=config.server.model_copy(update={"shutdown_grace_s": 1.0}),
    )
    job = {"name": "every second", "cronExpression": "* * * * * *", "webhookUrl": receiver.url}
    assert (await client.post("/api/cron", json=job)).status == 201
    await receiver.wait_for(1)
    server.process.kill()
    server.process.wait()
    waiting: list[float] = []
    async with asyncio.timeout(60):
        while True:
            metrics = await (await client.get("/metrics")).text()
            waiting.append(sample(metrics, "cronsvc_ticks_waiting_on_store"))
            if sample(metrics, 'cronsvc_store_errors_total{op="claim"}') >= 1:
                break
            await asyncio.sleep(0.2)
    assert max(waiting) >= 1
