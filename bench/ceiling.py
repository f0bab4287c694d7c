"""What this machine allows without cronsvc: a bare aiohttp client against the
same receiver, with the connection pool the service's dispatcher has.

`bare_schedule` sends what the service would (one request per job at each
of its ticks, a tick's requests together), so its lag figures are those of
a perfect scheduler. `bare_throughput` sends as fast as the pool allows: the
most fires per second a client of this kind reaches here.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp

from bench.figures import Cadence
from bench.window import sleep_until


def _stamp(tick: int) -> str:
    return datetime.fromtimestamp(tick, UTC).isoformat()


async def bare_schedule(
    url: str, cadences: Mapping[str, Cadence], first: int, last: int, *, concurrency: int
) -> None:
    """The jobs' requests for the ticks from `first - 1` (a warm-up) to `last`,
    each tick's sent at its instant; bursts may overlap as the service's do.
    Only periods that divide a minute are supported."""
    by_second = {
        s: [job for job, c in cadences.items() if (s - c.offset_s) % c.period_s == 0]
        for s in range(60)
    }
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(job: str, stamp: str) -> None:
            async with session.post(url, json={"jobId": job, "scheduledAt": stamp}) as response:
                await response.read()

        async def burst(tick: int) -> None:
            stamp = _stamp(tick)
            await asyncio.gather(*(send(job, stamp) for job in by_second[tick % 60]))

        bursts = []
        for tick in range(first - 1, last + 1):
            await sleep_until(tick)
            bursts.append(asyncio.create_task(burst(tick)))
        async with asyncio.timeout(60):
            await asyncio.gather(*bursts)


async def bare_throughput(url: str, *, concurrency: int, seconds: float) -> dict[str, Any]:
    """`concurrency` requests kept in flight for `seconds`: requests per second."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    counter = itertools.count()
    done = 0
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                body = {"jobId": f"bare {next(counter)}", "scheduledAt": _stamp(int(time.time()))}
                async with session.post(url, json=body) as response:
                    await response.read()
                done += 1

        started = time.monotonic()
        deadline = started + seconds
        async with asyncio.timeout(seconds + 30):
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    return {
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "requests": done,
        "requests_per_s": round(done / elapsed, 1),
    }
