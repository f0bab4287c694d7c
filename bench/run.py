"""Fire rate and lag of cronsvc as real processes, next to this machine's ceiling.

One run: start cronsvc (`--mode single`: one process on the embedded default;
`cluster`: three on Redis and an nx-27017 MongoDB wire server), create N jobs
through the API (`--shape every-second`: `* * * * * *`, all N due on the
same instant; `per-minute`: `S * * * * *` at seconds spread over the minute,
N/60 due each second), count D seconds of ticks at a socket-stamping
receiver on 127.0.0.1, and report: fires/s achieved against expected, fire
lag (arrival minus tick) p50/p90/p99/max, the first and the last arrival of
each tick's burst (p50/p99), duplicates, missed ticks, and each process's
CPU seconds and peak RSS. Then the same receiver is driven by a bare aiohttp
client with the dispatcher's pool size: once on the jobs' schedule (the lag
of a perfect scheduler) and once flat out (the most fires/s it reaches).

`--saturate`: one service, jobs added step by step (N, N*factor, ...) with a
window of D seconds after each step, until a tick is missed, one fires
twice, lag p99 passes `--p99-bound-ms` or the service drops execution
results it cannot write; reports the highest N with every tick fired once
and in bound, next to the flat-out ceiling. Each step also tells how fast
jobs could be created while the others fired.

    python -m bench.run --mode single --shape every-second --jobs 100 --seconds 30
    python -m bench.run --mode cluster --jobs 200 --seconds 60
    python -m bench.run --saturate --jobs 250 --max-jobs 8000 --seconds 10

`--pin` (single runs): the receiver and the service on different CPUs.
`--instances N` (cluster runs, default 3): with 1, the cost of Redis and
MongoDB per fire without the race for leases.
`--profile DIR` (cluster runs): each instance under cProfile, which sees
only the event loop's thread (all of a cluster instance's work; a single
process's SQLite store works in a thread of its own, hence cluster only).

Every step is bounded in jobs and time; everything listens on loopback.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiohttp

from bench import deploy
from bench.ceiling import bare_schedule, bare_throughput
from bench.deploy import Deployment, metrics_change
from bench.figures import SHAPES, Cadence, correct, shape_cadences, summarise
from bench.pinning import pin_apart
from bench.receiver import receiving, run_event_loop
from bench.report import emit, environment, progress
from bench.window import measure_window

MAX_JOBS = 20000
MAX_SECONDS = 600
DISPATCH_POOL = 1024
"""The dispatcher's connection pool by default (`webhook.max_concurrency`)."""
CEILING_MAX_S = 15
SETTLE_S = 5
"""Saturation: seconds between adding jobs and counting ticks, for the
service to finish reloading the jobs just created."""
THROUGHPUT_S = 3.0
MODES = ("single", "cluster")


def deployment(
    mode: str,
    workdir: Path,
    *,
    max_jobs: int,
    service_log: Path | None = None,
    redis_url: str | None = None,
    mongo_url: str | None = None,
    instances: int = 3,
    profile_dir: Path | None = None,
) -> AbstractAsyncContextManager[Deployment]:
    if mode == "single":
        return deploy.single(
            workdir,
            max_jobs=max_jobs,
            log_level="debug" if service_log else "warning",
            log_path=service_log,
        )
    return deploy.cluster(
        workdir,
        max_jobs=max_jobs,
        instances=instances,
        redis_url=redis_url,
        mongo_url=mongo_url,
        profile_dir=profile_dir,
    )


async def run_once(
    *,
    mode: str,
    shape: str,
    jobs: int,
    seconds: int,
    workdir: Path,
    ceiling: bool = True,
    flat_out_s: float = THROUGHPUT_S,
    receiver_kind: str = "socket",
    service_log: Path | None = None,
    redis_url: str | None = None,
    mongo_url: str | None = None,
    pin: bool = False,
    instances: int = 3,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """One run of cronsvc, then (with `ceiling`) of the bare client; `pin`:
    the receiver and the service on different CPUs (`bench.pinning`);
    `instances`: how many processes a cluster has."""
    result: dict[str, Any] = {
        "mode": mode,
        "shape": shape,
        "jobs": jobs,
        "seconds": seconds,
    }
    if mode == "cluster":
        result["instances"] = instances
    cadences = shape_cadences(shape, jobs, start_s=int(time.time()))
    async with (
        receiving(receiver_kind) as receiver,
        deployment(
            mode,
            workdir,
            max_jobs=jobs,
            service_log=service_log,
            redis_url=redis_url,
            mongo_url=mongo_url,
            instances=instances,
            profile_dir=profile_dir,
        ) as service,
        aiohttp.ClientSession() as session,
    ):
        if pin:
            mine, theirs = pin_apart(service.pids().values())
            result["pinned"] = {"receiver_cpus": sorted(mine), "service_cpus": sorted(theirs)}
        progress(f"{mode}: creating {jobs} {shape} jobs")
        created = await service.create_jobs(session, cadences, receiver.url, name_prefix="bench")
        progress(f"{mode}: counting {seconds} s of ticks")
        trips_before = await service.round_trips(session)
        result["cronsvc"] = await measure_window(
            receiver.arrivals, created, service.pids(), seconds=seconds
        )
        trips = await service.round_trips(session) - trips_before
        fires = result["cronsvc"].get("fires") or 0
        result["cronsvc"]["coordinator_round_trips"] = trips
        result["cronsvc"]["coordinator_round_trips_per_fire"] = (
            round(trips / fires, 4) if fires else None
        )
        result["cronsvc"]["service_metrics"] = await service.metrics(session)
        result["cronsvc"]["create_retries"] = service.create_retries
        if mode == "cluster":
            result["cronsvc"]["fires_by_instance_sample"] = await _spread(session, service.urls[0])
    if ceiling:
        pool = DISPATCH_POOL * (3 if mode == "cluster" else 1)
        result["bare_client"] = await run_ceiling(
            cadences, min(seconds, CEILING_MAX_S), pool, flat_out_s
        )
    return result


async def run_ceiling(
    cadences: list[Cadence], seconds: int, pool: int, flat_out_s: float = THROUGHPUT_S
) -> dict[str, Any]:
    """The bare client on the jobs' schedule, then flat out, each against a
    receiver of its own."""
    progress(f"bare client: {seconds} s on the same schedule, then {flat_out_s:g} s flat out")
    jobs = {f"bare {n}": c for n, c in enumerate(cadences)}
    async with receiving() as receiver:
        first = int(time.time()) + 2
        last = first + seconds - 1
        await bare_schedule(receiver.url, jobs, first, last, concurrency=pool)
        figures = summarise(receiver.arrivals, jobs, first, last)
    async with receiving() as receiver:
        figures["flat_out"] = await bare_throughput(
            receiver.url, concurrency=pool, seconds=flat_out_s
        )
    return figures


async def saturate(
    *,
    mode: str,
    shape: str,
    start: int,
    factor: float,
    max_jobs: int,
    seconds: int,
    p99_bound_ms: float,
    budget_s: float,
    workdir: Path,
) -> dict[str, Any]:
    """Add jobs step by step to one service until it falls behind."""
    steps: list[dict[str, Any]] = []
    deadline = time.monotonic() + budget_s
    drain_s = max(2.0, p99_bound_ms / 1000 + 1)
    verdict = f"reached --max-jobs {max_jobs} in bound"
    async with (
        receiving() as receiver,
        deployment(mode, workdir, max_jobs=max_jobs) as service,
        aiohttp.ClientSession() as session,
    ):
        created: dict[str, Cadence] = {}
        target = start
        while target <= max_jobs:
            if time.monotonic() > deadline:
                verdict = f"stopped by --budget-s {budget_s:g}"
                break
            added = shape_cadences(shape, target - len(created), start_s=len(created))
            progress(f"saturate: {target} jobs (+{len(added)})")
            began = time.monotonic()
            try:
                created |= await service.create_jobs(
                    session,
                    added,
                    receiver.url,
                    name_prefix=f"sat{target}",
                    within_s=max(1.0, deadline - time.monotonic()),
                )
            except TimeoutError:
                verdict = f"creating {target} jobs outlasted --budget-s {budget_s:g}"
                break
            create_s = time.monotonic() - began
            before = await service.metrics(session)
            step = await measure_window(
                receiver.arrivals,
                created,
                service.pids(),
                seconds=seconds,
                lead_s=SETTLE_S,
                drain_s=drain_s,
            )
            after = await service.metrics(session)
            step["service_metrics"] = metrics_change(before, after)
            steps.append({"jobs": target, "created_per_s": round(len(added) / create_s, 1), **step})
            progress(
                f"  fires/s {step['fires_per_s']} of {step['expected_per_s']}, "
                f"missed {step['missed']}, dup {step['duplicates']}, p99 {step['lag_ms_p99']} ms, "
                f"service: {step['service_metrics']}"
            )
            if not correct(step):
                verdict = f"fell behind at {target} jobs: missed or duplicate ticks"
                break
            if step["service_metrics"]["cronsvc_log_writes_dropped_total"]:
                verdict = f"fell behind at {target} jobs: execution results dropped"
                break
            if (step["lag_ms_p99"] or 0) > p99_bound_ms:
                verdict = f"fell behind at {target} jobs: lag p99 over {p99_bound_ms:g} ms"
                break
            target = max(target + 1, int(target * factor))
    good = [
        s
        for s in steps
        if correct(s)
        and (s["lag_ms_p99"] or 0) <= p99_bound_ms
        and not s["service_metrics"]["cronsvc_log_writes_dropped_total"]
    ]
    best = good[-1] if good else None
    async with receiving() as receiver:
        pool = DISPATCH_POOL * (3 if mode == "cluster" else 1)
        flat_out = await bare_throughput(receiver.url, concurrency=pool, seconds=THROUGHPUT_S)
    return {
        "mode": mode,
        "shape": shape,
        "p99_bound_ms": p99_bound_ms,
        "verdict": verdict,
        "highest_jobs_in_bound": best and best["jobs"],
        "sustained_fires_per_s": best and best["fires_per_s"],
        "bare_client_flat_out": flat_out,
        "steps": steps,
    }


async def _spread(session: aiohttp.ClientSession, base: str) -> dict[str, int]:
    """Which instance fired the last 500 executions."""
    url = f"{base}/api/execution-logs?limit=500&status=SUCCESS"
    async with session.get(url) as response:
        logs = await response.json()
    return dict(Counter(e["instanceId"] for e in logs))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=MODES, default="single")
    parser.add_argument("--shape", choices=SHAPES, default="every-second")
    parser.add_argument(
        "--jobs", type=int, default=100, help="jobs (with --saturate: the first step)"
    )
    parser.add_argument("--seconds", type=int, default=30, help="ticks counted (per step)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the bare-client runs")
    parser.add_argument(
        "--receiver",
        choices=("socket", "aiohttp"),
        default="socket",
        help="stamp arrival at the socket (default) or at an aiohttp handler",
    )
    parser.add_argument("--service-log", type=Path, help="single: keep the debug log here")
    parser.add_argument(
        "--instances",
        type=int,
        default=3,
        help="cluster: how many instances share Redis and MongoDB (1..5; 1 measures the "
        "shared backends' cost without the race)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="cluster: run each instance under cProfile, its profile written to "
        "DIR/cronsvc-N.prof when stopped (CPU figures then include the profiler)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="single: the receiver on the last CPU, the service on the others",
    )
    saturation = parser.add_argument_group("saturation")
    saturation.add_argument("--saturate", action="store_true")
    saturation.add_argument("--max-jobs", type=int, default=8000)
    saturation.add_argument("--factor", type=float, default=2.0)
    saturation.add_argument("--p99-bound-ms", type=float, default=1000.0)
    saturation.add_argument("--budget-s", type=float, default=900.0, help="for all the steps")
    args = parser.parse_args()
    top = args.max_jobs if args.saturate else args.jobs
    if not (1 <= args.jobs <= top <= MAX_JOBS and 1 <= args.seconds <= MAX_SECONDS):
        parser.error(f"--jobs (and --max-jobs) 1..{MAX_JOBS}, --seconds 1..{MAX_SECONDS}")
    if args.factor <= 1 or not 1 <= args.budget_s <= 3600:
        parser.error("--factor over 1, --budget-s 1..3600")
    if not 1 <= args.instances <= 5 or (args.instances != 3 and args.mode != "cluster"):
        parser.error("--instances: 1..5, cluster runs only")
    if args.profile and (args.mode != "cluster" or args.saturate):
        parser.error("--profile: cluster runs only")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    if args.pin and (args.mode != "single" or args.saturate):
        parser.error("--pin: single runs only (a cluster's five processes share the CPUs)")
    env = environment()
    with tempfile.TemporaryDirectory(prefix="cronsvc-bench-") as tmp:
        if args.saturate:
            result = run_event_loop(
                lambda: saturate(
                    mode=args.mode,
                    shape=args.shape,
                    start=args.jobs,
                    factor=args.factor,
                    max_jobs=args.max_jobs,
                    seconds=args.seconds,
                    p99_bound_ms=args.p99_bound_ms,
                    budget_s=args.budget_s,
                    workdir=Path(tmp),
                )
            )
            ok = result["highest_jobs_in_bound"] is not None
        else:
            result = run_event_loop(
                lambda: run_once(
                    mode=args.mode,
                    shape=args.shape,
                    jobs=args.jobs,
                    seconds=args.seconds,
                    workdir=Path(tmp),
                    ceiling=not args.no_ceiling,
                    receiver_kind=args.receiver,
                    service_log=args.service_log,
                    pin=args.pin,
                    instances=args.instances,
                    profile_dir=args.profile,
                )
            )
            ok = correct(result["cronsvc"])
    emit({"environment": env, **result}, args.json)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
