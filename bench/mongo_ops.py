"""What a claim batch's MongoDB calls cost this process in CPU, whatever else it does.

    python -m bench.mongo_ops [--sizes 1,67,200] [--rounds 200]

An instance of a cluster sends its due ticks to the store in one batch a
second (`cronsvc.claims`): the batch's calls go out whether it holds one
job or two hundred, so their cost is paid once per instance and second. This
times, in the client only (`getrusage`: the server's CPU is not counted), the
seven kinds of call a batch of N every-second jobs sends on its way (read the
jobs, insert the claimed records, advance `last_tick`, read the current
versions, mark the records dispatched, finish them, set the jobs' last run),
with pymongo's async client on uvloop as `cronsvc serve` runs them,
against an nx-27017 started here on 127.0.0.1 (or the server
`CRONSVC_TEST_MONGODB_URL` names, in a database dropped after). Printed: each
call's CPU per call, and a batch's sum, for each N. N=1 is the floor an
instance pays every second it fires anything; the rise with N is per fire.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop
from pymongo import AsyncMongoClient, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

from tests.fixtures_mongo import MONGODB_URL_ENV, start_nx_27017

Call = Callable[[int], Awaitable[object]]
WARM_UP = 10
"""Batches sent before the timed ones, per size."""


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _batch_calls(
    jobs: AsyncCollection[dict[str, Any]], records: AsyncCollection[dict[str, Any]], ids: list[str]
) -> dict[str, Call]:
    """A batch's calls for the jobs `ids`, each given the tick it is for."""

    def keys(tick: int) -> list[str]:
        return [f"{i}-{tick}" for i in ids]

    return {
        "read_jobs": lambda _: jobs.find({"_id": {"$in": ids}}, {"version": 1}).to_list(),
        "insert_records": lambda t: records.insert_many(
            [{"_id": k, "status": "RUNNING", "job_id": k} for k in keys(t)], ordered=False
        ),
        "advance_last_ticks": lambda t: jobs.bulk_write(
            [UpdateOne({"_id": i}, {"$max": {"last_tick": t}}) for i in ids]
        ),
        "read_versions": lambda _: jobs.find(
            {"_id": {"$in": ids}, "version": {"$gte": 1}}, {"version": 1}
        ).to_list(),
        "mark_dispatched": lambda t: records.update_many(
            {"_id": {"$in": keys(t)}}, {"$set": {"dispatched": True}}
        ),
        "finish_records": lambda t: records.bulk_write(
            [
                UpdateOne({"_id": k, "status": "RUNNING"}, {"$set": {"status": "SUCCESS"}})
                for k in keys(t)
            ]
        ),
        "set_last_run": lambda t: jobs.bulk_write(
            [UpdateOne({"_id": i}, {"$set": {"last_run": t}}) for i in ids]
        ),
    }


async def measure(url: str, sizes: list[int], rounds: int) -> dict[str, dict[str, int]]:
    """Client CPU in microseconds per call of each kind, and a batch's sum, by size."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    database = client[f"bench_ops_{uuid.uuid4().hex[:8]}"]
    figures: dict[str, dict[str, int]] = {}
    try:
        for size in sizes:
            ids = [f"job-{size}-{i}" for i in range(size)]
            await database.jobs.insert_many([{"_id": i, "version": 1, "last_tick": 0} for i in ids])
            calls = _batch_calls(database.jobs, database.executions, ids)
            spent = dict.fromkeys(calls, 0.0)
            for tick in range(-WARM_UP, rounds):
                for name, call in calls.items():
                    before = _cpu_s()
                    await call(tick)
                    if tick >= 0:
                        spent[name] += _cpu_s() - before
            per_call = {name: round(s / rounds * 1e6) for name, s in spent.items()}
            per_call["batch"] = sum(per_call.values())
            figures[str(size)] = per_call
    finally:
        with contextlib.suppress(Exception):
            await client.drop_database(database.name)
        await client.close()
    return figures


def parse_sizes(text: str) -> list[int]:
    """`--sizes`: whole numbers of at least 1, comma-separated, each once."""
    try:
        sizes = list(dict.fromkeys(int(part) for part in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not whole numbers: {text!r}") from None
    if any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"a batch holds at least one job: {text!r}")
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=parse_sizes, default="1,67,200", help="jobs in a batch, N1,N2,..."
    )
    parser.add_argument("--rounds", type=int, default=200, help="batches timed per size")
    args = parser.parse_args()
    sizes: list[int] = args.sizes
    if not 1 <= args.rounds <= 10_000:
        parser.error("--rounds must be between 1 and 10000")
    url = os.environ.get(MONGODB_URL_ENV)
    if url:
        figures = uvloop.run(measure(url, sizes, args.rounds))
    else:
        with tempfile.TemporaryDirectory(prefix="cronsvc-bench-ops-") as directory:
            server = start_nx_27017(Path(directory))
            try:
                figures = uvloop.run(measure(server.url, sizes, args.rounds))
            finally:
                server.stop()
    print(json.dumps({"client_cpu_us_per_call": figures}, indent=2))


if __name__ == "__main__":
    main()
