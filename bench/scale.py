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
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench import deploy
from bench.deploy import metrics_change
from bench.figures import DAY_S, SHAPES, Cadence, percentile, shape_cadences
from bench.procstat import sample
from bench.receiver import SocketReceiver, receiving, run_event_loop
from bench.report import emit, environment, progress
from bench.window import measure_window
from cronsvc.domain import Job, JobSpec
from cronsvc.ids import new_id
from cronsvc.store.common import unix_ms
from cronsvc.store.sqlite import SQLiteStore

MAX_JOBS = 2_000_000
SEED_BATCH = 20_000
POLL_S = 0.02
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


async def seed(
    path: Path, population: Population, webhook_url: str, *, within_s: float
) -> dict[str, Cadence]:
    """Create the store at `path` holding the jobs of `population`;
    answers every job's id and cadence."""
    deadline = time.monotonic() + within_s
    jobs = _population_jobs(population, webhook_url, datetime.now(UTC).replace(microsecond=0))
    cadences: dict[str, Cadence] = {}
    store = await SQLiteStore.open(path)
    try:
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
    finally:
        await store.aclose()
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


async def main_async(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
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
    for line in result["comparison"]:
        progress(" | ".join(f"{k} {v}" for k, v in line.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
