"""Fire lag of one cronsvc process on the embedded default.

Starts `cronsvc serve` (SQLite, local coordination) on a free loopback port
and a receiver on 127.0.0.1, creates N every-second jobs (6-field
`* * * * * *`, so all N are due on the same instant), runs for D seconds and
reports the fire lag (receiver arrival minus tick): p50/p90/p99/max over all
fires, and per burst the first and the last arrival. Then, for scale, the
same receiver is driven by a bare aiohttp client sending N requests at each
whole second: the ceiling this machine allows. Bounded in jobs and time;
loopback only.

    python -m bench.lag --jobs 100 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench.receiver import AiohttpReceiver, Arrival, SocketReceiver
from tests.processes import CronsvcProcess, free_port, write_config

MAX_JOBS = 5000
MAX_SECONDS = 600
Receiver = SocketReceiver | AiohttpReceiver


def _tick_ts(tick: str) -> float:
    return datetime.fromisoformat(tick.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarise(
    arrivals: list[Arrival], jobs: int, first_tick: int, last_tick: int
) -> dict[str, Any]:
    """Lag figures for ticks in [first_tick, last_tick] (whole Unix seconds)."""
    in_window = [a for a in arrivals if first_tick <= _tick_ts(a.tick) <= last_tick]
    counts = Counter((a.job_id, a.tick) for a in in_window)
    lags = [(a.arrived - _tick_ts(a.tick)) * 1000 for a in in_window]
    by_tick: dict[str, list[float]] = {}
    for a, lag in zip(in_window, lags, strict=True):
        by_tick.setdefault(a.tick, []).append(lag)
    firsts = [min(v) for v in by_tick.values()]
    lasts = [max(v) for v in by_tick.values()]
    expected = jobs * (last_tick - first_tick + 1)
    return {
        "expected_fires": expected,
        "fires": len(in_window),
        "duplicates": sum(n - 1 for n in counts.values() if n > 1),
        "missed": expected - len(counts),
        "lag_ms_p50": round(statistics.median(lags), 1) if lags else None,
        "lag_ms_p90": round(percentile(lags, 0.90), 1) if lags else None,
        "lag_ms_p99": round(percentile(lags, 0.99), 1) if lags else None,
        "lag_ms_max": round(max(lags), 1) if lags else None,
        "burst_first_ms_p50": round(statistics.median(firsts), 1) if firsts else None,
        "burst_last_ms_p50": round(statistics.median(lasts), 1) if lasts else None,
        "burst_last_ms_max": round(max(lasts), 1) if lasts else None,
    }


async def run_cronsvc(
    receiver: Receiver, jobs: int, seconds: float, service_log: Path | None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        level = "debug" if service_log else "warning"
        config = write_config(
            Path(tmp) / "c.toml",
            port,
            Path(tmp) / "c.db",
            # The jobs are created as fast as the API answers: no rate limit.
            f"[logging]\nlevel = '{level}'\n[limits]\nrate_limit_per_s = 0\n",
        )
        service = CronsvcProcess(
            config_path=config, port=port, log_path=service_log or Path(tmp) / "log"
        )
        await service.start()
        try:
            async with aiohttp.ClientSession() as session:
                for i in range(jobs):
                    document = {
                        "name": f"bench {i}",
                        "cronExpression": "* * * * * *",
                        "webhookUrl": receiver.url,
                    }
                    async with session.post(f"{service.url}/api/cron", json=document) as response:
                        assert response.status == 201, await response.text()
            first_tick = int(time.time()) + 2  # ticks wholly inside the window
            await asyncio.sleep(seconds + 2)
            last_tick = int(time.time()) - 1
        finally:
            await service.stop()
    return summarise(receiver.arrivals, jobs, first_tick, last_tick)


async def run_bare_client(receiver: Receiver, jobs: int, seconds: float) -> dict[str, Any]:
    """N requests at each whole second from one plain aiohttp session."""
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(i: int, tick: str) -> None:
            body = {"jobId": f"bare {i}", "scheduledAt": tick}
            async with session.post(receiver.url, json=body) as response:
                await response.read()

        first_tick = int(time.time()) + 2
        last_tick = first_tick + int(seconds) - 1
        for tick in range(first_tick - 1, last_tick + 1):
            await asyncio.sleep(max(0.0, tick - time.time()))
            stamp = datetime.fromtimestamp(tick).astimezone().isoformat()
            await asyncio.gather(*(send(i, stamp) for i in range(jobs)))
    return summarise(receiver.arrivals, jobs, first_tick, last_tick)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "jobs": args.jobs,
        "seconds": args.seconds,
        "receiver": args.receiver,
    }
    for name, runner in (("cronsvc", "service"), ("bare_aiohttp_client", "bare")):
        if runner == "bare" and args.no_ceiling:
            continue
        receiver: Receiver = SocketReceiver() if args.receiver == "socket" else AiohttpReceiver()
        await receiver.start()
        try:
            if runner == "service":
                results[name] = await run_cronsvc(
                    receiver, args.jobs, args.seconds, args.service_log
                )
            else:
                results[name] = await run_bare_client(receiver, args.jobs, min(args.seconds, 15))
        finally:
            await receiver.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument(
        "--receiver",
        choices=("socket", "aiohttp"),
        default="socket",
        help="stamp arrival at the socket (default) or at an aiohttp handler",
    )
    parser.add_argument("--no-ceiling", action="store_true", help="skip the bare-client run")
    parser.add_argument("--service-log", type=Path, help="keep the service's debug log here")
    args = parser.parse_args()
    if not 1 <= args.jobs <= MAX_JOBS or not 1 <= args.seconds <= MAX_SECONDS:
        parser.error(f"--jobs 1..{MAX_JOBS}, --seconds 1..{MAX_SECONDS}")
    # The receiver runs on uvloop when it is there, so its own cost per
    # request weighs as little as possible on the arrival times it records.
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(main_async(args))
    else:
        result = uvloop.run(main_async(args))
    print(json.dumps(result, indent=2))
    service = result["cronsvc"]
    return 0 if service["duplicates"] == 0 and service["missed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
