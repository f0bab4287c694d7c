"""How long a cluster takes to deal with a dead leader's work.

    python -m bench.handover [--runs 3] [--jobs 5] [--heartbeat 5] [--claim-ahead 3]

Each run starts a fresh three-instance cluster (`bench.deploy.cluster`: Redis
and an nx-27017 MongoDB wire server on 127.0.0.1), creates `--jobs`
every-second jobs (`fire_all` with a minute's grace, so a tick sent late is
still sent) and one run, triggered on the leader, whose webhook never
answers. The leader (the first instance started) claims its ticks
`--claim-ahead` seconds early, the others at the default 0.2 s, so the
leader wins most leases and holds claims it has not sent yet when it dies.
After a random whole number of seconds, up to half a heartbeat interval (so
the kill falls at different points of the leader's renewal period, always
mid-second), the leader is killed with SIGKILL and the run measures, from
the kill:

- `adopted_s`: until a survivor adopts the dead leader's unsent claims (its
  `unsent_ticks_adopted` log event);
- `lost_s`: until the never-answered run is recorded LOST (read through the
  API every 0.1 s);
- `late_s`: until the last tick that arrives more than a second late (an
  adopted one, sent under `fire_all`) reaches the receiver;
- `on_time_s`: the scheduled time of the first tick from which on every tick
  of every job arrives within a second (the dead leader's claims end there);
- `adopted`, `late`, `missing`: ticks adopted, ticks that arrived late, and
  ticks never sent (an adopted tick with more than `scheduler.max_catchup`
  ticks of its job after it is recorded MISSED; a tick already on its way
  when the leader died is LOST, not sent again).

Loopback only; every process is stopped by its PID when a run ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench.deploy import Deployment, cluster
from bench.receiver import Arrival, SocketReceiver, run_event_loop

LATE_S = 1.0
"""A tick that arrives later than this after its instant was not sent on time."""
AFTER_KILL_S = 40.0
"""How long a run watches after the kill: past the slowest handover."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Handover:
    adopted_s: float | None
    lost_s: float | None
    late_s: float | None
    on_time_s: float | None
    adopted: int
    late: int
    missing: int


@contextlib.asynccontextmanager
async def silent_target() -> AsyncIterator[str]:
    """A webhook URL whose server takes the request and never answers: the
    kernel completes the connection on the listening socket, nobody accepts."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/never"
    finally:
        listener.close()


async def call(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> Any:
    async with session.request(method, url, **kw) as response:
        if response.status >= 400:
            raise RuntimeError(f"{method} {url}: {response.status} {await response.text()}")
        return await response.json()


async def leader_index(session: aiohttp.ClientSession, deployment: Deployment) -> int:
    """The instance whose `cronsvc_is_leader` gauge reads 1 (waits for one)."""
    async with asyncio.timeout(30):
        while True:
            for n, url in enumerate(deployment.urls):
                async with session.get(f"{url}/metrics") as response:
                    text = await response.text()
                if "\ncronsvc_is_leader 1.0" in text:
                    return n
            await asyncio.sleep(0.2)


def parse(instant: str) -> float:
    return datetime.fromisoformat(instant.replace("Z", "+00:00")).timestamp()


def log_events(paths: list[Path], name: str) -> list[dict[str, Any]]:
    """The JSON log lines of event `name` in these files."""
    found = []
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            if f'"{name}"' in line:
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event.get("event") == name:
                        found.append(event)
    return found


def analyse(
    arrivals: list[Arrival],
    job_ids: list[str],
    killed_at: float,
    lost_s: float | None,
    survivor_logs: list[Path],
) -> Handover:
    # Ticks from two seconds before the kill (the leader may have claimed
    # them and died before sending) to ten seconds before the end.
    first = int(killed_at) - 2
    last = int(killed_at + AFTER_KILL_S) - 10
    arrived: dict[tuple[str, int], float] = {}
    for a in arrivals:
        key = (a.job_id, round(parse(a.tick)))
        arrived.setdefault(key, a.arrived)
    late = {k: t for k, t in arrived.items() if first <= k[1] <= last and t - k[1] > LATE_S}
    missing = [(j, s) for j in job_ids for s in range(first, last + 1) if (j, s) not in arrived]
    on_time = None
    for s in range(first, last + 1):
        if all(
            (j, u) in arrived and arrived[(j, u)] - u <= LATE_S
            for j in job_ids
            for u in range(s, last + 1)
        ):
            on_time = s - killed_at
            break
    adoptions = [
        (parse(e["timestamp"]), int(e["count"]))
        for e in log_events(survivor_logs, "unsent_ticks_adopted")
    ]
    return Handover(
        adopted_s=min(t for t, _ in adoptions) - killed_at if adoptions else None,
        lost_s=lost_s,
        late_s=max(late.values()) - killed_at if late else None,
        on_time_s=on_time,
        adopted=sum(n for _, n in adoptions),
        late=len(late),
        missing=len(missing),
    )


async def one_run(workdir: Path, jobs: int, claim_ahead_s: float, heartbeat_s: float) -> Handover:
    receiver = SocketReceiver()
    await receiver.start()
    try:
        async with (
            silent_target() as never_url,
            cluster(
                workdir,
                max_jobs=jobs + 10,
                log_level="info",
                schedulers=[f"claim_ahead_s = {claim_ahead_s}\n"],
                first_leads=True,
            ) as deployment,
            aiohttp.ClientSession() as session,
        ):
            job_ids = [
                (
                    await call(
                        session,
                        "POST",
                        f"{deployment.urls[n % 3]}/api/cron",
                        json={
                            "name": f"handover {n}",
                            "cronExpression": "* * * * * *",
                            "webhookUrl": receiver.url,
                            "misfirePolicy": "fire_all",
                            "misfireGraceSeconds": 60,
                        },
                    )
                )["id"]
                for n in range(jobs)
            ]
            await asyncio.sleep(5)  # every instance fires and claims ahead by now
            victim = await leader_index(session, deployment)
            if victim != 0:
                raise RuntimeError(f"instance {victim} leads, not the first one started")
            urls = deployment.urls
            slow = await call(
                session,
                "POST",
                f"{urls[victim]}/api/cron",
                json={
                    "name": "never answered",
                    "cronExpression": "0 0 1 1 *",
                    "webhookUrl": never_url,
                    "timeoutSeconds": 60,
                },
            )
            running = await call(session, "POST", f"{urls[victim]}/api/cron/{slow['id']}/trigger")
            # Sent by now; and the kill falls anywhere in the leader's
            # renewal period (half an interval), mid-second.
            await asyncio.sleep(1.0 + round(random.uniform(0, heartbeat_s / 2)) + 0.3)
            process = deployment.instances[victim].process
            assert process is not None
            os.kill(process.pid, signal.SIGKILL)
            killed_at = time.time()
            survivor = urls[(victim + 1) % 3]
            lost_s = None
            for _ in range(int(AFTER_KILL_S * 10)):
                log = await call(session, "GET", f"{survivor}/api/execution-logs/{running['id']}")
                if log["status"] == "LOST":
                    lost_s = time.time() - killed_at
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(max(0.0, killed_at + AFTER_KILL_S - time.time()))
            survivor_logs = [p.log_path for n, p in enumerate(deployment.instances) if n != victim]
            return analyse(receiver.arrivals, job_ids, killed_at, lost_s, survivor_logs)
    finally:
        await receiver.stop()


def spread(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    return f"median {statistics.median(known):.1f} s, {min(known):.1f}-{max(known):.1f} s"


async def main(runs: int, jobs: int, claim_ahead_s: float, heartbeat_s: float) -> None:
    results = []
    for n in range(runs):
        with tempfile.TemporaryDirectory(prefix="cronsvc-handover-") as workdir:
            result = await one_run(Path(workdir), jobs, claim_ahead_s, heartbeat_s)
        results.append(result)
        print(json.dumps({"run": n + 1} | {k: getattr(result, k) for k in result.__slots__}))
    for field in ("adopted_s", "lost_s", "late_s", "on_time_s"):
        print(f"{field}: {spread([getattr(r, field) for r in results])}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--heartbeat", type=float, default=5.0, help="heartbeat interval, s")
    parser.add_argument("--claim-ahead", type=float, default=3.0, help="the leader's claim_ahead_s")
    args = parser.parse_args()
    os.environ["CRONSVC_SCHEDULER_HEARTBEAT_INTERVAL_S"] = str(args.heartbeat)
    run_event_loop(lambda: main(args.runs, args.jobs, args.claim_ahead, args.heartbeat))
