"""Faults against a running cronsvc, and what each one cost: `make chaos`.

One cluster (three `cronsvc serve` on a redis-server and an nx-27017 MongoDB
wire server started here; `CRONSVC_TEST_MONGODB_URL`, when set, replaces
nx-27017 and the two store faults are then not run) and a socket-stamping
webhook receiver, all on 127.0.0.1, hold a job mix (`job_mix`): 30 jobs
every second and 10 every five seconds, a third of them `misfirePolicy`
`skip` with `misfireGraceSeconds` 0, the others `fire_once` with 60. The
scenarios run one after the other on that one cluster, each in a window of
its own: `BEFORE_S` seconds of ticks, the fault, `AFTER_S` seconds after
it ends. The next one kills one process on the embedded default
(SQLite, local coordination) holding the same mix. The last two change
the membership of a cluster of their own (three instances, as the first,
holding `MEMBERSHIP_JOBS` every-second jobs in the same mix of policies): a
fourth instance joins and stays, then one of the four that does not lead
is killed and not restarted; their rows also time the handover of the jobs
that moved (`chaos_figures.handover`).

For each scenario one row (`bench.chaos_figures`; `RELIABILITY.md`
defines each column): the ticks owed in the window, those delivered,
second deliveries and second execution records of one tick, ticks neither
delivered nor recorded (next to the service's own ledger, `GET /api/cron/{id}/ledger`),
MISSED and LOST records, records still RUNNING `STUCK_AFTER_S` after the
fault ended (polled until none remain), lag outside the fault, the worst
lag, the time to recover, the most instances reporting themselves leader
at one poll (`/metrics` `cronsvc_is_leader`, every `POLL_S`), and
deliveries of skip-policy jobs later than their grace. Each row is judged
against `TARGETS`; the run exits 1 when any row misses one, or when a
scenario failed to run (its row says why; the others still run).

    python -m bench.chaos
    python -m bench.chaos --scenario redis-stall --scenario store-kill --json chaos.json

Every process started here is stopped by its PID on the way out (SIGKILL
for what does not stop), a stopped process is always continued first, every
wait is bounded, and scenarios that would not finish within `--budget-s`
are reported as not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench import deploy
from bench.chaos_figures import (
    JobSpec,
    Membership,
    Window,
    figures,
    handover,
    handover_target_s,
    job_mix,
    membership_mix,
    missed_targets,
    records_from_wire,
    table,
)
from bench.deploy import Deployment
from bench.receiver import Arrival, receiving, run_event_loop
from bench.report import environment, progress
from bench.window import sleep_until
from cronsvc.config import load_config
from tests.fixtures_mongo import MONGODB_URL_ENV, NxServer, start_nx_27017
from tests.fixtures_redis import RedisServer
from tests.processes import CronsvcProcess

BEFORE_S = 10
"""Seconds of ticks counted before each fault."""
AFTER_S = 20
"""Seconds of ticks counted after each fault ends."""
FAULT_LEAD_S = 0.1
"""Each fault begins this long before a tick: after the tick's claim (its
RUNNING record, written `scheduler.claim_ahead_s` early, 0.2 s at least),
before its requests go out, where a dying or stalling process leaves the
most behind."""
DRAIN_S = 3.0
"""Wait after the window's last tick before its records are read."""
INSTANCE_DOWN_S = 10.0
"""A killed cronsvc instance is restarted this long after the kill."""
INSTANCE_STALL_S = 20.0
REDIS_STALL_S = 10.0
REDIS_DOWN_S = 5.0
STORE_STALL_S = 45.0
STORE_DOWN_S = 45.0
STUCK_AFTER_S = 60.0
"""A record still RUNNING this long after its fault ended is stuck."""
STUCK_SAMPLE = 20
"""Stuck records kept in a row (with a count per instance), to look up in the
instances' logs kept with `--keep`."""
POLL_S = 0.5
"""Between two readings of every live instance's `cronsvc_is_leader`."""
POLL_TIMEOUT_S = 0.4
"""A stopped instance does not answer: its reading is skipped after this."""
SETTLE_WITHIN_S = 60.0
"""Before each scenario: at most this long for every instance to be ready
and one of them to lead."""
API_TIMEOUT_S = 30.0
MAX_PAGES = 100
SERVICE_METRICS = (
    *deploy.FALLING_BEHIND,
    "cronsvc_ticks_dropped_total",
    "cronsvc_store_errors_total",
    "cronsvc_coordinator_errors_total",
    "cronsvc_run_errors_total",
    "cronsvc_claims_unresolved_total",
    "cronsvc_late_results_total",
    "cronsvc_ticks_held_total",
)
"""Read from every instance before and after each scenario (summed; an
instance restarted meanwhile counts from 0 again)."""
BUDGET_S = 960.0
"""Default for the whole run: scenarios that would end later are not run."""
SETUP_S = 10.0
"""Per scenario, besides its window: settling, reading records and ledgers."""
JOIN_S = 10.0
"""About how long a new instance takes to answer `/readyz` 200 (budget)."""
READY_POLL_S = 0.1
"""Between two asks of a new instance's `/readyz`: its readiness is known to this."""
MEMBERSHIP_INSTANCES = 4
"""The kill of one of four: this many live instances before it."""


@dataclass
class Rig:
    """The processes a scenario's fault acts on."""

    service: Deployment
    jobs: dict[str, JobSpec]
    redis: RedisServer | None = None
    store: NxServer | None = None
    """None: an external MongoDB, not ours to stop."""


@dataclass(frozen=True, slots=True)
class Span:
    start: float
    end: float
    change: Membership | None = None
    """A fault that changes the live instances: which one, and when."""


Fault = Callable[[Rig, aiohttp.ClientSession], Awaitable[Span]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    name: str
    what: str
    fault: Fault
    fault_s: float
    """About how long the fault lasts (for the run's time budget)."""
    rig: str = "cluster"
    """`cluster`, `single` or `membership` (each a rig of its own)."""
    prepare: Callable[[Rig, aiohttp.ClientSession], Awaitable[None]] | None = None
    """Brings the rig to where the fault starts from, before the window."""
    needs_store: bool = False
    """Needs a store process of ours (not an external MongoDB)."""
    stall_lag: bool = False


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    """SIGSTOP `pid` for the block; SIGCONT however the block ends."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):  # it died meanwhile
            os.kill(pid, signal.SIGCONT)


async def leader_flags(
    session: aiohttp.ClientSession, instances: Sequence[CronsvcProcess]
) -> list[bool | None]:
    """Each instance's `cronsvc_is_leader`; None for one that is down or
    does not answer within `POLL_TIMEOUT_S`."""

    async def flag(instance: CronsvcProcess) -> bool | None:
        if instance.process is None or instance.process.returncode is not None:
            return None
        try:
            timeout = aiohttp.ClientTimeout(total=POLL_TIMEOUT_S)
            async with session.get(f"{instance.url}/metrics", timeout=timeout) as response:
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError):
            return None
        for line in text.splitlines():
            series, _, value = line.partition(" ")
            if series == "cronsvc_is_leader":
                return float(value) == 1.0
        return None

    return list(await asyncio.gather(*(flag(i) for i in instances)))


@dataclass
class LeaderWatch:
    """The most instances that reported leading at one poll, and how many
    polls saw none or more than one."""

    most: int = 0
    polls: int = 0
    leaderless_polls: int = 0
    crowded_polls: int = 0

    def see(self, flags: Sequence[bool | None]) -> None:
        count = sum(1 for f in flags if f)
        self.polls += 1
        self.most = max(self.most, count)
        self.leaderless_polls += int(count == 0)
        self.crowded_polls += int(count > 1)


@asynccontextmanager
async def watching_leaders(
    session: aiohttp.ClientSession, service: Deployment, *, within_s: float
) -> AsyncIterator[LeaderWatch]:
    """Poll every `POLL_S` while the block runs (at most `within_s`)."""
    watch = LeaderWatch()

    async def poll() -> None:
        for _ in range(int(within_s / POLL_S) + 1):
            began = time.monotonic()
            watch.see(await leader_flags(session, service.instances))
            await asyncio.sleep(max(0.0, POLL_S - (time.monotonic() - began)))

    task = asyncio.create_task(poll())
    try:
        yield watch
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise


async def _ready(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        timeout = aiohttp.ClientTimeout(total=POLL_TIMEOUT_S * 2)
        async with session.get(f"{url}/readyz", timeout=timeout) as response:
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def _readiness(session: aiohttp.ClientSession, instance: CronsvcProcess) -> tuple[float, str]:
    """Poll a starting instance's `/readyz` every `READY_POLL_S` until it
    answers 200: then (Unix time) and its `instanceId` (in the body: the rig
    has no API tokens)."""
    timeout = aiohttp.ClientTimeout(total=POLL_TIMEOUT_S * 2)
    for _ in range(int(SETTLE_WITHIN_S / READY_POLL_S)):
        if instance.process is None or instance.process.returncode is not None:
            raise RuntimeError(f"the new instance exited: {instance.log_tail()}")
        try:
            async with session.get(f"{instance.url}/readyz", timeout=timeout) as response:
                if response.status == 200:
                    at = time.time()
                    return at, str((await response.json())["instanceId"])
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(READY_POLL_S)
    raise RuntimeError(f"the new instance was not ready within {SETTLE_WITHIN_S:g} s")


async def _instance_id(session: aiohttp.ClientSession, instance: CronsvcProcess) -> str:
    timeout = aiohttp.ClientTimeout(total=API_TIMEOUT_S)
    async with session.get(f"{instance.url}/readyz", timeout=timeout) as response:
        return str((await response.json())["instanceId"])


def heartbeat_interval_s(instance: CronsvcProcess) -> float:
    """`scheduler.heartbeat_interval_s` as the instance reads it (its file,
    then the environment)."""
    return load_config(instance.config_path).scheduler.heartbeat_interval_s


async def settle(session: aiohttp.ClientSession, service: Deployment) -> float | None:
    """Wait until every instance is ready and exactly one leads; the seconds
    it took, or None when `SETTLE_WITHIN_S` passed first."""
    began = time.monotonic()
    while time.monotonic() - began < SETTLE_WITHIN_S:
        ready = await asyncio.gather(*(_ready(session, url) for url in service.urls))
        flags = await leader_flags(session, service.instances)
        if all(ready) and sum(1 for f in flags if f) == 1:
            return round(time.monotonic() - began, 1)
        await asyncio.sleep(POLL_S)
    return None


async def pick(rig: Rig, session: aiohttp.ClientSession, *, leader: bool) -> int:
    """The index of the leading instance, or of one that does not lead."""
    for _ in range(int(SETTLE_WITHIN_S / POLL_S)):
        flags = await leader_flags(session, rig.service.instances)
        if sum(1 for f in flags if f) == 1 and None not in flags:
            return flags.index(True) if leader else flags.index(False)
        await asyncio.sleep(POLL_S)
    raise RuntimeError(f"no single leader among the instances: {flags}")


def _process(rig: Rig, n: int) -> asyncio.subprocess.Process:
    process = rig.service.instances[n].process
    assert process is not None
    return process


async def kill_instance(rig: Rig, session: aiohttp.ClientSession, *, leader: bool) -> Span:
    n = await pick(rig, session, leader=leader)
    progress(f"  kill -9 cronsvc-{n}, restart in {INSTANCE_DOWN_S:g} s")
    process = _process(rig, n)
    start = time.time()
    process.kill()
    await process.wait()
    await asyncio.sleep(INSTANCE_DOWN_S)
    await rig.service.instances[n].start()
    return Span(start, time.time())


async def stop_instance(rig: Rig, session: aiohttp.ClientSession, *, leader: bool) -> Span:
    n = await pick(rig, session, leader=leader)
    progress(f"  SIGSTOP cronsvc-{n} for {INSTANCE_STALL_S:g} s")
    start = time.time()
    with stopped(_process(rig, n).pid):
        await asyncio.sleep(INSTANCE_STALL_S)
    return Span(start, time.time())


async def join_instance(rig: Rig, session: aiohttp.ClientSession) -> Span:
    """One more instance on the rig's Redis and store, to stay: from its
    spawn to its first `/readyz` 200."""
    progress("  start one more cronsvc serve")
    start = time.time()
    instance = await rig.service.add_instance(wait=False)
    ready, instance_id = await _readiness(session, instance)
    target = handover_target_s(heartbeat_interval_s(instance), joined=True)
    change = Membership(joined=True, instance=instance_id, at=ready, target_s=target)
    return Span(start, ready, change)


async def four_instances(rig: Rig, session: aiohttp.ClientSession) -> None:
    """Instances joined (each waited for) until `MEMBERSHIP_INSTANCES` run:
    for a kill of one of four run without the join before it."""
    while len(rig.service.instances) < MEMBERSHIP_INSTANCES:
        progress("  start one more cronsvc serve (before the window)")
        await rig.service.add_instance()


async def busiest_follower(rig: Rig, session: aiohttp.ClientSession) -> tuple[int, str]:
    """The index and `instanceId` of the instance that does not lead and
    fired the most ticks in the last minute (`GET /api/cluster`). Where every
    instance races for every tick, the usual lease winners fire nearly all
    of them, and a follower picked at random may have no jobs to hand over."""
    await pick(rig, session, leader=False)  # one leader, every instance answering
    flags = await leader_flags(session, rig.service.instances)
    ids = [await _instance_id(session, instance) for instance in rig.service.instances]
    cluster, _ = await _get_json(session, f"{rig.service.urls[0]}/api/cluster")
    fired = {i["id"]: int(i["ticksFiredLastMinute"]) for i in cluster["instances"]}
    followers = [n for n, flag in enumerate(flags) if flag is False and ids[n] in fired]
    if not followers:
        raise RuntimeError(f"no follower among the live instances: {flags}, {cluster}")
    n = max(followers, key=lambda n: fired[ids[n]])
    progress(f"  ticks fired in the last minute: {fired}")
    return n, ids[n]


async def kill_for_good(rig: Rig, session: aiohttp.ClientSession) -> Span:
    """kill -9 of the busiest instance that does not lead, not restarted:
    the others must take its jobs over."""
    n, instance_id = await busiest_follower(rig, session)
    instance = rig.service.instances[n]
    target = handover_target_s(heartbeat_interval_s(instance), joined=False)
    progress(f"  kill -9 cronsvc-{n} ({instance_id}), not restarted")
    process = _process(rig, n)
    # Choosing took some of the lead before this tick: kill before the next.
    await sleep_until(math.ceil(time.time() + FAULT_LEAD_S) - FAULT_LEAD_S)
    start = time.time()
    process.kill()
    await process.wait()
    # Out of the rig: settling, leader polls and metrics ask the live ones.
    rig.service.instances.remove(instance)
    change = Membership(joined=False, instance=instance_id, at=start, target_s=target)
    return Span(start, start, change)


def _redis(rig: Rig) -> RedisServer:
    assert rig.redis is not None and rig.redis.pid is not None
    return rig.redis


def _store(rig: Rig) -> NxServer:
    assert rig.store is not None
    return rig.store


async def redis_flushall(rig: Rig, session: aiohttp.ClientSession) -> Span:
    start = time.time()
    await asyncio.to_thread(_redis(rig).flushall)
    return Span(start, time.time())


async def redis_stall(rig: Rig, session: aiohttp.ClientSession) -> Span:
    pid = _redis(rig).pid
    assert pid is not None
    start = time.time()
    with stopped(pid):
        await asyncio.sleep(REDIS_STALL_S)
    return Span(start, time.time())


async def redis_kill(rig: Rig, session: aiohttp.ClientSession) -> Span:
    server = _redis(rig)
    start = time.time()
    server.stop()  # SIGKILL
    await asyncio.sleep(REDIS_DOWN_S)
    await asyncio.to_thread(server.start)  # same port, empty
    return Span(start, time.time())


async def store_stall(rig: Rig, session: aiohttp.ClientSession) -> Span:
    start = time.time()
    with stopped(_store(rig).process.pid):
        await asyncio.sleep(STORE_STALL_S)
    return Span(start, time.time())


async def store_kill(rig: Rig, session: aiohttp.ClientSession) -> Span:
    server = _store(rig)
    start = time.time()
    server.process.kill()
    await asyncio.to_thread(server.process.wait)
    await asyncio.sleep(STORE_DOWN_S)
    # Where the instances expect it, on the files it left.
    rig.store = await asyncio.to_thread(start_nx_27017, server.directory, port=server.port)
    return Span(start, time.time())


async def _kill_follower(rig: Rig, session: aiohttp.ClientSession) -> Span:
    return await kill_instance(rig, session, leader=False)


async def _kill_leader(rig: Rig, session: aiohttp.ClientSession) -> Span:
    return await kill_instance(rig, session, leader=True)


async def _stop_follower(rig: Rig, session: aiohttp.ClientSession) -> Span:
    return await stop_instance(rig, session, leader=False)


async def _stop_leader(rig: Rig, session: aiohttp.ClientSession) -> Span:
    return await stop_instance(rig, session, leader=True)


SCENARIOS = (
    Scenario(
        name="kill-follower",
        what="kill -9 of an instance that does not lead, restarted 10 s later",
        fault=_kill_follower,
        fault_s=INSTANCE_DOWN_S + 5,
    ),
    Scenario(
        name="kill-leader",
        what="kill -9 of the leader, restarted 10 s later",
        fault=_kill_leader,
        fault_s=INSTANCE_DOWN_S + 5,
    ),
    Scenario(
        name="stop-follower",
        what="SIGSTOP of an instance that does not lead for 20 s, then SIGCONT",
        fault=_stop_follower,
        fault_s=INSTANCE_STALL_S,
    ),
    Scenario(
        name="stop-leader",
        what="SIGSTOP of the leader for 20 s, then SIGCONT",
        fault=_stop_leader,
        fault_s=INSTANCE_STALL_S,
    ),
    Scenario(name="redis-flushall", what="Redis FLUSHALL", fault=redis_flushall, fault_s=0),
    Scenario(
        name="redis-stall",
        what="SIGSTOP of redis-server for 10 s, then SIGCONT",
        fault=redis_stall,
        fault_s=REDIS_STALL_S,
        stall_lag=True,
    ),
    Scenario(
        name="redis-kill",
        what="kill -9 of redis-server, restarted empty on its port 5 s later",
        fault=redis_kill,
        fault_s=REDIS_DOWN_S + 1,
    ),
    Scenario(
        name="store-stall",
        what="SIGSTOP of the store (nx-27017) for 45 s, then SIGCONT",
        fault=store_stall,
        fault_s=STORE_STALL_S,
        needs_store=True,
    ),
    Scenario(
        name="store-kill",
        what="kill -9 of the store, restarted 45 s later on its port and data directory",
        fault=store_kill,
        fault_s=STORE_DOWN_S + 5,
        needs_store=True,
    ),
    Scenario(
        name="single-kill",
        what="kill -9 of one process on SQLite and local coordination, restarted 10 s later",
        fault=_kill_leader,  # the one process leads
        fault_s=INSTANCE_DOWN_S + 5,
        rig="single",
    ),
    Scenario(
        name="join-fourth",
        what="a fourth cronsvc serve joins the three on their Redis and store, and stays",
        fault=join_instance,
        fault_s=JOIN_S,
        rig="membership",
    ),
    Scenario(
        name="kill-one-of-four",
        what="kill -9 of the busiest of four instances that does not lead, not restarted",
        fault=kill_for_good,
        fault_s=JOIN_S,  # four_instances, when the join did not run first
        rig="membership",
        prepare=four_instances,
    ),
)
BY_NAME = {s.name: s for s in SCENARIOS}


# Reading what the service recorded.


def _instant(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat().replace("+00:00", "Z")


async def _get_json(session: aiohttp.ClientSession, url: str) -> tuple[Any, str | None]:
    """The JSON answer and the next page's path, if any."""
    timeout = aiohttp.ClientTimeout(total=API_TIMEOUT_S)
    async with session.get(url, timeout=timeout) as response:
        response.raise_for_status()
        link = response.headers.get("Link")
        return await response.json(), link[1 : link.index(">")] if link else None


async def execution_logs(
    session: aiohttp.ClientSession, base: str, window: Window, *, status: str | None = None
) -> list[dict[str, Any]]:
    """Every execution record whose tick lies in the window (`status` only)."""
    query = f"since={_instant(window.first)}&until={_instant(window.last + 1)}&limit=500"
    if status is not None:
        query += f"&status={status}"
    url: str | None = f"{base}/api/execution-logs?{query}"
    documents: list[dict[str, Any]] = []
    for _ in range(MAX_PAGES):
        if url is None:
            return documents
        page, path = await _get_json(session, url)
        documents += page
        url = f"{base}{path}" if path else None
    raise RuntimeError(f"more than {MAX_PAGES} pages of execution records")


async def ledger_gaps(
    session: aiohttp.ClientSession, base: str, jobs: Iterable[str], window: Window
) -> int:
    """Owed ticks in the window with no record, by the service's ledger."""
    query = f"since={_instant(window.first)}&until={_instant(window.last + 1)}"
    slots = asyncio.Semaphore(8)

    async def gaps(job: str) -> int:
        async with slots:
            ledger, _ = await _get_json(session, f"{base}/api/cron/{job}/ledger?{query}")
        return int(ledger["summary"]["gaps"])

    return sum(await asyncio.gather(*(gaps(job) for job in jobs)))


async def wait_running_cleared(
    session: aiohttp.ClientSession, base: str, window: Window
) -> tuple[list[dict[str, Any]], float | None]:
    """Records in the window still RUNNING `STUCK_AFTER_S` after the fault
    ended (polled, so this returns as soon as none is), and the seconds after
    the fault's end at which none was left (None: some were still)."""
    while True:
        running = await execution_logs(session, base, window, status="RUNNING")
        now = time.time()
        if not running:
            return [], round(now - window.fault_end, 1)
        if now >= window.fault_end + STUCK_AFTER_S:
            return running, None
        await asyncio.sleep(min(1.0, window.fault_end + STUCK_AFTER_S - now))


async def run_scenario(
    scenario: Scenario,
    rig: Rig,
    session: aiohttp.ClientSession,
    arrivals: list[Arrival],
) -> dict[str, Any]:
    progress(f"{scenario.name}: {scenario.what}")
    if scenario.prepare is not None:
        await scenario.prepare(rig, session)
    settled = await settle(session, rig.service)
    service_before = await _service_metrics(session, rig.service)
    first = int(time.time()) + 1
    longest = BEFORE_S + scenario.fault_s + AFTER_S + 2 * SETTLE_WITHIN_S
    async with watching_leaders(session, rig.service, within_s=longest) as watch:
        await sleep_until(first + BEFORE_S - FAULT_LEAD_S)
        span = await scenario.fault(rig, session)
        last = int(span.end) + AFTER_S
        await sleep_until(last + DRAIN_S)
    window = Window(first=first, last=last, fault_start=span.start, fault_end=span.end)
    base = await _answering(session, rig.service)
    stuck, cleared = await wait_running_cleared(session, base, window)
    records = records_from_wire(await execution_logs(session, base, window))
    service_after = await _service_metrics(session, rig.service)
    row: dict[str, Any] = {
        "scenario": scenario.name,
        "what": scenario.what,
        "settled_s": settled,
        "window": {
            "first_tick": first,
            "last_tick": last,
            "fault_start": round(span.start, 3),
            "fault_end": round(span.end, 3),
        },
        "window_after_fault_s": round(last - span.end),
        **figures(window, rig.jobs, arrivals, records, stall_lag=scenario.stall_lag),
        "ledger_gaps": await ledger_gaps(session, base, rig.jobs, window),
        "stuck_running": len(stuck),
        "stuck_sample": [
            {key: record.get(key) for key in ("id", "cronJobId", "scheduledAt", "instanceId")}
            for record in stuck[:STUCK_SAMPLE]
        ],
        "stuck_by_instance": dict(Counter(record.get("instanceId") for record in stuck)),
        "running_cleared_s": cleared,
        "max_leaders": watch.most,
        "leader_polls": watch.polls,
        "leaderless_polls": watch.leaderless_polls,
        "crowded_polls": watch.crowded_polls,
        "service_metrics_change": (
            deploy.metrics_change(service_before, service_after)
            if service_before and service_after
            else None
        ),
    }
    if span.change is not None:
        row |= handover(span.change, records, arrivals)
    row["missed_targets"] = missed_targets(row)
    progress(
        f"  delivered {row['delivered']}/{row['expected']}, "
        f"unexplained missing {row['unexplained_missing']}, "
        f"dup {row['duplicate_deliveries']}/{row['duplicate_records']}, "
        f"stuck {len(stuck)}, leaders {watch.most}, skip late {row['skip_late']}, "
        f"handover {row.get('handover_s', '-')} s ({row.get('handover_jobs', '-')} jobs): "
        f"{row['missed_targets'] or 'pass'}"
    )
    return row


async def _answering(session: aiohttp.ClientSession, service: Deployment) -> str:
    """An instance that serves the API (the store reachable), waiting for one."""
    for _ in range(int(SETTLE_WITHIN_S / POLL_S)):
        for url in service.urls:
            if await _ready(session, url):
                return url
        await asyncio.sleep(POLL_S)
    raise RuntimeError("no instance became ready to read its records")


async def _service_metrics(
    session: aiohttp.ClientSession, service: Deployment
) -> dict[str, float] | None:
    """`SERVICE_METRICS`; None when an instance does not answer."""
    try:
        return await service.metrics(session, SERVICE_METRICS)
    except (aiohttp.ClientError, TimeoutError):
        return None


async def _create(
    service: Deployment,
    session: aiohttp.ClientSession,
    webhook_url: str,
    mix: Sequence[JobSpec] | None = None,
) -> dict[str, JobSpec]:
    """`mix`, else `job_mix()`."""
    mix = job_mix() if mix is None else mix
    created = await service.create_jobs(
        session,
        [spec.cadence for spec in mix],
        webhook_url,
        name_prefix="chaos",
        fields=[spec.fields for spec in mix],
        within_s=120.0,
    )
    # `create_jobs` answers in the order of the cadences given.
    return dict(zip(created, mix, strict=True))


@asynccontextmanager
async def cluster_rig(
    workdir: Path,
    session: aiohttp.ClientSession,
    webhook_url: str,
    mix: Sequence[JobSpec] | None = None,
) -> AsyncIterator[Rig]:
    """Redis and the store started here (the store: unless
    `CRONSVC_TEST_MONGODB_URL` names one), three instances, the job mix
    (`mix`, else `job_mix()`)."""
    redis_server = RedisServer(workdir)
    external = os.environ.get(MONGODB_URL_ENV)
    rig: Rig | None = None
    store: NxServer | None = None
    try:
        await asyncio.to_thread(redis_server.start)
        if external is None:
            store = await asyncio.to_thread(start_nx_27017, workdir / "mongo")
        mongo_url = store.url if store else external
        async with deploy.cluster(
            workdir,
            max_jobs=len(mix or job_mix()) + 60,
            redis_url=redis_server.url,
            mongo_url=mongo_url,
        ) as service:
            rig = Rig(service=service, jobs={}, redis=redis_server, store=store)
            rig.jobs = await _create(service, session, webhook_url, mix)
            yield rig
    finally:
        if rig is not None and rig.store is not None and rig.store is not store:
            await asyncio.to_thread(rig.store.stop)  # restarted by a scenario
        if store is not None:
            await asyncio.to_thread(store.stop)
        redis_server.stop()


@asynccontextmanager
async def single_rig(
    workdir: Path, session: aiohttp.ClientSession, webhook_url: str
) -> AsyncIterator[Rig]:
    async with deploy.single(workdir, max_jobs=100) as service:
        yield Rig(service=service, jobs=await _create(service, session, webhook_url))


@asynccontextmanager
async def membership_rig(
    workdir: Path, session: aiohttp.ClientSession, webhook_url: str
) -> AsyncIterator[Rig]:
    """As `cluster_rig`, on a Redis and store of its own, with
    `membership_mix()`: instances join it and leave it for good."""
    async with cluster_rig(workdir, session, webhook_url, membership_mix()) as rig:
        yield rig


RIGS = {"cluster": cluster_rig, "single": single_rig, "membership": membership_rig}


def _nominal_s(scenario: Scenario) -> float:
    return BEFORE_S + scenario.fault_s + AFTER_S + DRAIN_S + SETUP_S


async def chaos(names: Sequence[str], workdir: Path, *, budget_s: float) -> dict[str, Any]:
    began = time.monotonic()
    rows: dict[str, dict[str, Any]] = {}
    chosen = [s for s in SCENARIOS if s.name in names]
    external_store = MONGODB_URL_ENV in os.environ
    async with receiving() as receiver, aiohttp.ClientSession() as session:
        for kind, make in RIGS.items():
            mine = [s for s in chosen if s.rig == kind]
            if not mine:
                continue
            progress(f"starting the {kind} deployment")
            async with make(workdir / kind, session, receiver.url) as rig:
                for scenario in mine:
                    if scenario.needs_store and external_store:
                        reason = f"{MONGODB_URL_ENV} names a store not ours to stop"
                        rows[scenario.name] = {"scenario": scenario.name, "not_run": reason}
                    elif time.monotonic() - began + _nominal_s(scenario) > budget_s:
                        reason = f"--budget-s {budget_s:g} would be passed"
                        rows[scenario.name] = {"scenario": scenario.name, "not_run": reason}
                    else:
                        try:
                            rows[scenario.name] = await run_scenario(
                                scenario, rig, session, receiver.arrivals
                            )
                        except Exception as exc:  # the other scenarios still get their rows
                            traceback.print_exc()
                            error = f"{type(exc).__name__}: {exc}"
                            rows[scenario.name] = {"scenario": scenario.name, "error": error}
    return {
        "seconds": round(time.monotonic() - began),
        "scenarios": [rows[s.name] for s in chosen],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(BY_NAME),
        help="run this one (repeatable; default: all, in their order)",
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="for the whole run")
    parser.add_argument(
        "--keep", type=Path, help="work in this (new) directory and keep it: the services' logs"
    )
    args = parser.parse_args()
    if not 60 <= args.budget_s <= 3600:
        parser.error("--budget-s 60..3600")
    names = args.scenario or list(BY_NAME)
    env = environment()
    workdir = (
        contextlib.nullcontext(str(args.keep))
        if args.keep
        else tempfile.TemporaryDirectory(prefix="cronsvc-chaos-")
    )
    with workdir as tmp:
        for kind in RIGS:
            (Path(tmp) / kind).mkdir(parents=True)
        result = run_event_loop(lambda: chaos(names, Path(tmp), budget_s=args.budget_s))
    rows = result["scenarios"]
    print(table(rows))
    print(f"\n{len(rows)} scenarios in {result['seconds']} s.")
    if args.json is not None:
        args.json.write_text(json.dumps({"environment": env, **result}, indent=2) + "\n")
    failed = [r for r in rows if "error" in r or r.get("missed_targets")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
