"""The benchmark harness, in short runs: its figures are right (pure tests)
and its drivers still work against real processes. The runs assert what
was fired, never how fast: this machine's timings are no verdict."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pstats
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import MongoClient

from bench.figures import DAY_S, Cadence, correct, shape_cadences, summarise
from bench.mongo_ops import measure, parse_sizes
from bench.pinning import pin_apart
from bench.receiver import Arrival, SocketReceiver
from bench.run import run_once
from bench.scale import Population, scale_run
from tests.helpers_api import stamp

T0 = 1_800_000_000  # a whole minute: 2027-01-15T08:00:00Z


def test_cadences_give_their_cron_expression_and_the_ticks_they_owe() -> None:
    assert Cadence(1).cron == "* * * * * *"
    assert Cadence(60, 7).cron == "7 * * * * *"
    assert Cadence(5, 2).cron == "2/5 * * * * *"
    assert Cadence(DAY_S, 8 * 3600 + 30 * 60).cron == "30 8 * * *"
    assert list(Cadence(1).ticks(T0, T0 + 2)) == [T0, T0 + 1, T0 + 2]
    assert list(Cadence(60, 7).ticks(T0, T0 + 130)) == [T0 + 7, T0 + 67, T0 + 127]
    assert list(Cadence(DAY_S, 8 * 3600).ticks(T0 - 1, T0 + 1)) == [T0]  # T0 is 08:00 UTC


def test_per_minute_jobs_spread_evenly_over_the_minute() -> None:
    offsets = [c.offset_s for c in shape_cadences("per-minute", 120, start_s=T0 + 5)]
    assert sorted(offsets) == sorted(list(range(60)) * 2)
    assert offsets[0] == 5


def test_summary_counts_missed_duplicate_and_unexpected_fires_in_the_window() -> None:
    cadences = {"a": Cadence(1), "b": Cadence(60, 1)}
    arrivals = [
        Arrival("a", stamp(T0), T0 + 0.010),
        Arrival("a", stamp(T0), T0 + 0.020),  # a second copy
        Arrival("b", stamp(T0 + 1), T0 + 1.030),
        Arrival("b", stamp(T0 + 2), T0 + 2.030),  # not one of b's ticks
        Arrival("a", stamp(T0 + 5), T0 + 5.0),  # outside the window
    ]  # a's tick T0 + 1 and T0 + 2 never arrived
    figures = summarise(arrivals, cadences, T0, T0 + 2)
    assert figures["expected_fires"] == 4
    assert (figures["fires"], figures["missed"]) == (2, 2)
    assert (figures["duplicates"], figures["unexpected"]) == (1, 1)
    assert figures["lag_ms_max"] == pytest.approx(30.0)
    assert not correct(figures)


def test_each_tick_burst_is_timed_by_its_first_and_its_last_arrival() -> None:
    cadences = {"a": Cadence(1), "b": Cadence(1)}
    arrivals = [
        Arrival("a", stamp(T0), T0 + 0.010),
        Arrival("b", stamp(T0), T0 + 0.040),
        Arrival("b", stamp(T0 + 1), T0 + 1.020),
        Arrival("a", stamp(T0 + 1), T0 + 1.050),
    ]
    figures = summarise(arrivals, cadences, T0, T0 + 1)
    assert correct(figures)
    assert (figures["burst_first_ms_p50"], figures["burst_first_ms_p99"]) == (10.0, 20.0)
    assert (figures["burst_last_ms_p50"], figures["burst_last_ms_p99"]) == (40.0, 50.0)


@pytest.mark.e2e
async def test_single_instance_run_fires_every_expected_tick_once(
    tmp_path: Path, own_cpus: set[int]
) -> None:
    pin = len(own_cpus) >= 2
    result = await run_once(
        mode="single",
        shape="every-second",
        jobs=5,
        seconds=3,
        workdir=tmp_path,
        flat_out_s=1,
        pin=pin,
    )
    assert ("pinned" in result) is pin
    service = result["cronsvc"]
    assert correct(service), service
    assert service["expected_fires"] == 15
    assert service["processes"]["cronsvc"]["peak_rss_mib"] > 0
    assert service["cpu"]["seconds_by_process"]["cronsvc"] is not None
    assert correct(result["bare_client"]), result["bare_client"]
    assert result["bare_client"]["flat_out"]["requests"] > 0


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("instances", "names"),
    [
        pytest.param(3, {"cronsvc-0", "cronsvc-1", "cronsvc-2"}, id="three"),
        pytest.param(1, {"cronsvc"}, id="one-on-the-shared-backends"),
    ],
)
async def test_cluster_run_fires_every_expected_tick_once_across_its_instances(
    tmp_path: Path, redis_url: str, mongo_url: str, instances: int, names: set[str]
) -> None:
    result = await run_once(
        mode="cluster",
        shape="every-second",
        jobs=6,
        seconds=3,
        workdir=tmp_path,
        ceiling=False,
        redis_url=redis_url,
        mongo_url=mongo_url,
        instances=instances,
    )
    service = result["cronsvc"]
    assert correct(service), service
    assert result["instances"] == instances and service["expected_fires"] == 18
    assert {name for name in service["processes"] if name.startswith("cronsvc")} == names


async def test_mongo_ops_times_each_call_of_a_batch_per_size_and_drops_its_database(
    mongo_url: str,
) -> None:
    figures = await measure(mongo_url, [1, 3], rounds=2)

    calls = {"read_jobs", "insert_records", "advance_last_ticks", "read_versions"}
    calls |= {"mark_dispatched", "finish_records", "set_last_run"}
    assert set(figures) == {"1", "3"}
    for per_call in figures.values():
        assert set(per_call) == calls | {"batch"}
        assert per_call["batch"] == sum(per_call[name] for name in calls)
    client: MongoClient[dict[str, object]] = MongoClient(mongo_url)
    with client:
        assert not [n for n in client.list_database_names() if n.startswith("bench_ops_")]


def test_mongo_ops_takes_batch_sizes_once_each_and_refuses_others_clearly() -> None:
    assert parse_sizes("1,67,200,67") == [1, 67, 200]
    with pytest.raises(argparse.ArgumentTypeError, match="not whole numbers"):
        parse_sizes("1,x")
    with pytest.raises(argparse.ArgumentTypeError, match="at least one job"):
        parse_sizes("5,0")


@pytest.mark.e2e
async def test_a_profiled_cluster_run_leaves_each_instances_profile(
    tmp_path: Path, redis_url: str, mongo_url: str
) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    result = await run_once(
        mode="cluster",
        shape="every-second",
        jobs=2,
        seconds=2,
        workdir=tmp_path,
        ceiling=False,
        redis_url=redis_url,
        mongo_url=mongo_url,
        instances=1,
        profile_dir=profiles,
    )
    assert correct(result["cronsvc"]), result["cronsvc"]
    stats = pstats.Stats(str(profiles / "cronsvc-0.prof"))
    profiled = {path for path, _, _ in stats.stats}  # type: ignore[attr-defined]
    assert any(path.endswith("cronsvc/claims.py") for path in profiled)


@pytest.mark.e2e
async def test_scale_run_serves_a_seeded_store_and_fires_its_hot_jobs(tmp_path: Path) -> None:
    result = await scale_run(
        Population(jobs=2000, hot=5), window=3, api_requests=10, workdir=tmp_path
    )
    assert result["serving_s"] > 0
    assert result["first_hot_fire_s"] is not None
    window = result["window"]
    assert correct(window), window
    assert window["expected_fires"] >= 15  # the hot jobs; a daily one may fall in too
    assert {"create", "get", "list"} == result["api_ms"].keys()
    assert result["peak_rss_mib"] > 0


@pytest.mark.skipif(not SocketReceiver.kernel_stamps, reason="SO_TIMESTAMPNS is Linux's")
async def test_socket_receiver_stamps_the_arrival_not_the_read() -> None:
    """A request that waits in the socket while the receiver is busy keeps
    the time it arrived."""
    receiver = SocketReceiver()
    await receiver.start()
    try:
        port = int(receiver.url.rsplit(":", 1)[1].split("/")[0])
        body = b'{"jobId":"a","scheduledAt":"2027-01-15T08:00:00Z"}'
        request = (
            b"POST /hook HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        with socket.create_connection(("127.0.0.1", port)) as client:
            await asyncio.sleep(0.05)  # accepted
            sent = time.time()
            client.sendall(request)
            time.sleep(0.5)  # noqa: ASYNC251 - holds the receiver's loop: nothing is read yet
            read_after = time.time()
            client.setblocking(False)
            loop = asyncio.get_running_loop()
            reply = await asyncio.wait_for(loop.sock_recv(client, 100), 10)
            assert reply.startswith(b"HTTP/1.1 200 OK")
        (arrival,) = receiver.arrivals
        assert (arrival.job_id, arrival.tick) == ("a", "2027-01-15T08:00:00Z")
        assert sent <= arrival.arrived < read_after
    finally:
        await receiver.stop()


@pytest.fixture
def own_cpus() -> Iterator[set[int]]:
    """This process's CPUs, given back after the test."""
    cpus = os.sched_getaffinity(0)
    threads = [int(t) for t in os.listdir(f"/proc/{os.getpid()}/task")]
    yield cpus
    for thread in threads:
        with contextlib.suppress(OSError):  # ended meanwhile
            os.sched_setaffinity(thread, cpus)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin apart")
def test_pinning_puts_the_receiver_and_the_service_on_different_cpus(own_cpus: set[int]) -> None:
    with subprocess.Popen(["sleep", "30"]) as service:
        try:
            mine, theirs = pin_apart([service.pid])
            assert os.sched_getaffinity(0) == mine and os.sched_getaffinity(service.pid) == theirs
            assert mine and theirs and not mine & theirs and mine | theirs == own_cpus
        finally:
            service.kill()


def test_pinning_on_one_cpu_is_refused(own_cpus: set[int]) -> None:
    os.sched_setaffinity(0, {min(own_cpus)})
    with pytest.raises(RuntimeError, match="two CPUs"):
        pin_apart([])
