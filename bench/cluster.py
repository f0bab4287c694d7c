"""Three cronsvc instances on Redis and a MongoDB wire server: exactly once.

Starts redis-server and nx-27017 (or uses CRONSVC_TEST_REDIS_URL /
CRONSVC_TEST_MONGODB_URL), three `cronsvc serve` processes on free loopback
ports, and a socket-stamping receiver; creates N every-second jobs spread
over the instances, runs D seconds, and reports duplicates, missed ticks, the
fire lag and how the fires spread over the instances. Loopback only; bounded.

    python -m bench.cluster --jobs 200 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from bench.lag import summarise
from bench.receiver import SocketReceiver
from tests.fixtures_mongo import start_nx_27017, with_database
from tests.fixtures_redis import RedisServer
from tests.processes import CronsvcProcess, free_port

MAX_JOBS = 2000
MAX_SECONDS = 600


async def run(jobs: int, seconds: float, workdir: Path) -> dict[str, Any]:
    redis_url = os.environ.get("CRONSVC_TEST_REDIS_URL")
    redis_server = None
    if redis_url is None:
        redis_server = RedisServer(workdir)
        redis_server.start()
        redis_url = redis_server.url
    mongo_url = os.environ.get("CRONSVC_TEST_MONGODB_URL")
    nx = None
    if mongo_url is None:
        nx = start_nx_27017(workdir / "mongo")
        mongo_url = nx.url
    database_url = with_database(mongo_url, f"bench{uuid.uuid4().hex[:8]}")
    receiver = SocketReceiver()
    await receiver.start()
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    instances = []
    for n in range(3):
        port = free_port()
        config = workdir / f"c{n}.toml"
        config.write_text(
            f'[server]\nport = {port}\n[store]\nurl = "{database_url}"\n'
            f'[coordination]\nurl = "{redis_url}"\nkey_prefix = "{prefix}"\n'
            "[logging]\nlevel = 'warning'\n"
            "[webhook]\nallow_private_targets = true\n"  # the receiver is on 127.0.0.1
            # The jobs are created as fast as the API answers: no rate limit.
            "[limits]\nrate_limit_per_s = 0\n"
        )
        instances.append(
            CronsvcProcess(config_path=config, port=port, log_path=workdir / f"c{n}.log")
        )
    try:
        await asyncio.gather(*(i.start() for i in instances))
        async with aiohttp.ClientSession() as session:
            for n in range(jobs):
                document = {
                    "name": f"cluster {n}",
                    "cronExpression": "* * * * * *",
                    "webhookUrl": receiver.url,
                }
                url = f"{instances[n % 3].url}/api/cron"
                async with session.post(url, json=document) as response:
                    assert response.status == 201, await response.text()
        first_tick = int(time.time()) + 3
        await asyncio.sleep(seconds + 3)
        last_tick = int(time.time()) - 2
        spread = await _spread(instances[0].url, jobs)
    finally:
        await asyncio.gather(*(i.stop() for i in instances), return_exceptions=True)
        await receiver.stop()
        if nx is not None:
            nx.stop()
        if redis_server is not None:
            redis_server.stop()
    return {
        "jobs": jobs,
        "seconds": seconds,
        **summarise(receiver.arrivals, jobs, first_tick, last_tick),
        "fires_by_instance_sample": spread,
    }


async def _spread(base: str, jobs: int) -> dict[str, int]:
    """Which instance fired the last 500 executions."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/api/execution-logs?limit=500&status=SUCCESS") as response,
    ):
        logs = await response.json()
    return dict(Counter(e["instanceId"] for e in logs))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    if not 1 <= args.jobs <= MAX_JOBS or not 1 <= args.seconds <= MAX_SECONDS:
        parser.error(f"--jobs 1..{MAX_JOBS}, --seconds 1..{MAX_SECONDS}")
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(args.jobs, args.seconds, Path(tmp)))
    print(json.dumps(result, indent=2))
    return 0 if result["duplicates"] == 0 and result["missed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
