"""cronsvc as real processes for benchmarks: one instance on the embedded
default (SQLite, local coordination), or a cluster on Redis and a MongoDB wire
server. Everything listens on 127.0.0.1 and lives in a work directory.

Redis and MongoDB: the URLs passed in, else `CRONSVC_TEST_REDIS_URL` and
`CRONSVC_TEST_MONGODB_URL`, else a `redis-server` and an nx-27017 started
here (the test suite's own starters). On a server it did not start, a
deployment uses a key prefix and a database of its own and removes them after.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import redis
from pymongo import MongoClient

from bench.figures import Cadence
from tests.fakes import free_port
from tests.fixtures_mongo import MONGODB_URL_ENV, start_nx_27017, with_database
from tests.fixtures_redis import RedisServer
from tests.processes import CronsvcProcess

REDIS_URL_ENV = "CRONSVC_TEST_REDIS_URL"
CREATE_CONCURRENCY = 16
"""Job creations in flight at once: enough to keep a store busy."""
CREATE_ATTEMPTS = 8
"""A creation answered 429 or 503 is sent again (after its Retry-After) up to
this many times in all: a Mongo wire server busy with the jobs already made
can time a creation out."""
FALLING_BEHIND = (
    "cronsvc_results_pending",
    "cronsvc_log_writes_dropped_total",
    'cronsvc_executions_total{status="MISSED"}',
    "cronsvc_ticks_missed_unrecorded_total",
)
"""Metric series (a name: all its labels) that grow when a service cannot
keep up: execution results waiting to be written or never written, and
ticks it recorded as missed or jumped over."""


def config_text(
    port: int,
    store_url: str,
    *,
    max_jobs: int,
    coordination_url: str = "local",
    key_prefix: str = "cronsvc",
    log_level: str = "warning",
    scheduler: str = "",
) -> str:
    """A service configuration for benchmarks: defaults, except that webhooks
    may reach the receiver on 127.0.0.1, the API has
    no rate limit (jobs are created as fast as it answers) and holds
    `max_jobs`."""
    return (
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nshutdown_grace_s = 5\n'
        f'[store]\nurl = "{store_url}"\n'
        f'[coordination]\nurl = "{coordination_url}"\nkey_prefix = "{key_prefix}"\n'
        f"[scheduler]\n{scheduler}"
        "[webhook]\nallow_private_targets = true\n"
        f"[limits]\nrate_limit_per_s = 0\nmax_jobs = {max_jobs}\n"
        f'[logging]\nlevel = "{log_level}"\n'
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceTemplate:
    """What a cluster's instances share: enough to start one more."""

    workdir: Path
    store_url: str
    coordination_url: str
    key_prefix: str
    max_jobs: int
    log_level: str
    profile_dir: Path | None = None

    def instance(self, n: int, scheduler: str = "") -> CronsvcProcess:
        """`cronsvc-N`: its configuration written (on a free port), not started."""
        port = free_port()
        config = self.workdir / f"cronsvc-{n}.toml"
        config.write_text(
            config_text(
                port,
                self.store_url,
                max_jobs=self.max_jobs,
                coordination_url=self.coordination_url,
                key_prefix=self.key_prefix,
                log_level=self.log_level,
                scheduler=scheduler,
            )
        )
        return CronsvcProcess(
            config_path=config,
            port=port,
            log_path=self.workdir / f"cronsvc-{n}.log",
            profile_path=self.profile_dir / f"cronsvc-{n}.prof" if self.profile_dir else None,
        )


@dataclass
class Deployment:
    instances: list[CronsvcProcess]
    """Stopped, every one, when the deployment ends (a cluster's, also those
    added later)."""
    helpers: dict[str, int] = field(default_factory=dict)
    """Processes this deployment started besides cronsvc (name: pid)."""
    create_retries: int = 0
    """Creations answered 429 or 503 (the store or the API busy) and sent again."""
    template: InstanceTemplate | None = None
    """A cluster's: how to start one more instance."""
    started: int = 0
    """Instances started so far, those gone included: the next one's number."""

    def __post_init__(self) -> None:
        self.started = max(self.started, len(self.instances))

    @property
    def urls(self) -> list[str]:
        return [i.url for i in self.instances]

    def pids(self) -> dict[str, int]:
        """Every process to measure, by name: `cronsvc` (or `cronsvc-N` in a
        cluster), then the helpers."""
        pids = {}
        for n, instance in enumerate(self.instances):
            assert instance.process is not None
            pids["cronsvc" if len(self.instances) == 1 else f"cronsvc-{n}"] = instance.process.pid
        return pids | self.helpers

    async def create_jobs(
        self,
        session: aiohttp.ClientSession,
        cadences: Sequence[Cadence],
        webhook_url: str,
        *,
        name_prefix: str,
        within_s: float = 600.0,
        fields: Sequence[Mapping[str, object]] = (),
    ) -> dict[str, Cadence]:
        """Create one job per cadence through the API, spread round-robin over
        the instances; answers each job's id and cadence. `fields[n]`, when
        given, is added to the n-th job's document (a misfire policy, say)."""
        slots = asyncio.Semaphore(CREATE_CONCURRENCY)
        urls = self.urls

        async def create(n: int, cadence: Cadence) -> tuple[str, Cadence]:
            document: dict[str, object] = {
                "name": f"{name_prefix} {n}",
                "cronExpression": cadence.cron,
                "webhookUrl": webhook_url,
                **(fields[n] if fields else {}),
            }
            url = urls[n % len(urls)]
            async with slots:
                for attempt in range(1, CREATE_ATTEMPTS + 1):
                    async with session.post(f"{url}/api/cron", json=document) as response:
                        if response.status == 201:
                            return (await response.json())["id"], cadence
                        text = await response.text()
                        wait = response.headers.get("Retry-After", "1")
                    if response.status == 409 and attempt > 1:
                        # An earlier attempt's answer was lost, not its write.
                        name = str(document["name"])
                        return await self._job_named(session, url, name), cadence
                    if response.status not in (429, 503) or attempt == CREATE_ATTEMPTS:
                        raise RuntimeError(f"creating a job: {response.status} {text}")
                    self.create_retries += 1
                    await asyncio.sleep(float(wait) if wait.isdigit() else 1.0)
            raise AssertionError("unreachable")

        async with asyncio.timeout(within_s):
            created = await asyncio.gather(*(create(n, c) for n, c in enumerate(cadences)))
        return dict(created)

    async def add_instance(self, *, wait: bool = True) -> CronsvcProcess:
        """Start one more `cronsvc serve` on a cluster's Redis and store, with
        the default [scheduler] table (with `wait=False`, answer once it is
        spawned); it is stopped with the others."""
        if self.template is None:
            raise RuntimeError("only a cluster takes another instance")
        instance = self.template.instance(self.started)
        self.started += 1
        self.instances.append(instance)
        await instance.start(wait=wait)
        return instance

    async def _job_named(self, session: aiohttp.ClientSession, url: str, name: str) -> str:
        async with session.get(f"{url}/api/cron", params={"name": name}) as response:
            response.raise_for_status()
            jobs = await response.json()  # names starting with `name`, a page of them
        (job_id,) = [job["id"] for job in jobs if job["name"] == name]
        return str(job_id)

    async def round_trips(self, session: aiohttp.ClientSession) -> float:
        """Exchanges with the coordinator so far, summed over instances."""
        total = 0.0
        for url in self.urls:
            async with session.get(f"{url}/metrics") as response:
                text = await response.text()
            for line in text.splitlines():
                series, _, value = line.partition(" ")
                if series == "cronsvc_coordinator_round_trips":
                    total += float(value)
        return total

    async def metrics(
        self, session: aiohttp.ClientSession, names: Sequence[str] = FALLING_BEHIND
    ) -> dict[str, float]:
        """Metric series (`FALLING_BEHIND`, else `names`), each summed over
        labels and instances."""
        totals = dict.fromkeys(names, 0.0)
        for url in self.urls:
            async with session.get(f"{url}/metrics") as response:
                text = await response.text()
            for line in text.splitlines():
                series, _, value = line.partition(" ")
                for key in (series, series.partition("{")[0]):
                    if key in totals:
                        totals[key] += float(value)
        return totals


async def _stop_all(instances: list[CronsvcProcess]) -> None:
    started = [i for i in instances if i.process is not None]
    await asyncio.gather(*(i.stop() for i in started), return_exceptions=True)


@asynccontextmanager
async def single(
    workdir: Path,
    *,
    max_jobs: int,
    store_path: Path | None = None,
    log_level: str = "warning",
    log_path: Path | None = None,
    scheduler: str = "",
    wait: bool = True,
) -> AsyncIterator[Deployment]:
    """One `cronsvc serve` on a SQLite file (`store_path`, else a new one in
    `workdir`); with `wait=False`
    it is yielded as soon as it is spawned."""
    port = free_port()
    db = store_path or workdir / "cronsvc.db"
    config = workdir / "cronsvc.toml"
    config.write_text(
        config_text(
            port,
            f"sqlite:///{db}",
            max_jobs=max_jobs,
            log_level=log_level,
            scheduler=scheduler,
        )
    )
    instance = CronsvcProcess(
        config_path=config, port=port, log_path=log_path or workdir / "cronsvc.log"
    )
    try:
        await instance.start(wait=wait)
        yield Deployment([instance])
    finally:
        await _stop_all([instance])


@asynccontextmanager
async def cluster(
    workdir: Path,
    *,
    max_jobs: int,
    instances: int = 3,
    redis_url: str | None = None,
    mongo_url: str | None = None,
    log_level: str = "warning",
    schedulers: Sequence[str] = (),
    first_leads: bool = False,
    profile_dir: Path | None = None,
) -> AsyncIterator[Deployment]:
    """`instances` processes of `cronsvc serve` sharing Redis and MongoDB.
    Instance n gets
    `schedulers[n]` (if there is one) in its [scheduler] table; with
    `first_leads` the first instance is started (and holds the leader lease)
    before the others start; with `profile_dir` each runs under cProfile and
    writes `cronsvc-N.prof` there when stopped."""
    async with AsyncExitStack() as stack:
        helpers: dict[str, int] = {}
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        database = f"bench{uuid.uuid4().hex[:8]}"
        redis_url = redis_url or os.environ.get(REDIS_URL_ENV)
        if redis_url is None:
            server = RedisServer(workdir)
            server.start()
            stack.callback(server.stop)
            redis_url = server.url
            assert server.pid is not None
            helpers["redis-server"] = server.pid
        else:
            stack.push_async_callback(asyncio.to_thread, _delete_keys, redis_url, prefix)
        mongo_url = mongo_url or os.environ.get(MONGODB_URL_ENV)
        if mongo_url is None:
            nx = await asyncio.to_thread(start_nx_27017, workdir / "mongo")
            stack.callback(nx.stop)
            mongo_url = nx.url
            helpers["nx-27017"] = nx.process.pid
        else:
            stack.push_async_callback(asyncio.to_thread, _drop_database, mongo_url, database)
        template = InstanceTemplate(
            workdir=workdir,
            store_url=with_database(mongo_url, database),
            coordination_url=redis_url,
            key_prefix=prefix,
            max_jobs=max_jobs,
            log_level=log_level,
            profile_dir=profile_dir,
        )
        processes = [
            template.instance(n, schedulers[n] if n < len(schedulers) else "")
            for n in range(instances)
        ]
        # The list itself: instances added later are stopped too.
        stack.push_async_callback(_stop_all, processes)
        if first_leads:
            await processes[0].start()
        await asyncio.gather(*(p.start() for p in processes[1 if first_leads else 0 :]))
        yield Deployment(processes, helpers, template=template)


def metrics_change(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What the counters added from one reading to the other; the gauge of
    pending results as it stands at the second."""
    return {
        name: after[name] if name == "cronsvc_results_pending" else after[name] - value
        for name, value in before.items()
    }


def _delete_keys(url: str, prefix: str) -> None:
    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)


def _drop_database(url: str, database: str) -> None:
    client: MongoClient[dict[str, object]] = MongoClient(url, serverSelectionTimeoutMS=5000)
    with client:
        client.drop_database(database)
