"""Fire lag of one cronsvc process on the embedded default.

Starts `cronsvc serve` (SQLite, local coordination) on a free loopback port,
a receiver on 127.0.0.1, creates N every-second jobs (6-field `* * * * * *`,
so all N are due on the same instant), runs for D seconds, and reports the
fire lag (receiver arrival minus tick) p50/p90/p99/max, duplicates and missed
ticks. Bounded in jobs and time; loopback only.

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

import aiohttp
from aiohttp import web

from tests.processes import CronsvcProcess, free_port, write_config

MAX_JOBS = 5000
MAX_SECONDS = 600


class Recorder:
    def __init__(self) -> None:
        self.arrivals: list[tuple[str, str, float]] = []

    async def handle(self, request: web.Request) -> web.Response:
        arrived = time.time()  # before the body is read: the request has arrived
        body = await request.json()
        self.arrivals.append((body["jobId"], body["scheduledAt"], arrived))
        return web.Response(text="ok")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(jobs: int, seconds: float, service_log: Path | None = None) -> dict[str, object]:
    recorder = Recorder()
    app = web.Application()
    app.router.add_post("/hook", recorder.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        config = write_config(
            Path(tmp) / "c.toml",
            port,
            Path(tmp) / "c.db",
            f"[logging]\nlevel = '{'debug' if service_log else 'warning'}'\n",
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
                        "webhookUrl": hook,
                    }
                    async with session.post(f"{service.url}/api/cron", json=document) as response:
                        assert response.status == 201, await response.text()
            start = time.time()
            window_start = int(start) + 2  # ticks fully inside the window
            await asyncio.sleep(seconds + 2)
            window_end = int(time.time()) - 1
        finally:
            await service.stop()
    await runner.cleanup()
    in_window = [
        (job, tick, arrived)
        for job, tick, arrived in recorder.arrivals
        if window_start
        <= datetime.fromisoformat(tick.replace("Z", "+00:00")).timestamp()
        <= window_end
    ]
    counts = Counter((job, tick) for job, tick, _ in in_window)
    lags = [
        (arrived - datetime.fromisoformat(tick.replace("Z", "+00:00")).timestamp()) * 1000
        for _, tick, arrived in in_window
    ]
    by_tick: dict[str, list[float]] = {}
    for (_, tick, _), lag in zip(in_window, lags, strict=True):
        by_tick.setdefault(tick, []).append(lag)
    firsts = [min(v) for v in by_tick.values()]
    lasts = [max(v) for v in by_tick.values()]
    worst = sorted(by_tick, key=lambda t: max(by_tick[t]))[-3:]
    expected = jobs * (window_end - window_start + 1)
    return {
        "jobs": jobs,
        "ticks_per_job": window_end - window_start + 1,
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
        "worst_ticks": {t: round(max(by_tick[t]), 1) for t in worst},
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--service-log", type=Path, help="keep the service's info-level log here")
    args = parser.parse_args()
    if not 1 <= args.jobs <= MAX_JOBS or not 1 <= args.seconds <= MAX_SECONDS:
        parser.error(f"--jobs 1..{MAX_JOBS}, --seconds 1..{MAX_SECONDS}")
    # The receiver runs on uvloop when it is there, so that its own cost per
    # request weighs as little as possible on the arrival times it records.
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args.jobs, args.seconds, args.service_log))
    else:
        result = uvloop.run(run(args.jobs, args.seconds, args.service_log))
    print(json.dumps(result, indent=2))
    return 0 if result["duplicates"] == 0 and result["missed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
