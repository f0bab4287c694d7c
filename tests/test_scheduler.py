"""The scheduler's own bookkeeping, seen from outside: jobs read page by page
at start-up, and jobs held slim whose whole record is read just ahead of
their tick. Real service, real SQLite, real receivers on port 0; jobs are
seeded straight into the store before the scheduler starts, as a store
written by an earlier process would be."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cronsvc import jobsync, scheduler
from cronsvc.config import Config
from cronsvc.domain import ConcurrencyPolicy, HttpMethod, Job, JobSpec
from cronsvc.ids import new_id
from cronsvc.service import STORE, build_app
from cronsvc.store import ClaimResult, Store, TickClaim
from tests.fakes import Receiver
from tests.helpers_api import Client

EVERY_SECOND = "*/1 * * * * *"
Seed = Callable[[Store], Awaitable[None]]


def job(name: str, url: str, cron: str = EVERY_SECOND, **fields: Any) -> Job:
    now = datetime.now(UTC)
    return Job(
        id=new_id(),
        spec=JobSpec(name=name, cron_expression=cron, webhook_url=url, **fields),
        created_at=now,
        updated_at=now,
        last_tick=now,
    )


def job_ids(receiver: Receiver, after: float) -> set[str]:
    return {r.json()["jobId"] for r in receiver.requests if r.arrived > after}


@pytest.fixture
async def start(config: Config) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """Start a service whose store `seed` filled before the scheduler's
    first sync (seed may also wrap the store's methods); keywords replace
    scheduler settings."""
    async with AsyncExitStack() as stack:

        async def start(seed: Seed, **scheduler_settings: Any) -> Client:
            settings = config.scheduler.model_copy(update=scheduler_settings)
            app = build_app(config.model_copy(update={"scheduler": settings}))

            async def seeding(app: web.Application) -> AsyncIterator[None]:
                await seed(app[STORE])
                yield

            app.cleanup_ctx.insert(2, seeding)  # after the store opens, before the engine
            return await stack.enter_async_context(TestClient(TestServer(app, host="127.0.0.1")))

        yield start


async def ready(client: Client, within_s: float = 10.0) -> None:
    async with asyncio.timeout(within_s):
        while True:
            if (await client.get("/readyz")).status == 200:
                return
            await asyncio.sleep(0.05)


async def test_changes_made_while_the_first_sync_reads_its_pages_end_up_in_force(
    start: Callable[..., Awaitable[Client]],
    receiver: Receiver,
    start_receiver: Callable[[], Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pages of two; the second page is held after it was read, so it is
    stale by the time it is applied. Meanwhile jobs are updated (in a page
    applied, in the stale page), paused, deleted (in a page not yet read) and
    created through the API. Once the sync is done every change is in force:
    each notice wins over a page read before it."""
    monkeypatch.setattr(jobsync, "SYNC_PAGE", 2)
    moved: Receiver = await start_receiver()
    jobs = [job(f"job-{i}", receiver.url) for i in range(6)]
    a, b, c, d, e, f = sorted(jobs, key=lambda j: j.id)
    held, release = asyncio.Event(), asyncio.Event()

    async def seed(store: Store) -> None:
        for j in jobs:
            await store.create_job(j)
        read = store.active_schedules

        async def second_page_held(after: str | None = None, limit: int = 2, **kw: Any) -> Any:
            page = await read(after, limit, **kw)
            if after == b.id:
                held.set()
                await release.wait()
            return page

        store.active_schedules = second_page_held  # type: ignore[method-assign]

    client = await start(seed)
    await asyncio.wait_for(held.wait(), 10)
    assert (await client.get("/readyz")).status == 503
    for changed in (a, c):
        response = await client.patch(f"/api/cron/{changed.id}", json={"webhookUrl": moved.url})
        assert response.status == 200, await response.text()
    assert (await client.post(f"/api/cron/{d.id}/pause")).status == 200
    assert (await client.delete(f"/api/cron/{f.id}")).status == 200
    response = await client.post(
        "/api/cron",
        json={"name": "created", "cronExpression": EVERY_SECOND, "webhookUrl": receiver.url},
    )
    assert response.status == 201
    created = (await response.json())["id"]
    release.set()
    await ready(client)

    await asyncio.sleep(2)  # the notices applied, and any tick claimed before them
    since = time.time()
    await asyncio.sleep(2.5)
    assert job_ids(moved, since) == {a.id, c.id}
    assert job_ids(receiver, since) == {b.id, e.id, created}


async def test_a_slim_job_fires_its_whole_record_at_its_tick(
    start: Callable[..., Awaitable[Client]], receiver: Receiver
) -> None:
    """A daily job is held slim; at its tick it is read whole, and its
    method, headers and body go out as stored."""
    tick = datetime.fromtimestamp(math.ceil(time.time()) + 4, UTC)
    daily = job(
        "daily",
        receiver.url,
        cron=f"{tick.second} {tick.minute} {tick.hour} * * *",
        http_method=HttpMethod.PUT,
        headers={"X-Team": "billing"},
        body={"report": "daily"},
    )

    async def seed(store: Store) -> None:
        await store.create_job(daily)

    client = await start(seed)
    await ready(client)
    [request] = await receiver.wait_for(1, within_s=10)
    await asyncio.sleep(1)

    assert len(receiver.requests) == 1
    assert request.method == "PUT"
    assert request.headers["X-Team"] == "billing"
    assert request.json() == {"report": "daily"}
    assert request.arrived >= tick.timestamp()


async def test_a_slim_job_changed_without_a_notice_fires_its_new_version_once(
    start: Callable[..., Awaitable[Client]],
    receiver: Receiver,
    start_receiver: Callable[[], Any],
) -> None:
    """The job changes in the store after the heap loaded it and before its
    record is read (no notice: it was lost). The read sees another version
    and reloads the job: its tick goes to the new URL, once, and the old
    URL gets nothing."""
    moved: Receiver = await start_receiver()
    tick = datetime.fromtimestamp(math.ceil(time.time()) + 5, UTC)
    daily = job("daily", receiver.url, cron=f"{tick.second} {tick.minute} {tick.hour} * * *")
    store: list[Store] = []

    async def seed(opened: Store) -> None:
        store.append(opened)
        await opened.create_job(daily)

    client = await start(seed)
    await ready(client)
    assert time.time() < tick.timestamp() - 2, "too slow to change it before its read"
    spec = JobSpec(name="daily", cron_expression=daily.spec.cron_expression, webhook_url=moved.url)
    await store[0].update_job(daily.id, spec, now=datetime.now(UTC))

    [request] = await moved.wait_for(1, within_s=10)
    await asyncio.sleep(1.5)

    assert len(moved.requests) == 1 and receiver.requests == []
    assert request.json()["scheduledAt"] == tick.isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )
    logs = await (await client.get(f"/api/execution-logs/job/{daily.id}")).json()
    assert [log["status"] for log in logs if log["status"] != "RUNNING"] in ([], ["SUCCESS"])


async def test_a_slim_job_deleted_without_a_notice_never_fires(
    start: Callable[..., Awaitable[Client]], receiver: Receiver
) -> None:
    tick = datetime.fromtimestamp(math.ceil(time.time()) + 4, UTC)
    daily = job("daily", receiver.url, cron=f"{tick.second} {tick.minute} {tick.hour} * * *")
    kept = job("kept", receiver.url)
    store: list[Store] = []

    async def seed(opened: Store) -> None:
        store.append(opened)
        await opened.create_job(daily)
        await opened.create_job(kept)

    client = await start(seed)
    await ready(client)
    await store[0].delete_job(daily.id)
    await asyncio.sleep(tick.timestamp() - time.time() + 1.5)

    assert daily.id not in job_ids(receiver, 0)
    assert kept.id in job_ids(receiver, 0)
    assert (await client.get(f"/api/cron/{daily.id}")).status == 404


async def test_a_resync_drops_jobs_no_page_held_and_loads_those_it_lacked(
    start: Callable[..., Awaitable[Client]],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Resync pages of two over five jobs: one deleted and one created
    straight in the store (their notices lost) are dropped and loaded."""
    monkeypatch.setattr(jobsync, "RESYNC_PAGE", 2)
    jobs = [job(f"job-{i}", receiver.url) for i in range(5)]
    store: list[Store] = []
    resyncs = 0

    async def seed(opened: Store) -> None:
        store.append(opened)
        for j in jobs:
            await opened.create_job(j)
        read = opened.active_versions

        async def counted(after: str | None = None, limit: int | None = None) -> dict[str, int]:
            nonlocal resyncs
            resyncs += after is None
            return await read(after, limit)

        opened.active_versions = counted  # type: ignore[method-assign]

    client = await start(seed, resync_interval_s=1.0)
    await ready(client)
    gone = jobs[2]
    await store[0].delete_job(gone.id)
    late = job("late", receiver.url)
    await store[0].create_job(late)
    seen = resyncs
    async with asyncio.timeout(10):
        while True:
            if resyncs >= seen + 2:  # one resync wholly after the changes
                break
            await asyncio.sleep(0.1)
    await asyncio.sleep(1.5)
    since = time.time()
    await asyncio.sleep(2.5)

    assert job_ids(receiver, since) == {j.id for j in jobs if j is not gone} | {late.id}


async def test_ticks_claimed_ahead_go_in_big_batches_those_claimed_at_the_tick_in_small(
    start: Callable[..., Awaitable[Client]], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every batch is a claim of its own: those written ahead of the tick
    are few and large, those at the tick (`forbid`) small, so the first
    of them go out while later ones are still being claimed."""
    monkeypatch.setattr(scheduler, "BATCH_SIZE", 4)
    monkeypatch.setattr(scheduler, "AHEAD_BATCH_SIZE", 8)
    ahead = [job(f"ahead {n}", receiver.url) for n in range(10)]
    at_tick = [
        job(f"at the tick {n}", receiver.url, concurrency_policy=ConcurrencyPolicy.FORBID)
        for n in range(10)
    ]
    kinds = {j.id: "ahead" for j in ahead} | {j.id: "at the tick" for j in at_tick}
    claims: list[tuple[str, datetime, int]] = []

    async def seed(store: Store) -> None:
        for each in ahead + at_tick:
            await store.create_job(each)
        claim_ticks = store.claim_ticks

        async def recording(batch: Sequence[TickClaim]) -> list[ClaimResult]:
            kind = {kinds[claim.job_id] for claim in batch}
            assert len(kind) == 1, "one kind of tick per batch"
            claims.append((kind.pop(), batch[0].scheduled_at, len(batch)))
            return await claim_ticks(batch)

        store.claim_ticks = recording  # type: ignore[method-assign]

    client = await start(seed)
    await ready(client)
    await receiver.wait_for(60, within_s=15)

    ticks = sorted({tick for _, tick, _ in claims})[1:-1]  # whole seconds only
    assert ticks
    for tick in ticks:
        sizes = {
            kind: sorted(size for k, t, size in claims if k == kind and t == tick)
            for kind in kinds.values()
        }
        assert sizes == {"ahead": [2, 8], "at the tick": [2, 4, 4]}, tick
