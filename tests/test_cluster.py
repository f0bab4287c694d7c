"""Three real `cronsvc serve` processes sharing Redis and a MongoDB wire
server, checked through a real receiver and the API alone."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cronsvc.domain import InstanceInfo
from cronsvc.ownership import Ownership
from tests.fakes import Receiver, free_port
from tests.fixtures_redis import Opener
from tests.processes import CronsvcProcess, all_logs

pytestmark = pytest.mark.e2e

HEARTBEAT_S = 1.0


def parse(instant: str) -> float:
    return datetime.fromisoformat(instant.replace("Z", "+00:00")).timestamp()


def cluster_processes(
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
    mongo_database_url: str,
    scheduler_extra: dict[int, str] | None = None,
) -> list[CronsvcProcess]:
    processes = []
    for n in range(3):
        port = free_port()
        config = tmp_path / f"cronsvc-{n}.toml"
        config.write_text(
            f'[server]\nhost = "127.0.0.1"\nport = {port}\nshutdown_grace_s = 5\n'
            f'[store]\nurl = "{mongo_database_url}"\n'
            f'[coordination]\nurl = "{redis_url}"\nkey_prefix = "{redis_prefix}"\n'
            f"[scheduler]\nheartbeat_interval_s = {HEARTBEAT_S}\nresync_interval_s = 5\n"
            + (scheduler_extra or {}).get(n, "")
            + "[webhook]\nallow_private_targets = true\n"  # the receiver is on 127.0.0.1
            + "[limits]\nrate_limit_per_s = 0\n"  # no test may hang on the machine's speed
        )
        processes.append(
            CronsvcProcess(config_path=config, port=port, log_path=tmp_path / f"cronsvc-{n}.log")
        )
    return processes


@pytest.fixture
async def cluster(
    tmp_path: Path, redis_url: str, redis_prefix: str, mongo_database_url: str
) -> AsyncIterator[list[CronsvcProcess]]:
    processes = cluster_processes(tmp_path, redis_url, redis_prefix, mongo_database_url)
    await asyncio.gather(*(p.start() for p in processes))
    yield processes
    await asyncio.gather(*(p.stop(signal.SIGKILL) for p in processes))


@pytest.fixture
async def private_cluster(
    tmp_path: Path, start_redis_server: Any, mongo_database_url: str
) -> AsyncIterator[tuple[list[CronsvcProcess], Any]]:
    """Three instances on a Redis server of this test's own, to flush or stop."""
    server = start_redis_server()
    processes = cluster_processes(tmp_path, server.url, "private", mongo_database_url)
    await asyncio.gather(*(p.start() for p in processes))
    yield processes, server
    await asyncio.gather(*(p.stop(signal.SIGKILL) for p in processes))


@pytest.fixture
async def bystander_cluster(
    tmp_path: Path, redis_url: str, redis_prefix: str, mongo_database_url: str
) -> AsyncIterator[list[CronsvcProcess]]:
    """Three instances, the first of which never schedules an every-second
    job (its minimum interval is 2 s): a run started there by hand is met
    by ticks that the other two claim."""
    processes = cluster_processes(
        tmp_path, redis_url, redis_prefix, mongo_database_url, {0: "min_interval_s = 2\n"}
    )
    await asyncio.gather(*(p.start() for p in processes))
    yield processes
    await asyncio.gather(*(p.stop(signal.SIGKILL) for p in processes))


async def all_owners(url: str, instances: int = 3) -> Ownership:
    """The owners once every instance has loaded its jobs and heard of the
    others (one heartbeat after the last took its share)."""
    async with asyncio.timeout(30):
        while True:
            view = await call("GET", f"{url}/api/cluster")
            owners = [i["id"] for i in view["instances"] if i["jobsOwned"] is not None]
            if len(owners) == instances:
                break
            await asyncio.sleep(0.2)
    await asyncio.sleep(HEARTBEAT_S)
    return Ownership(owners[0], owners)


async def call(method: str, url: str, **kwargs: Any) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, **kwargs) as response,
    ):
        assert response.status < 300, await response.text()
        return await response.json()


async def test_each_tick_fires_exactly_once_across_three_instances(
    cluster: list[CronsvcProcess], receiver: Receiver
) -> None:
    jobs = [
        await call(
            "POST",
            f"{cluster[n % 3].url}/api/cron",
            json={
                "name": f"every second {n}",
                "cronExpression": "* * * * * *",
                "webhookUrl": receiver.url,
            },
        )
        for n in range(20)
    ]
    start = int(datetime.now().timestamp()) + 2
    await asyncio.sleep(8)
    end = int(datetime.now().timestamp()) - 2
    fired = Counter(
        (r.json()["jobId"], r.json()["scheduledAt"])
        for r in receiver.requests
        if start <= parse(r.json()["scheduledAt"]) <= end
    )
    assert [key for key, n in fired.items() if n > 1] == []
    expected = {(j["id"], t) for j in jobs for t in range(start, end + 1)}
    got = {(job, int(parse(tick))) for job, tick in fired}
    assert expected - got == set()
    logs = [e for j in jobs for e in await all_logs(cluster[0].url, j["id"])]
    assert len({e["instanceId"] for e in logs if e["status"] == "SUCCESS"}) >= 2  # spread out


async def test_each_job_fires_on_the_instance_that_owns_it(
    cluster: list[CronsvcProcess], receiver: Receiver
) -> None:
    owners = await all_owners(cluster[0].url)
    jobs = [
        await call(
            "POST",
            f"{cluster[n % 3].url}/api/cron",
            json={
                "name": f"owned {n}",
                "cronExpression": "* * * * * *",
                "webhookUrl": receiver.url,
            },
        )
        for n in range(30)
    ]
    await receiver.wait_for(90)
    shares = Counter(owners.owner(j["id"]) for j in jobs)
    async with asyncio.timeout(10):  # told with the next heartbeat
        while True:
            view = await call("GET", f"{cluster[1].url}/api/cluster")
            if {i["id"]: i["jobsOwned"] for i in view["instances"]} == shares:
                break
            await asyncio.sleep(0.2)
    async with asyncio.timeout(10):  # results are written behind their deliveries
        while True:
            logs = [e for j in jobs for e in await all_logs(cluster[0].url, j["id"])]
            ran = {(e["cronJobId"], e["instanceId"]) for e in logs if e["status"] == "SUCCESS"}
            if len(ran) >= len(jobs):
                break
            await asyncio.sleep(0.2)
    assert ran == {(j["id"], owners.owner(j["id"])) for j in jobs}


async def test_a_change_on_one_instance_is_in_force_on_every_instance(
    cluster: list[CronsvcProcess], receiver: Receiver, start_receiver: Any
) -> None:
    new_receiver: Receiver = await start_receiver()
    job = await call(
        "POST",
        f"{cluster[0].url}/api/cron",
        json={"name": "moving", "cronExpression": "* * * * * *", "webhookUrl": receiver.url},
    )
    await receiver.wait_for(2)
    await call(
        "PATCH", f"{cluster[1].url}/api/cron/{job['id']}", json={"webhookUrl": new_receiver.url}
    )
    changed_at = datetime.now().timestamp()
    count = len(receiver.requests)
    await new_receiver.wait_for(4)
    late = [r for r in receiver.requests[count:] if parse(r.json()["scheduledAt"]) > changed_at + 1]
    assert late == []  # within one second, no instance fires the old URL
    await call("POST", f"{cluster[2].url}/api/cron/{job['id']}/pause")
    paused_at = datetime.now().timestamp()
    count = len(new_receiver.requests)
    await asyncio.sleep(3)
    late = [
        r for r in new_receiver.requests[count:] if parse(r.json()["scheduledAt"]) > paused_at + 1
    ]
    assert late == []


async def test_a_killed_instance_loses_nothing(
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
    mongo_database_url: str,
    receiver: Receiver,
    start_receiver: Any,
) -> None:
    # The victim claims its ticks 3 s ahead, so it holds claims of the jobs it
    # owns that it has not sent when it dies: those must be sent by the others,
    # who take its jobs over.
    cluster = cluster_processes(
        tmp_path, redis_url, redis_prefix, mongo_database_url, {2: "claim_ahead_s = 3\n"}
    )
    await asyncio.gather(*(p.start() for p in cluster))
    try:
        await _kill_one_and_check(cluster, receiver, start_receiver)
    finally:
        await asyncio.gather(*(p.stop(signal.SIGKILL) for p in cluster))


async def _kill_one_and_check(
    cluster: list[CronsvcProcess], receiver: Receiver, start_receiver: Any
) -> None:
    stuck: Receiver = await start_receiver()

    async def never() -> None:
        await asyncio.sleep(30)

    stuck.before_reply = never
    victim = cluster[2]
    slow = await call(
        "POST",
        f"{victim.url}/api/cron",
        json={
            "name": "slow",
            "cronExpression": "0 0 1 1 *",
            "webhookUrl": stuck.url,
            "timeoutSeconds": 60,
        },
    )
    running = await call("POST", f"{victim.url}/api/cron/{slow['id']}/trigger")
    # Each instance fires the jobs it owns: the victim's five matter here.
    owners = await all_owners(cluster[0].url)
    jobs, victims = [], 0
    for n in range(60):
        job = await call(
            "POST",
            f"{cluster[0].url}/api/cron",
            json={
                "name": f"steady {n}",
                "cronExpression": "* * * * * *",
                "webhookUrl": receiver.url,
                "misfirePolicy": "fire_all",  # ticks sent late are sent, not coalesced
            },
        )
        jobs.append(job)
        victims += owners.owner(job["id"]) == running["instanceId"]
        if victims == 5:
            break
    assert victims == 5
    await stuck.wait_for(1)
    await asyncio.sleep(4)  # the victim holds claims 3 s ahead by now
    await victim.stop(signal.SIGKILL)
    killed_at = int(datetime.now().timestamp())
    async with asyncio.timeout(15):  # a generous bound; the figure itself is benchmarked
        while True:
            log = await call("GET", f"{cluster[0].url}/api/execution-logs/{running['id']}")
            if log["status"] != "RUNNING":
                break
            await asyncio.sleep(0.2)
    # A run whose webhook went out is LOST: nobody knows whether it was acted on.
    assert log["status"] == "LOST"
    await asyncio.sleep(4)
    end = int(datetime.now().timestamp()) - 2
    arrivals = {
        (r.json()["jobId"], int(parse(r.json()["scheduledAt"]))): r.arrived
        for r in receiver.requests
    }
    counts = Counter((r.json()["jobId"], r.json()["scheduledAt"]) for r in receiver.requests)
    assert max(counts.values()) == 1
    expected = {(j["id"], t) for j in jobs for t in range(killed_at + 1, end + 1)}
    # Only a tick the victim had sent when it died (at most one per job) may
    # be missing, and then it is recorded LOST, never dropped quietly.
    logs = [e for j in jobs for e in await all_logs(cluster[0].url, j["id"])]
    lost = {(e["cronJobId"], int(parse(e["scheduledAt"]))) for e in logs if e["status"] == "LOST"}
    missing = expected - set(arrivals)
    records = [e for e in logs if (e["cronJobId"], int(parse(e["scheduledAt"]))) in missing]
    assert missing <= lost, (killed_at, end, records)
    assert len(lost) <= len(jobs)
    # It died holding claims it had not sent (about three per job): the
    # survivors adopted them, and each reached the receiver once, above.
    adopted = [
        json.loads(line)
        for survivor in cluster[:2]
        for line in survivor.log_path.read_text().splitlines()
        if '"tick_adopted"' in line
    ]
    assert len({(a["job_id"], a["tick"]) for a in adopted}) >= victims


async def test_an_instance_that_stops_hands_its_jobs_over_without_a_gap(
    cluster: list[CronsvcProcess], receiver: Receiver
) -> None:
    """It gives its share up and fires its jobs until the others have taken
    them: under `skip` with no grace, a gap would show as MISSED ticks. Each
    webhook answers after 2 s, so stopping waits that long for the requests
    in flight, with no new tick fired meanwhile."""

    async def slow() -> None:
        await asyncio.sleep(2)

    receiver.before_reply = slow
    owners = await all_owners(cluster[0].url)
    leaving = (await call("GET", f"{cluster[2].url}/readyz"))["instanceId"]
    jobs, theirs = [], []
    for n in range(40):
        job = await call(
            "POST",
            f"{cluster[0].url}/api/cron",
            json={
                "name": f"handed over {n}",
                "cronExpression": "* * * * * *",
                "webhookUrl": receiver.url,
                "misfirePolicy": "skip",
                "misfireGraceSeconds": 0,
            },
        )
        jobs.append(job)
        if owners.owner(job["id"]) == leaving:
            theirs.append(job["id"])
            if len(theirs) == 3:
                break
    assert len(theirs) == 3
    await receiver.wait_for(3 * len(jobs), within_s=20)
    stopped_at = int(datetime.now().timestamp())
    assert await cluster[2].stop(signal.SIGTERM) == 0
    await asyncio.sleep(4)
    end = int(datetime.now().timestamp()) - 2
    fired = Counter(
        (r.json()["jobId"], int(parse(r.json()["scheduledAt"]))) for r in receiver.requests
    )
    assert [key for key, n in fired.items() if n > 1] == []
    expected = {(job_id, t) for job_id in theirs for t in range(stopped_at - 1, end + 1)}
    assert expected - set(fired) == set()
    logs = [e for job_id in theirs for e in await all_logs(cluster[0].url, job_id)]
    assert [e for e in logs if e["status"] == "MISSED"] == []
    instances = {e["instanceId"] for e in logs if parse(e["scheduledAt"]) > stopped_at + 2}
    assert leaving not in instances  # its jobs were taken over


async def test_ticks_leased_by_an_instance_that_died_before_claiming_them_still_fire_once(
    cluster: list[CronsvcProcess],
    receiver: Receiver,
    open_redis: Opener,
    redis_url: str,
    redis_prefix: str,
) -> None:
    job = await call(
        "POST",
        f"{cluster[0].url}/api/cron",
        json={
            "name": "every second",
            "cronExpression": "* * * * * *",
            "webhookUrl": receiver.url,
            "misfirePolicy": "fire_all",  # ticks sent late are sent, not coalesced
        },
    )
    await receiver.wait_for(1)
    # An instance announces itself, wins the leases of three ticks ahead of
    # the others, and dies before it claims them in the store.
    ghost = await open_redis(redis_url, redis_prefix)
    now = datetime.now(UTC)
    await ghost.heartbeat(
        InstanceInfo(id="ghost", host="ghost", version="0", started_at=now, last_heartbeat=now),
        ttl_s=HEARTBEAT_S * 1.5,
    )
    first = int(now.timestamp()) + 3
    ticks = [datetime.fromtimestamp(t, UTC) for t in range(first, first + 3)]
    assert await ghost.try_lease_ticks([(job["id"], t) for t in ticks], 120) == [True] * 3

    async with asyncio.timeout(30):  # a generous bound; the handover is measured in chaos
        while True:
            if {t.timestamp() for t in ticks} <= {
                parse(r.json()["scheduledAt"]) for r in receiver.requests
            }:
                break
            await asyncio.sleep(0.2)
    await asyncio.sleep(1)
    counts = Counter(r.json()["scheduledAt"] for r in receiver.requests)
    assert max(counts.values()) == 1
    logs = await all_logs(cluster[0].url, job["id"])
    assert Counter(e["scheduledAt"] for e in logs).most_common(1)[0][1] == 1


async def test_redis_losing_its_keys_lets_no_tick_fire_twice(
    private_cluster: tuple[list[CronsvcProcess], Any], receiver: Receiver
) -> None:
    cluster, redis_server = private_cluster
    for n in range(5):
        await call(
            "POST",
            f"{cluster[n % 3].url}/api/cron",
            json={
                "name": f"flushed {n}",
                "cronExpression": "* * * * * *",
                "webhookUrl": receiver.url,
            },
        )
    await receiver.wait_for(10)
    for _ in range(3):
        redis_server.flushall()
        await asyncio.sleep(1)
    await asyncio.sleep(2)
    fired = Counter((r.json()["jobId"], r.json()["scheduledAt"]) for r in receiver.requests)
    assert [key for key, n in fired.items() if n > 1] == []


async def test_cluster_view_lists_every_instance_and_one_leader(
    cluster: list[CronsvcProcess],
) -> None:
    async with asyncio.timeout(10):
        while True:
            view = await call("GET", f"{cluster[1].url}/api/cluster")
            if len(view["instances"]) == 3 and view["leader"]:
                break
            await asyncio.sleep(0.2)
    assert sum(i["isLeader"] for i in view["instances"]) == 1
    assert {i["id"] for i in view["instances"]} >= {view["leader"]}


async def test_cluster_view_shows_each_instances_share_of_the_ticks_fired(
    cluster: list[CronsvcProcess], receiver: Receiver
) -> None:
    jobs = [
        await call(
            "POST",
            f"{cluster[n % 3].url}/api/cron",
            json={
                "name": f"shared {n}",
                "cronExpression": "* * * * * *",
                "webhookUrl": receiver.url,
            },
        )
        for n in range(5)
    ]
    await receiver.wait_for(20)
    async with asyncio.timeout(10):
        while True:
            view = await call("GET", f"{cluster[0].url}/api/cluster")
            shares = {i["id"]: i["ticksFiredLastMinute"] for i in view["instances"]}
            if len(shares) == 3 and sum(shares.values()) >= 20:
                break
            await asyncio.sleep(0.2)
    # Counted once delivered, so never more than the receiver got.
    assert sum(shares.values()) <= len(receiver.requests)
    firing = {i for i, n in shares.items() if n > 0}
    async with asyncio.timeout(10):  # results are written behind their deliveries
        while True:
            logs = [e for j in jobs for e in await all_logs(cluster[0].url, j["id"])]
            ran = {e["instanceId"] for e in logs if e["status"] == "SUCCESS"}
            if firing <= ran:
                break
            await asyncio.sleep(0.2)
    assert firing <= ran


async def test_while_redis_is_down_ticks_keep_firing_once_and_readiness_says_so(
    private_cluster: tuple[list[CronsvcProcess], Any], receiver: Receiver
) -> None:
    cluster, redis_server = private_cluster
    jobs = [
        await call(
            "POST",
            f"{cluster[n % 3].url}/api/cron",
            json={
                "name": f"outage {n}",
                "cronExpression": "* * * * * *",
                "webhookUrl": receiver.url,
            },
        )
        for n in range(5)
    ]
    await receiver.wait_for(10)
    redis_server.stop()
    down_at = int(datetime.now().timestamp())
    async with aiohttp.ClientSession() as session:
        async with asyncio.timeout(15):
            while True:
                async with session.get(f"{cluster[1].url}/readyz") as response:
                    ready = await response.json()
                    if ready["status"] != "ok":
                        break
                await asyncio.sleep(0.2)
        # A Redis outage degrades the instance; it stays in a load balancer's rotation.
        assert response.status == 200 and ready["status"] == "degraded"
        assert ready["checks"]["coordinator"].startswith("unavailable")
        async with session.get(f"{cluster[1].url}/api/cron/{jobs[0]['id']}") as response:
            assert response.status == 200  # reads are still served
        async with session.get(f"{cluster[1].url}/api/cluster") as response:
            # The cluster view lives in Redis: unavailable, said plainly, not a 500.
            assert response.status == 503
            assert response.content_type == "application/problem+json"
            assert "coordinator" in (await response.json())["detail"]
        await asyncio.sleep(4)
        up_at = int(datetime.now().timestamp())
        redis_server.start()
        async with asyncio.timeout(20):
            while True:
                statuses = []
                for process in cluster:
                    async with session.get(f"{process.url}/readyz") as response:
                        statuses.append((await response.json())["status"])
                if statuses == ["ok", "ok", "ok"]:
                    break
                await asyncio.sleep(0.2)
    await asyncio.sleep(2)
    fired = Counter((r.json()["jobId"], r.json()["scheduledAt"]) for r in receiver.requests)
    assert [key for key, n in fired.items() if n > 1] == []
    got = {(job, int(parse(tick))) for job, tick in fired}
    during = {(j["id"], t) for j in jobs for t in range(down_at + 1, up_at)}
    assert during - got == set()  # the store's claim alone kept every tick going
    for process in cluster:
        text = process.log_path.read_text()
        assert text.count('"leases_unavailable"') <= 1  # the outage is logged once, not per tick


async def _manual_run_held_on_the_bystander(
    cluster: list[CronsvcProcess], receiver: Receiver, policy: str
) -> tuple[dict[str, Any], dict[str, Any], asyncio.Event]:
    """A paused every-second job with `policy`, run by hand on the first
    instance (its request held by the receiver), then resumed: its ticks are
    claimed by the instance that owns it (one of the other two) while that
    run still runs."""
    release = asyncio.Event()
    arrivals = itertools.count()

    async def hold_the_first() -> None:
        if next(arrivals) == 0:
            await asyncio.wait_for(release.wait(), 30)

    receiver.before_reply = hold_the_first
    # The bystander may not schedule the job: another instance must own it.
    owners = await all_owners(cluster[1].url)
    bystander = (await call("GET", f"{cluster[0].url}/readyz"))["instanceId"]
    for _ in range(20):
        job = await call(
            "POST",
            f"{cluster[1].url}/api/cron",
            json={
                "name": f"{policy} across instances",
                "cronExpression": "* * * * * *",
                "webhookUrl": receiver.url,
                "concurrencyPolicy": policy,
                "timeoutSeconds": 30,
                "isActive": False,
            },
        )
        if owners.owner(job["id"]) != bystander:
            break
        await call("DELETE", f"{cluster[1].url}/api/cron/{job['id']}")
    assert owners.owner(job["id"]) != bystander
    manual = await call("POST", f"{cluster[0].url}/api/cron/{job['id']}/trigger")
    await receiver.wait_for(1)
    await call("POST", f"{cluster[1].url}/api/cron/{job['id']}/resume")
    return job, manual, release


async def _final(base: str, execution_id: str, within_s: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(within_s):
        while True:
            log: dict[str, Any] = await call("GET", f"{base}/api/execution-logs/{execution_id}")
            if log["status"] != "RUNNING":
                return log
            await asyncio.sleep(0.1)


async def test_a_run_on_one_instance_is_aborted_when_another_claims_the_next_replace_tick(
    bystander_cluster: list[CronsvcProcess], receiver: Receiver
) -> None:
    cluster = bystander_cluster
    job, manual, release = await _manual_run_held_on_the_bystander(cluster, receiver, "replace")
    try:
        (dropped,) = await receiver.wait_for_dropped(1, within_s=15)
    finally:
        release.set()
    assert dropped.json()["executionId"] == manual["id"]  # the held request was cut
    replaced = await _final(cluster[2].url, manual["id"])
    assert replaced["status"] == "FAILURE" and replaced["error"]["type"] == "replaced"
    successor_id = replaced["error"]["message"].split("execution ")[1].split()[0]
    successor = await _final(cluster[2].url, successor_id)
    assert successor["trigger"] == "schedule" and successor["status"] == "SUCCESS"
    assert successor["instanceId"] != manual["instanceId"]  # claimed on another instance
    # Ended by the claim, at its tick; not by its own request's end.
    assert parse(successor["scheduledAt"]) <= parse(replaced["finishedAt"])
    assert parse(replaced["finishedAt"]) <= parse(successor["executedAt"])
    logs = await all_logs(cluster[0].url, job["id"])
    assert [e for e in logs if e["status"] == "RUNNING" and e["trigger"] == "manual"] == []


async def test_forbid_skips_ticks_on_other_instances_while_a_run_goes_on(
    bystander_cluster: list[CronsvcProcess], receiver: Receiver
) -> None:
    cluster = bystander_cluster
    job, manual, release = await _manual_run_held_on_the_bystander(cluster, receiver, "forbid")
    try:
        async with asyncio.timeout(15):
            while True:
                logs = await all_logs(cluster[2].url, job["id"])
                skipped = [e for e in logs if e["status"] == "SKIPPED"]
                if len(skipped) >= 2:
                    break
                await asyncio.sleep(0.2)
        assert len(receiver.requests) == 1  # nothing overlapped the held run
    finally:
        release.set()
    assert {e["instanceId"] for e in skipped} - {manual["instanceId"]} != set()
    for entry in skipped:
        assert entry["error"]["type"] == "skipped" and manual["id"] in entry["error"]["message"]
    assert (await _final(cluster[0].url, manual["id"]))["status"] == "SUCCESS"
    await receiver.wait_for(2)  # with the run over, ticks fire again
