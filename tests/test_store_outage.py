"""A store that stalls or dies while jobs fire: every tick of the outage
ends, once the store is back, as exactly one record (fired late under the
job's misfire policy, or MISSED), never a gap in the ledger, never a
duplicate, and a `skip` job is never sent a tick past its grace.

The store is the MongoDB wire server on a loopback port, stalled with
SIGSTOP or killed and started again on the same port and data."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from cronsvc.config import Config, StoreConfig
from cronsvc.service import STORE
from tests.fakes import Receiver, sample
from tests.fixtures_mongo import NxServer, start_nx_27017
from tests.helpers_api import Client, MakeClient, parse
from tests.processes import stopped

OUTAGE_S = 6.0


@pytest.fixture
def nx(tmp_path: Path) -> Iterator[NxServer]:
    """The store, stopped only after the service (asked before `make_client`):
    a service stopping against a dead store waits out its writes."""
    server = start_nx_27017(tmp_path / "nx")
    yield server
    server.stop()


@contextmanager
def killed(server: NxServer) -> Iterator[None]:
    """The store dead (kill -9) for the block, then started again on the same
    port with the same data."""
    server.process.kill()
    server.process.wait()
    try:
        yield
    finally:
        server.process = start_nx_27017(server.directory, port=server.port).process


async def ledger(client: Client, job_id: str, until: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/cron/{job_id}/ledger", params={"until": until})
    assert response.status == 200
    entries: list[dict[str, Any]] = (await response.json())["entries"]
    return entries


async def settled_ledger(client: Client, job_id: str, until: str) -> list[dict[str, Any]]:
    """The ledger up to `until` once no tick in it is a gap or RUNNING (the
    outage's records are written in the background once the store is back;
    a run still RUNNING then would be one stuck)."""
    entries: list[dict[str, Any]] = []
    async with asyncio.timeout(20):
        while True:
            entries = await ledger(client, job_id, until)
            if all(e["kind"] == "tick" and e["status"] != "RUNNING" for e in entries):
                return entries
            await asyncio.sleep(0.25)


async def outage_settles_every_tick(
    make_client: MakeClient,
    config: Config,
    receiver: Receiver,
    server: NxServer,
    fault: Callable[[], Any],
) -> list[dict[str, Any]]:
    client = await make_client(
        store=StoreConfig(url=f"{server.url}/outage"),
        server=config.server.model_copy(update={"shutdown_grace_s": 1.0}),
    )
    ids = {}
    for policy in ("fire_once", "skip"):
        job = {
            "name": policy,
            "cronExpression": "* * * * * *",
            "webhookUrl": receiver.url,
            "misfirePolicy": policy,
            "misfireGraceSeconds": 0 if policy == "skip" else 60,
        }
        response = await client.post("/api/cron", json=job)
        assert response.status == 201, await response.text()
        ids[policy] = (await response.json())["id"]
    await receiver.wait_for(4)
    began = receiver.requests[-1].arrived
    with fault():
        await asyncio.sleep(OUTAGE_S)
    ended = len(receiver.requests)
    await receiver.wait_for(ended + 6, within_s=30)  # both jobs fire again
    metrics = await (await client.get("/metrics")).text()
    assert sample(metrics, "cronsvc_ticks_held_total") >= 1
    until = receiver.requests[-1].json()["scheduledAt"]

    sent: dict[str, list[dict[str, Any]]] = {job_id: [] for job_id in ids.values()}
    for request in receiver.requests:
        body = request.json()
        sent[body["jobId"]].append(body)
    for job_id, bodies in sent.items():
        ticks = [body["scheduledAt"] for body in bodies]
        assert len(ticks) == len(set(ticks)), f"a tick of {job_id} was sent twice"
    # The skip job: no tick from well inside the outage was sent (any such
    # send is later than its grace of 0 s, at least 1 s).
    inside = [
        body["scheduledAt"]
        for body in sent[ids["skip"]]
        if began + 2 < parse(body["scheduledAt"]).timestamp() < began + OUTAGE_S - 1
    ]
    assert inside == []
    entries = []
    for job_id in ids.values():
        entries += await settled_ledger(client, job_id, until)
    return entries


@pytest.mark.timeout(120)
async def test_a_stalled_store_leaves_no_tick_unrecorded_and_no_skip_tick_late(
    nx: NxServer, make_client: MakeClient, config: Config, receiver: Receiver
) -> None:
    entries = await outage_settles_every_tick(
        make_client, config, receiver, nx, lambda: stopped(nx.process.pid)
    )
    assert "MISSED" in {e["status"] for e in entries}  # the outage's ticks, settled


@pytest.mark.timeout(120)
async def test_a_store_killed_and_restarted_leaves_no_tick_unrecorded(
    nx: NxServer, make_client: MakeClient, config: Config, receiver: Receiver
) -> None:
    entries = await outage_settles_every_tick(make_client, config, receiver, nx, lambda: killed(nx))
    assert "MISSED" in {e["status"] for e in entries}


async def create_skip_job(client: Client, url: str) -> str:
    job = {
        "name": "skip",
        "cronExpression": "* * * * * *",
        "webhookUrl": url,
        "misfirePolicy": "skip",
        "misfireGraceSeconds": 0,
    }
    response = await client.post("/api/cron", json=job)
    assert response.status == 201, await response.text()
    job_id: str = (await response.json())["id"]
    return job_id


async def missed_with(client: Client, job_id: str, words: str) -> list[dict[str, Any]]:
    """The job's MISSED records whose error says `words`, once there is one."""
    async with asyncio.timeout(20):
        while True:
            response = await client.get(f"/api/execution-logs/job/{job_id}?limit=500")
            found = [
                e
                for e in await response.json()
                if e["status"] == "MISSED" and words in e["error"]["message"]
            ]
            if found:
                return found
            await asyncio.sleep(0.2)


async def missed_while_claims_answer_late(
    client: Client, receiver: Receiver, delays: Iterator[float], words: str
) -> tuple[str, list[dict[str, Any]]]:
    """A skip job whose claims the store writes, then answers after the next
    of `delays` (none once they run out); its MISSED records saying `words`."""
    store = client.server.app[STORE]
    job_id = await create_skip_job(client, receiver.url)
    await receiver.wait_for(1)
    claim_ticks = store.claim_ticks

    async def late(*args: Any) -> Any:
        results = await claim_ticks(*args)
        await asyncio.sleep(next(delays, 0))
        return results

    store.claim_ticks = late  # type: ignore[method-assign]
    try:
        return job_id, await missed_with(client, job_id, words)
    finally:
        del store.claim_ticks


async def test_a_claim_the_store_answers_past_a_skip_jobs_grace_is_recorded_missed_not_sent(
    client: Client, receiver: Receiver
) -> None:
    _, found = await missed_while_claims_answer_late(
        client, receiver, itertools.repeat(1.5), "took its claim"
    )
    sent = {r.json()["scheduledAt"] for r in receiver.requests}
    assert found and not sent & {e["scheduledAt"] for e in found}


async def test_a_claim_written_whose_answer_never_comes_is_found_and_recorded_missed(
    client: Client, receiver: Receiver
) -> None:
    """Written, but answered after the claim's patience: the tick goes back to
    the scheduler, whose second claim the store refuses as a duplicate; the
    first record is found once the store answers, not left RUNNING."""
    job_id, found = await missed_while_claims_answer_late(
        client,
        receiver,
        iter([60.0]),  # the first answer cut off by the claim's patience
        "answer never came back",
    )
    sent = {r.json()["scheduledAt"] for r in receiver.requests}
    assert len(found) == 1 and found[0]["scheduledAt"] not in sent
    response = await client.get(f"/api/execution-logs/job/{job_id}?limit=500")
    records = await response.json()
    ticks = [e["scheduledAt"] for e in records]
    assert len(ticks) == len(set(ticks))
    assert not [
        e
        for e in records
        if e["status"] == "RUNNING" and e["scheduledAt"] < found[0]["scheduledAt"]
    ]
