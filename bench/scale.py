"""cronsvc with 100k or 1M jobs in its store: start-up, memory, API latency
and scheduler CPU per fire, as the number of jobs grows.

For each N of `--jobs`: seed N jobs straight into a new SQLite store file
(most daily, `M H * * *` round-robin over `--daily-times` minutes spread
over the day; `--hot` of them, spread among the others, every second or once
a minute),
start `cronsvc serve` on it, and measure:

- the time from spawning the process to its first HTTP answer (listening),
  to `/readyz` 200 (serving: the scheduler has loaded every job) and to the
  first arrival of a hot job's webhook;
- a window of `--window` seconds of ticks: fires against expected, lag,
  the service's CPU per fire (over the whole window, and in its median
  second, which leaves out the full resync of the store that falls every
  `scheduler.resync_interval_s`, 30 s by default);
- API latency p50/p99 of create, get (a random seeded job) and list (first
  page of 50), `--api-requests` of each, one at a time, interleaved, while
  the scheduler runs;
- the process's peak RSS.

Seeding uses cronsvc's own store: `SQLiteStore.seed_jobs` writes the jobs
in batches, each in one transaction: one `create_job` transaction per job
would take minutes for a million. Just
before the service starts, every job's `last_tick` is set to now, as if it
had been running until then: no catch-up of the seeding time skews start-up.
The store lives in a temporary directory, removed at the end.

    python -m bench.scale --jobs 10000,100000 --hot 1000
    python -m bench.scale --jobs 1000000 --hot 1000 --hot-shape per-minute

With `--instances K` (or `K1,K2,...`), a cluster instead: the N jobs are
seeded into one MongoDB database (an nx-27017 started here, or a new
database on the server `CRONSVC_TEST_MONGODB_URL` names, dropped after)
through `MongoStore.seed_jobs`, a `redis-server` is started, and for each K
in turn every job's `last_tick` is set to now (and the previous run's
execution records dropped), K instances of `cronsvc serve` are spawned at
once on a key prefix of their own, and for each instance:

- the time from its spawning to having loaded every job (`/readyz`'s
  scheduler check "ok"), its RSS and `cronsvc_active_jobs` (the jobs on its
  heap) then, and the time to `/readyz` 200 (serving: the store answered
  its ping too, which a store saturated by the fire load may not do);
- over a window of `--window` seconds of ticks, its largest RSS (sampled
  every `RSS_SAMPLE_S`), its peak RSS since it started (`VmHWM`) and its
  active jobs at the end;

and for the run as a whole the fires expected in the window against those
received, lag, and the cronsvc counters that grow when it falls behind
(results still pending at the end, MISSED records). The K=1 run gives the
figure each instance of the others is compared with. API latency is not
measured in this mode. Everything is stopped by its own process handle.

    python -m bench.scale --instances 1,3 --jobs 300000 --hot 300000 --hot-shape per-minute
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from pymongo import MongoClient

from bench import deploy
from bench.deploy import Deployment, config_text, metrics_change
from bench.figures import DAY_S, SHAPES, Cadence, percentile, shape_cadences
from bench.procstat import sample
from bench.receiver import SocketReceiver, receiving, run_event_loop
from bench.report import emit, environment, progress
from bench.window import measure_window
from cronsvc.domain import Job, JobSpec
from cronsvc.ids import new_id
from cronsvc.store.common import unix_ms
from cronsvc.store.mongo import MongoStore
from cronsvc.store.sqlite import SQLiteStore
from tests.fakes import free_port
from tests.fixtures_mongo import MONGODB_URL_ENV, start_nx_27017, with_database
from tests.fixtures_redis import RedisServer
from tests.processes import CronsvcProcess

MAX_JOBS = 2_000_000
MAX_INSTANCES = 8
SEED_BATCH = 20_000
POLL_S = 0.02
CLUSTER_POLL_S = 0.1
"""How often each instance's /readyz is asked while it loads: often enough
for the time to serving, seldom enough not to slow the loading."""
RSS_SAMPLE_S = 0.5
WINDOW_SLACK_S = 30
"""Beyond `--window`, the longest the RSS sampler runs (the window's lead-in
and drain, and metrics read while loaded)."""
RESTART_WITHIN_S = 600
NX_27017_OPTIONS = "connectTimeoutMS=120000&socketTimeoutMS=600000"
"""Client options in the store URL of a cluster on the nx-27017 started here.
It answers one request at a time: a page of 20,000 schedules read for one
instance keeps another's server monitor waiting past the default 5 s, which
then clears that client's pool and cancels its own page read, again and again
(three instances on 300,000 jobs never got past their first page)."""
ANSWER_WITHIN_S = 30
LOADED_GRACE_S = 60
"""The longest an instance's /readyz or /metrics may take to answer."""
API_WITHIN_S = 300


@dataclass(frozen=True, slots=True, kw_only=True)
class Population:
    jobs: int
    hot: int
    hot_shape: str = "every-second"
    daily_times: int = 1440
    """Distinct times of day among the daily jobs (distinct cron expressions)."""

    def daily(self, n: int) -> Cadence:
        minute = (n % self.daily_times) * 1440 // self.daily_times
        return Cadence(DAY_S, minute * 60)


class _Seedable(Protocol):
    async def seed_jobs(self, jobs: Sequence[Job]) -> None: ...


async def seed(
    path: Path, population: Population, webhook_url: str, *, within_s: float
) -> dict[str, Cadence]:
    """Create the SQLite store at `path` holding the jobs of `population`;
    answers every job's id and cadence."""
    store = await SQLiteStore.open(path)
    try:
        return await _seed_into(store, population, webhook_url, within_s=within_s)
    finally:
        await store.aclose()


async def seed_mongo(
    url: str, population: Population, webhook_url: str, *, within_s: float
) -> dict[str, Cadence]:
    """The jobs of `population` added to the MongoDB database at `url`;
    answers every job's id and cadence."""
    store = await MongoStore.open(url)
    try:
        return await _seed_into(store, population, webhook_url, within_s=within_s)
    finally:
        await store.aclose()


async def _seed_into(
    store: _Seedable, population: Population, webhook_url: str, *, within_s: float
) -> dict[str, Cadence]:
    deadline = time.monotonic() + within_s
    jobs = _population_jobs(population, webhook_url, datetime.now(UTC).replace(microsecond=0))
    cadences: dict[str, Cadence] = {}
    for start in range(0, population.jobs, SEED_BATCH):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"seeding stopped at {start} of {population.jobs} jobs: --seed-within-s"
            )
        # Made off the event loop, as the store writes them off it.
        batch = await asyncio.to_thread(list, itertools.islice(jobs, SEED_BATCH))
        await store.seed_jobs([job for job, _ in batch])
        cadences.update((job.id, cadence) for job, cadence in batch)
        progress(f"  seeded {start + len(batch)} of {population.jobs}")
    return cadences


def _population_jobs(
    population: Population, webhook_url: str, now: datetime
) -> Iterator[tuple[Job, Cadence]]:
    """Every job of `population`, with its cadence."""
    jobs, hot = population.jobs, population.hot
    hot_cadences = iter(shape_cadences(population.hot_shape, hot))
    stride = max(1, jobs // hot) if hot else jobs + 1
    for n in range(jobs):
        cadence = next(hot_cadences, None) if n % stride == 0 else None
        cadence = cadence or population.daily(n)
        job = Job(
            id=new_id(),
            spec=JobSpec(name=f"scale {n}", cron_expression=cadence.cron, webhook_url=webhook_url),
            created_at=now,
            updated_at=now,
            last_tick=now,
        )
        yield job, cadence


def _restart_schedules(path: Path) -> None:
    """Every job dealt with up to now, as if the service had just stopped."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("UPDATE jobs SET last_tick = ?", (unix_ms(datetime.now(UTC)),))
    finally:
        db.close()


async def scale_run(
    population: Population,
    *,
    window: int,
    api_requests: int,
    workdir: Path,
    seed_within_s: float = 900.0,
    ready_within_s: float = 600.0,
) -> dict[str, Any]:
    jobs = population.jobs
    result: dict[str, Any] = {
        "jobs": jobs,
        "hot": population.hot,
        "hot_shape": population.hot_shape,
        "daily_times": population.daily_times,
    }
    db = workdir / f"scale-{jobs}.db"
    async with receiving() as receiver:
        assert isinstance(receiver, SocketReceiver)
        progress(f"scale {jobs}: seeding")
        began = time.monotonic()
        cadences = await seed(db, population, receiver.url, within_s=seed_within_s)
        await asyncio.to_thread(_restart_schedules, db)
        result["seed_s"] = round(time.monotonic() - began, 1)
        result["store_mib"] = round(db.stat().st_size / 2**20)
        hot_ids = {job for job, c in cadences.items() if c.period_s != DAY_S}
        progress(f"scale {jobs}: seeded in {result['seed_s']} s; starting the service")
        spawned = time.time()
        async with (
            deploy.single(
                workdir,
                max_jobs=jobs + api_requests + 1,
                store_path=db,
                log_path=workdir / f"scale-{jobs}.log",
                wait=False,
            ) as service,
            aiohttp.ClientSession() as session,
        ):
            pid = service.pids()["cronsvc"]
            result |= await _start_up(
                session, service.urls[0], receiver, hot_ids, spawned, ready_within_s
            )
            memory = sample(pid)
            result["rss_mib_serving"] = memory and round(memory.rss_mib)
            progress(f"scale {jobs}: serving after {result['serving_s']} s; {window} s window")
            before = await service.metrics(session)
            result["window"] = await measure_window(
                receiver.arrivals, cadences, {"cronsvc": pid}, seconds=window
            )
            after = await service.metrics(session)
            result["window"]["service_metrics"] = metrics_change(before, after)
            progress(f"scale {jobs}: API latency, {api_requests} of each")
            result["api_ms"] = await _api_latency(
                session, service.urls[0], list(cadences), receiver.url, api_requests
            )
            memory = sample(pid)
            result["peak_rss_mib"] = memory and round(memory.peak_rss_mib)
    return result


async def _start_up(
    session: aiohttp.ClientSession,
    base: str,
    receiver: SocketReceiver,
    hot_ids: set[str],
    spawned: float,
    within_s: float,
) -> dict[str, Any]:
    """Seconds from spawning to listening, serving and the first hot fire."""
    listening = serving = None
    async with asyncio.timeout(within_s):
        while serving is None:
            try:
                async with session.get(f"{base}/readyz") as response:
                    listening = listening or time.time() - spawned
                    if response.status == 200:
                        serving = time.time() - spawned
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(POLL_S)
        seen = 0
        while True:
            arrivals = receiver.arrivals
            hot = [a.arrived for a in arrivals[seen:] if a.job_id in hot_ids]
            if hot or not hot_ids:
                break
            seen = len(arrivals)
            await asyncio.sleep(POLL_S)
    return {
        "listening_s": round(listening or serving, 2),
        "serving_s": round(serving, 2),
        "first_hot_fire_s": round(min(hot) - spawned, 2) if hot else None,
    }


async def _api_latency(
    session: aiohttp.ClientSession, base: str, job_ids: list[str], webhook_url: str, count: int
) -> dict[str, Any]:
    """Milliseconds of create, get and list, `count` each, one request at a
    time, for at most `API_WITHIN_S` (then what was measured, with its count)."""
    timings: dict[str, list[float]] = {"create": [], "get": [], "list": []}
    try:
        async with asyncio.timeout(API_WITHIN_S):
            await _api_requests(session, base, job_ids, webhook_url, count, timings)
    except TimeoutError:
        progress(f"  API requests stopped after {API_WITHIN_S} s")
    return {
        name: {
            "count": len(values),
            "p50": round(statistics.median(values), 1) if values else None,
            "p99": round(percentile(values, 0.99), 1) if values else None,
            "max": round(max(values), 1) if values else None,
        }
        for name, values in timings.items()
    }


async def _api_requests(
    session: aiohttp.ClientSession,
    base: str,
    job_ids: list[str],
    webhook_url: str,
    count: int,
    timings: dict[str, list[float]],
) -> None:
    chooser = random.Random(0)
    marker = new_id()
    for n in range(count):
        document = {
            "name": f"api {marker} {n}",
            "cronExpression": Cadence(DAY_S, (n % 1440) * 60).cron,
            "webhookUrl": webhook_url,
        }
        requests = (
            ("create", "POST", f"{base}/api/cron", document, 201),
            ("get", "GET", f"{base}/api/cron/{chooser.choice(job_ids)}", None, 200),
            ("list", "GET", f"{base}/api/cron?limit=50", None, 200),
        )
        for name, method, url, body, status in requests:
            began = time.perf_counter()
            async with session.request(method, url, json=body) as response:
                await response.read()
            timings[name].append((time.perf_counter() - began) * 1000)
            if response.status != status:
                raise RuntimeError(f"{name}: {response.status} {await response.text()}")


def compare(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per N: how the costs grow from the smallest N."""
    base = runs[0]["window"]["cpu"]
    lines = []
    for run in runs:
        cpu = run["window"]["cpu"]
        lines.append(
            {
                "jobs": run["jobs"],
                "serving_s": run["serving_s"],
                "first_hot_fire_s": run["first_hot_fire_s"],
                "peak_rss_mib": run["peak_rss_mib"],
                "us_per_fire": cpu["service_us_per_fire"],
                "us_per_fire_median_second": cpu["service_us_per_fire_median_second"],
                "us_per_fire_vs_first": _ratio(
                    cpu["service_us_per_fire"], base["service_us_per_fire"]
                ),
                "create_ms_p50_p99": _pair(run["api_ms"]["create"]),
                "get_ms_p50_p99": _pair(run["api_ms"]["get"]),
                "list_ms_p50_p99": _pair(run["api_ms"]["list"]),
            }
        )
    return lines


def _ratio(value: float | None, base: float | None) -> float | None:
    return round(value / base, 2) if value and base else None


def _pair(figures: dict[str, float]) -> str:
    return f"{figures['p50']} / {figures['p99']}"


# A cluster on MongoDB and Redis: the memory of each instance


def _restart_mongo_schedules(url: str) -> None:
    """Every job dealt with up to now, and no execution record left from an
    earlier run, as if the cluster had just stopped."""
    client: MongoClient[dict[str, Any]] = MongoClient(
        url, serverSelectionTimeoutMS=5000, socketTimeoutMS=RESTART_WITHIN_S * 1000
    )
    with client:
        database = client.get_default_database()
        database["jobs"].update_many({}, {"$set": {"last_tick": unix_ms(datetime.now(UTC))}})
        database["executions"].drop()


def _drop_mongo_database(url: str) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(
        url, serverSelectionTimeoutMS=5000, socketTimeoutMS=RESTART_WITHIN_S * 1000
    )
    with client:
        client.drop_database(client.get_default_database())


async def cluster_scale_run(
    population: Population,
    *,
    instances: Sequence[int],
    window: int,
    workdir: Path,
    seed_within_s: float = 900.0,
    ready_within_s: float = 600.0,
    one_by_one: bool = False,
) -> dict[str, Any]:
    """Seed `population` into one MongoDB database, then for each K of
    `instances` in turn: K `cronsvc serve` on it and a Redis (spawned at
    once, or with `one_by_one` each once the one before serves), each one's
    start-up and memory, and `window` seconds of ticks across them."""
    jobs = population.jobs
    result: dict[str, Any] = {
        "jobs": jobs,
        "hot": population.hot,
        "hot_shape": population.hot_shape,
        "daily_times": population.daily_times,
    }
    async with AsyncExitStack() as stack:
        receiver = await stack.enter_async_context(receiving())
        assert isinstance(receiver, SocketReceiver)
        helpers: dict[str, int] = {}
        database = f"scale{uuid.uuid4().hex[:8]}"
        mongo_url = os.environ.get(MONGODB_URL_ENV)
        if mongo_url is None:
            nx = await asyncio.to_thread(start_nx_27017, workdir / f"mongo-{jobs}")
            stack.callback(nx.stop)  # its files go with the work directory
            store_url = with_database(f"{nx.url}/?{NX_27017_OPTIONS}", database)
            helpers["nx-27017"] = nx.process.pid
        else:
            store_url = with_database(mongo_url, database)
            stack.push_async_callback(asyncio.to_thread, _drop_mongo_database, store_url)
        redis = RedisServer(workdir)
        redis.start()
        stack.callback(redis.stop)
        assert redis.pid is not None
        helpers["redis-server"] = redis.pid
        result["mongodb"] = "nx-27017" if "nx-27017" in helpers else MONGODB_URL_ENV

        progress(f"scale {jobs}: seeding MongoDB")
        began = time.monotonic()
        cadences = await seed_mongo(store_url, population, receiver.url, within_s=seed_within_s)
        result["seed_s"] = round(time.monotonic() - began, 1)
        progress(f"scale {jobs}: seeded in {result['seed_s']} s")
        runs = []
        for k in instances:
            began = time.monotonic()
            async with asyncio.timeout(RESTART_WITHIN_S):
                await asyncio.to_thread(_restart_mongo_schedules, store_url)
            restart_s = round(time.monotonic() - began, 1)
            receiver.arrivals.clear()
            progress(f"scale {jobs}, {k} instance(s): last ticks set in {restart_s} s; starting")
            try:
                run = await _cluster_window(
                    k,
                    jobs=jobs,
                    cadences=cadences,
                    receiver=receiver,
                    store_url=store_url,
                    redis_url=redis.url,
                    helpers=helpers,
                    workdir=workdir,
                    window=window,
                    ready_within_s=ready_within_s,
                    one_by_one=one_by_one,
                )
            except (RuntimeError, OSError, aiohttp.ClientError) as e:
                # The other runs' figures still stand: this one is told as failed.
                progress(f"  {k} instance(s) failed: {e}")
                run = {"error": str(e)}
            run_s = round(time.monotonic() - began, 1)
            runs.append({"instances": k, "restart_schedules_s": restart_s, "run_s": run_s, **run})
        result["runs"] = runs
    return result


async def _cluster_window(
    k: int,
    *,
    jobs: int,
    cadences: dict[str, Cadence],
    receiver: SocketReceiver,
    store_url: str,
    redis_url: str,
    helpers: dict[str, int],
    workdir: Path,
    window: int,
    ready_within_s: float,
    one_by_one: bool,
) -> dict[str, Any]:
    prefix = f"scale{uuid.uuid4().hex[:8]}"
    processes = []
    for n in range(k):
        port = free_port()
        config = workdir / f"cronsvc-{k}-{n}.toml"
        config.write_text(
            config_text(
                port,
                store_url,
                max_jobs=jobs + 1,
                coordination_url=redis_url,
                key_prefix=prefix,
            )
        )
        log_path = workdir / f"cronsvc-{k}-{n}.log"
        processes.append(CronsvcProcess(config_path=config, port=port, log_path=log_path))
    async with AsyncExitStack() as stack:
        stack.push_async_callback(_stop_all, processes)
        session = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ANSWER_WITHIN_S))
        )
        if one_by_one:
            started = []
            for process in processes:
                await process.start(wait=False)
                started.append(await _instance_serving(session, process, ready_within_s))
        else:
            for process in processes:
                await process.start(wait=False)
            started = await asyncio.gather(
                *(_instance_serving(session, process, ready_within_s) for process in processes)
            )
        pids = {f"cronsvc-{n}": p.process.pid for n, p in enumerate(processes) if p.process}
        progress(
            "  loaded / serving after "
            + ", ".join(f"{s['loaded_s']} / {s['serving_s']}" for s in started)
            + f" s; {window} s window"
        )
        deployment = Deployment(processes, helpers)
        before = await deployment.metrics(session)
        done = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            maxima = group.create_task(_rss_maxima(pids, done, within_s=window + WINDOW_SLACK_S))
            try:
                figures = await measure_window(
                    receiver.arrivals, cadences, pids | helpers, seconds=window
                )
            finally:
                done.set()
        after = await deployment.metrics(session)
        figures["service_metrics"] = metrics_change(before, after)
        ends = await asyncio.gather(*(_active_jobs(session, p.url) for p in processes))
        per_instance = []
        for n, (start, rss_max, end) in enumerate(zip(started, maxima.result(), ends, strict=True)):
            memory = sample(pids[f"cronsvc-{n}"])
            per_instance.append(
                {
                    **start,
                    "rss_mib_window_max": rss_max,
                    "peak_rss_mib": memory and round(memory.peak_rss_mib),
                    "active_jobs_end": end,
                }
            )
    return {"per_instance": per_instance, "window": figures}


async def _instance_serving(
    session: aiohttp.ClientSession, process: CronsvcProcess, within_s: float
) -> dict[str, Any]:
    """Seconds from spawning `process` (just now) to its scheduler's having
    loaded every job (/readyz's `scheduler` check "ok"), its RSS and active
    jobs then, and to /readyz 200 (serving). Waits for 200 `LOADED_GRACE_S`
    past the load at most (a store too busy to answer its ping in time keeps
    it 503), and for either `within_s` at most (then None, and RSS and jobs
    as they are)."""
    spawned = time.time()
    loaded = serving = None
    at_load: dict[str, Any] = {}
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within_s):
            while serving is None:
                assert process.process is not None
                if process.process.returncode is not None:
                    raise RuntimeError(f"cronsvc exited: {process.log_tail()}")
                try:
                    async with session.get(f"{process.url}/readyz") as response:
                        body = await response.json(content_type=None)
                        if response.status == 200:
                            serving = time.time() - spawned
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    body = {}
                if loaded is None and (serving or body.get("checks", {}).get("scheduler") == "ok"):
                    loaded = serving or time.time() - spawned
                    at_load = await _load_figures(session, process)
                if serving is None and loaded and time.time() - spawned > loaded + LOADED_GRACE_S:
                    break
                await asyncio.sleep(CLUSTER_POLL_S)
    return {
        "loaded_s": None if loaded is None else round(loaded, 2),
        "serving_s": None if serving is None else round(serving, 2),
        **(at_load or await _load_figures(session, process)),
    }


async def _load_figures(session: aiohttp.ClientSession, process: CronsvcProcess) -> dict[str, Any]:
    assert process.process is not None
    memory = sample(process.process.pid)
    return {
        "rss_mib_loaded": memory and round(memory.rss_mib),
        "active_jobs_loaded": await _active_jobs(session, process.url),
    }


async def _active_jobs(session: aiohttp.ClientSession, base: str) -> int | None:
    """`cronsvc_active_jobs` of the instance at `base`: the jobs on its heap
    (None if it does not answer within `ANSWER_WITHIN_S`)."""
    try:
        async with session.get(f"{base}/metrics") as response:
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    for line in text.splitlines():
        series, _, value = line.partition(" ")
        if series == "cronsvc_active_jobs":
            return round(float(value))
    return None


async def _rss_maxima(
    pids: dict[str, int], done: asyncio.Event, *, within_s: float
) -> list[int | None]:
    """The largest resident set of each process (in `pids` order, MiB),
    sampled every `RSS_SAMPLE_S` until `done` is set, for at most `within_s`."""
    maxima: dict[str, float] = {}
    for _ in range(math.ceil(within_s / RSS_SAMPLE_S)):
        for name, pid in pids.items():
            now = sample(pid)
            if now is not None:
                maxima[name] = max(maxima.get(name, 0.0), now.rss_mib)
        if done.is_set():
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), RSS_SAMPLE_S)
    return [round(maxima[name]) if name in maxima else None for name in pids]


async def _stop_all(processes: list[CronsvcProcess]) -> None:
    """Each process started, stopped by its own handle (SIGTERM, then SIGKILL)."""
    started = [p for p in processes if p.process is not None]
    await asyncio.gather(*(p.stop() for p in started), return_exceptions=True)


def cluster_table(result: dict[str, Any]) -> list[str]:
    """Markdown lines: one row per instance of each run, then the fire load of each run."""
    lines = [
        "| instances | instance | loaded / serving s | RSS MiB when loaded | RSS MiB max in window "
        "| peak RSS MiB since start | active jobs when loaded / at end | RSS vs one instance |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    runs = [run for run in result["runs"] if "error" not in run]
    alone = next((r for r in runs if r["instances"] == 1), None)
    base = alone and alone["per_instance"][0]["rss_mib_loaded"]
    for run in runs:
        for n, i in enumerate(run["per_instance"]):
            ratio = _ratio(i["rss_mib_loaded"], base) if base else None
            lines.append(
                f"| {run['instances']} | {n} | {i['loaded_s']} / {i['serving_s']} "
                f"| {i['rss_mib_loaded']} "
                f"| {i['rss_mib_window_max']} | {i['peak_rss_mib']} "
                f"| {i['active_jobs_loaded']} / {i['active_jobs_end']} | {ratio} |"
            )
    lines += [
        "",
        "| instances | window s | fires expected | received | missed | duplicates "
        "| lag p50 / p99 ms | results pending at end | helpers RSS MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in runs:
        w = run["window"]
        helpers = ", ".join(
            f"{name} {p['rss_mib']}"
            for name, p in w["processes"].items()
            if p and not name.startswith("cronsvc")
        )
        lines.append(
            f"| {run['instances']} | {w['window_s']} | {w['expected_fires']} | {w['fires']} "
            f"| {w['missed']} | {w['duplicates']} | {w['lag_ms_p50']} / {w['lag_ms_p99']} "
            f"| {w['service_metrics'].get('cronsvc_results_pending')} | {helpers} |"
        )
    return lines


async def main_async(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    if args.instances:
        return {"clusters": await _clusters(args, workdir)}
    runs = []
    for jobs in args.jobs:
        population = Population(
            jobs=jobs, hot=args.hot, hot_shape=args.hot_shape, daily_times=args.daily_times
        )
        run = await scale_run(
            population,
            window=args.window,
            api_requests=args.api_requests,
            workdir=workdir,
            seed_within_s=args.seed_within_s,
            ready_within_s=args.ready_within_s,
        )
        (workdir / f"scale-{jobs}.db").unlink()
        runs.append(run)
    return {"comparison": compare(runs), "runs": runs}


async def _clusters(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    results = []
    for jobs in args.jobs:
        population = Population(
            jobs=jobs, hot=args.hot, hot_shape=args.hot_shape, daily_times=args.daily_times
        )
        began = time.monotonic()
        result = await cluster_scale_run(
            population,
            instances=args.instances,
            window=args.window,
            workdir=workdir,
            seed_within_s=args.seed_within_s,
            ready_within_s=args.ready_within_s,
            one_by_one=args.start == "one-by-one",
        )
        result["total_s"] = round(time.monotonic() - began, 1)
        results.append(result)
    return results


def _instance_counts(text: str) -> list[int]:
    counts = [int(n) for n in text.split(",")]
    if not all(1 <= n <= MAX_INSTANCES for n in counts):
        raise argparse.ArgumentTypeError(f"each from 1 to {MAX_INSTANCES}")
    return counts


def _job_counts(text: str) -> list[int]:
    counts = [int(n) for n in text.split(",")]
    if not all(1 <= n <= MAX_JOBS for n in counts):
        raise argparse.ArgumentTypeError(f"each from 1 to {MAX_JOBS}")
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--jobs", type=_job_counts, default=[10_000, 100_000], help="N, or N1,N2,... in turn"
    )
    parser.add_argument("--hot", type=int, default=1000, help="jobs firing often, among the N")
    parser.add_argument("--hot-shape", choices=SHAPES, default="every-second")
    parser.add_argument(
        "--daily-times", type=int, default=1440, help="distinct times of day of the daily jobs"
    )
    parser.add_argument(
        "--instances",
        type=_instance_counts,
        help="K, or K1,K2,... in turn: a cluster on MongoDB and Redis, not one SQLite process",
    )
    parser.add_argument(
        "--start",
        choices=("together", "one-by-one"),
        default="together",
        help="with --instances: spawn all at once, or each once the one before serves",
    )
    parser.add_argument("--window", type=int, default=30, help="seconds of ticks to count")
    parser.add_argument("--api-requests", type=int, default=200, help="of each kind")
    parser.add_argument("--seed-within-s", type=float, default=900.0)
    parser.add_argument("--ready-within-s", type=float, default=600.0)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    if not 0 <= args.hot <= min(args.jobs) or not 1 <= args.window <= 600:
        parser.error("--hot at most the smallest --jobs, --window 1..600")
    if not 1 <= args.api_requests <= 2000 or not 1 <= args.daily_times <= 1440:
        parser.error("--api-requests 1..2000, --daily-times 1..1440")
    env = environment()
    with tempfile.TemporaryDirectory(prefix="cronsvc-scale-") as tmp:
        result = run_event_loop(lambda: main_async(args, Path(tmp)))
    emit({"environment": env, **result}, args.json)
    for cluster in result.get("clusters", []):
        progress(
            f"{cluster['jobs']} jobs ({cluster['hot']} {cluster['hot_shape']}): seeded in "
            f"{cluster['seed_s']} s, {cluster['total_s']} s in all"
        )
        for line in cluster_table(cluster):
            progress(line)
    for line in result.get("comparison", []):
        progress(" | ".join(f"{k} {v}" for k, v in line.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
