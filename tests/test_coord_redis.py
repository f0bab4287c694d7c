"""What only the Redis coordinator shows: expiry, batching on the wire, key
prefixes, secrets kept out of sight, and life through Redis outages.

The common protocol semantics are in `test_coord_contract.py`. Tests that
stop, restart, freeze or flush a server use a private one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio.connection
from structlog.testing import capture_logs

from cronsvc.coord import RESYNC
from cronsvc.coord.redis import RedisCoordinator
from cronsvc.domain import InstanceInfo
from cronsvc.errors import CoordinatorUnavailable, StartupRefused
from tests.fakes import FreezingProxy, free_port
from tests.fixtures_redis import Opener, RedisServer
from tests.helpers_coord import Notices, instance, later, tick

T = TypeVar("T")
TTL_S = 30.0


async def eventually(probe: Callable[[], Awaitable[T]], within_s: float = 5.0) -> T:
    """Poll `probe` until it returns something truthy (bounded)."""
    async with asyncio.timeout(within_s):
        while True:
            if result := await probe():
                return result
            await asyncio.sleep(0.02)


def commandstat(url: str, command: str) -> int:
    with redis.Redis.from_url(url) as client:
        stats = client.info("commandstats")
    entry = stats.get(f"cmdstat_{command}", {"calls": 0})
    return int(entry["calls"])


# Tick leases


async def test_a_thousand_ticks_are_leased_in_one_write_and_one_batch(
    open_redis: Opener,
    start_redis_server: Callable[..., RedisServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = start_redis_server()
    a = await open_redis(server.url, "c1")
    b = await open_redis(server.url, "c1")
    ticks = [(f"job-{i}", tick(i % 7)) for i in range(1000)]

    writes: list[bytes] = []
    original = redis.asyncio.connection.AbstractConnection.send_packed_command

    async def spy(self: Any, command: Any, check_health: bool = True) -> None:
        if isinstance(command, str):
            payload = command.encode()
        elif isinstance(command, bytes):
            payload = command
        else:
            payload = b"".join(bytes(chunk) for chunk in command)
        if b"c1:tick:" in payload:
            writes.append(payload)
        await original(self, command, check_health)

    monkeypatch.setattr(redis.asyncio.connection.AbstractConnection, "send_packed_command", spy)
    sets_before = commandstat(server.url, "set")

    assert await a.try_lease_ticks(ticks, TTL_S) == [True] * 1000

    assert len(writes) == 1, "the whole batch goes out in one write, before any reply is read"
    assert commandstat(server.url, "set") - sets_before == 1000
    assert await b.try_lease_ticks(ticks, TTL_S) == [False] * 1000
    assert len(writes) == 2


async def test_a_lease_holder_asking_again_is_told_it_holds_the_lease(
    open_redis: Opener, redis_url: str, redis_prefix: str
) -> None:
    """Re-entrant per instance, so a retry after a lost reply does not lose the
    tick; the store's claim fences a repeat inside one instance."""
    a = await open_redis(redis_url, redis_prefix)
    b = await open_redis(redis_url, redis_prefix)
    assert await a.try_lease_ticks([("job-a", tick(0))], TTL_S) == [True]
    assert await b.try_lease_ticks([("job-a", tick(0))], TTL_S) == [False]
    assert await a.try_lease_ticks([("job-a", tick(0))], TTL_S) == [True]


async def test_tick_lease_keys_hold_the_tick_in_unix_ms_and_expire(
    open_redis: Opener, redis_url: str, redis_prefix: str
) -> None:
    a = await open_redis(redis_url, redis_prefix)
    at = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
    await a.try_lease_ticks([("job-a", at)], 60.0)
    with redis.Redis.from_url(redis_url) as client:
        ttl_ms = client.pttl(f"{redis_prefix}:tick:job-a:{int(at.timestamp() * 1000)}")
    assert 0 < ttl_ms <= 60_000


async def test_an_expired_tick_lease_can_be_won_by_another_instance(
    open_redis: Opener, redis_url: str, redis_prefix: str
) -> None:
    a = await open_redis(redis_url, redis_prefix)
    b = await open_redis(redis_url, redis_prefix)
    assert await a.try_lease_ticks([("job-a", tick(0))], 0.05) == [True]

    async def b_wins() -> bool:
        return (await b.try_lease_ticks([("job-a", tick(0))], TTL_S)) == [True]

    await eventually(b_wins)


# Leadership


async def test_an_expired_leader_lease_goes_to_another_instance_with_a_larger_token(
    open_redis: Opener, redis_url: str, redis_prefix: str
) -> None:
    a = await open_redis(redis_url, redis_prefix)
    b = await open_redis(redis_url, redis_prefix)
    first = await a.try_lead("instance-a", 0.1)
    assert first is not None

    second = await eventually(lambda: b.try_lead("instance-b", TTL_S))

    assert second is not None and second > first
    assert await a.try_lead("instance-a", TTL_S) is None, "a renewal that finds the lease lost"
    assert await b.current_leader() == "instance-b"


async def test_a_renewal_that_finds_the_lease_expired_reports_it_lost_then_takes_it_anew(
    open_redis: Opener, redis_url: str, redis_prefix: str
) -> None:
    a = await open_redis(redis_url, redis_prefix)
    first = await a.try_lead("instance-a", 0.05)
    assert first is not None

    async def vacant() -> bool:
        return await a.current_leader() is None

    await eventually(vacant)
    assert await a.try_lead("instance-a", TTL_S) is None
    again = await a.try_lead("instance-a", TTL_S)
    assert again is not None and again > first


async def test_a_coordinator_that_forgot_its_lease_takes_it_back_with_the_same_token(
    open_redis: Opener, redis_url: str, redis_prefix: str
) -> None:
    """As after a reply lost on the way back: the lease is this instance's."""
    a = await open_redis(redis_url, redis_prefix)
    b = await open_redis(redis_url, redis_prefix)
    token = await a.try_lead("instance-a", TTL_S)
    assert await b.try_lead("instance-a", TTL_S) == token


async def test_an_instance_id_that_only_starts_like_the_leaders_is_not_the_leader(
    open_redis: Opener, redis_url: str, redis_prefix: str
) -> None:
    a = await open_redis(redis_url, redis_prefix)
    assert await a.try_lead("node:1", TTL_S) is not None
    assert await a.try_lead("node", TTL_S) is None
    await a.resign("node")
    assert await a.current_leader() == "node:1"


# Heartbeats


async def test_an_expired_announcement_disappears_and_leaves_no_index_entry(
    open_redis: Opener, redis_url: str, redis_prefix: str
) -> None:
    a = await open_redis(redis_url, redis_prefix)
    await a.heartbeat(instance("instance-a"), 0.1)
    await a.heartbeat(instance("instance-b"), TTL_S)

    async def only_b() -> bool:
        return [info.id for info in await a.live_instances()] == ["instance-b"]

    await eventually(only_b)
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        assert client.zrange(f"{redis_prefix}:instances", 0, -1) == ["instance-b"]


async def test_a_heartbeat_after_the_announcement_expired_says_it_was_gone(
    open_redis: Opener, redis_url: str, redis_prefix: str
) -> None:
    a = await open_redis(redis_url, redis_prefix)
    info = instance("instance-a")
    await a.heartbeat(info, 0.1)

    async def expired() -> bool:
        return await a.live_instances() == []

    await eventually(expired)
    assert (await a.heartbeat(later(info), TTL_S)).renewed is False


async def test_a_heartbeat_after_redis_lost_its_data_says_the_announcement_was_gone(
    open_redis: Opener, start_redis_server: Callable[..., RedisServer]
) -> None:
    """What tells an instance that every other instance's announcement is
    missing too, until each one's next heartbeat."""
    server = start_redis_server()
    a = await open_redis(server.url, "c1")
    info = instance("instance-a")
    await a.heartbeat(info, TTL_S)
    assert (await a.heartbeat(later(info), TTL_S)).renewed is True

    server.flushall()

    assert (await a.heartbeat(later(info, 10), TTL_S)).renewed is False
    assert (await a.heartbeat(later(info, 15), TTL_S)).renewed is True


async def test_a_retried_heartbeat_is_not_taken_for_a_renewal(
    open_redis: Opener, redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client retry whose first attempt landed finds that attempt's
    announcement: whether one was there before it is unknown, so False.
    (A retry sends the call's arguments again: here every call's do.)"""
    a = await open_redis(redis_url, redis_prefix)
    info = instance("instance-a")
    await a.heartbeat(info, TTL_S)
    assert (await a.heartbeat(info, TTL_S)).renewed is True  # the same instant, another call
    monkeypatch.setattr("cronsvc.coord.redis.secrets", SimpleNamespace(token_hex=lambda n: "0"))
    await a.heartbeat(later(info), TTL_S)
    assert (await a.heartbeat(later(info), TTL_S)).renewed is False


async def test_an_announcement_keeps_its_fields(
    open_redis: Opener, redis_url: str, redis_prefix: str
) -> None:
    a = await open_redis(redis_url, redis_prefix)
    info = InstanceInfo(
        id="instance-a",
        host="box-7",
        version="1.2.3",
        started_at=datetime(2026, 1, 1, 8, 0, 0, 123_000, tzinfo=UTC),
        last_heartbeat=datetime(2026, 1, 1, 9, 0, 0, 456_000, tzinfo=UTC),
    )
    await a.heartbeat(info, TTL_S)
    assert await a.live_instances() == [info]


# Key prefixes


async def test_an_announcement_from_an_instance_that_does_not_count_its_fires_reads_as_zero(
    open_redis: Opener, redis_url: str, redis_prefix: str
) -> None:
    """Instances of an earlier version announce themselves without the count;
    a cluster being upgraded one instance at a time still lists them."""
    a = await open_redis(redis_url, redis_prefix)
    await a.heartbeat(instance("instance-a"), TTL_S)
    key = f"{redis_prefix}:instance:instance-a"
    with redis.Redis.from_url(redis_url) as client:
        announced = json.loads(client.get(key))
        del announced["ticksFiredLastMinute"]
        del announced["jobsOwned"]
        client.set(key, json.dumps(announced), px=60_000)
    (listed,) = await a.live_instances()
    assert listed.id == "instance-a"
    assert listed.ticks_fired_last_minute == 0
    assert listed.jobs_owned is None


async def test_an_owner_whose_announcement_expired_is_no_longer_named(
    open_redis: Opener, redis_url: str, redis_prefix: str
) -> None:
    a = await open_redis(redis_url, redis_prefix)
    await a.heartbeat(dataclasses.replace(instance("instance-a"), jobs_owned=1), 0.1)
    await a.heartbeat(dataclasses.replace(instance("instance-b"), jobs_owned=1), TTL_S)

    async def only_b() -> bool:
        beat = await a.heartbeat(instance("instance-c"), TTL_S)
        return beat.owners == {"instance-b"}

    await eventually(only_b)
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        assert client.zrange(f"{redis_prefix}:owners", 0, -1) == ["instance-b"]


async def test_a_loading_instance_whose_announcement_expired_is_no_longer_named(
    open_redis: Opener, redis_url: str, redis_prefix: str
) -> None:
    a = await open_redis(redis_url, redis_prefix)
    await a.heartbeat(dataclasses.replace(instance("instance-a"), loading=True), 0.1)
    await a.heartbeat(dataclasses.replace(instance("instance-b"), loading=True), TTL_S)

    async def only_b() -> bool:
        beat = await a.heartbeat(instance("instance-c"), TTL_S)
        return beat.loading == {"instance-b"}

    await eventually(only_b)
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        assert client.zrange(f"{redis_prefix}:loading", 0, -1) == ["instance-b"]
    await a.forget_instance("instance-b")
    assert (await a.heartbeat(instance("instance-c"), TTL_S)).loading == set()


async def test_key_prefixes_keep_two_clusters_apart(
    open_redis: Opener, redis_url: str, redis_prefix: str
) -> None:
    one = await open_redis(redis_url, redis_prefix)
    two = await open_redis(redis_url, f"{redis_prefix}:other")
    heard_one, heard_two = Notices(), Notices()
    one.subscribe_job_changes(heard_one)
    two.subscribe_job_changes(heard_two)

    assert await one.try_lease_ticks([("job-a", tick(0))], TTL_S) == [True]
    assert await two.try_lease_ticks([("job-a", tick(0))], TTL_S) == [True]
    assert await one.try_lead("instance-a", TTL_S) is not None
    assert await two.try_lead("instance-b", TTL_S) is not None
    await one.heartbeat(instance("instance-a"), TTL_S)
    assert await two.live_instances() == []

    await one.publish_job_change("job-one")
    await two.publish_job_change("job-two")
    # Redis handled the first PUBLISH before the second: had it reached the
    # second cluster's listener, it would have arrived first.
    await heard_two.wait_for("job-two")
    await heard_one.wait_for("job-one")
    assert heard_two.received == ["job-two"]
    assert heard_one.received == ["job-one"]


# Secrets


@pytest.mark.parametrize(
    "url",
    [
        "redis://:s3cret@127.0.0.1:6379/0",
        "redis://cron:s3cret@127.0.0.1:6379/0",
        "rediss://default:s3cret@redis.internal:6380/1",
        "redis://127.0.0.1:6379/0?password=s3cret",
        "unix://:s3cret@/run/redis.sock?db=0",
    ],
)
def test_the_password_is_never_in_repr_or_str(url: str) -> None:
    coordinator = RedisCoordinator(url, key_prefix="cronsvc")
    assert "s3cret" not in repr(coordinator)
    assert "s3cret" not in str(coordinator)


async def test_start_against_a_closed_port_is_refused_without_showing_the_password() -> None:
    port = free_port()
    coordinator = RedisCoordinator(f"redis://:s3cret@127.0.0.1:{port}/0")
    with capture_logs() as logs, pytest.raises(StartupRefused) as refused:
        await coordinator.start()
    message = str(refused.value)
    assert f"127.0.0.1:{port}" in message
    assert "s3cret" not in message
    assert "s3cret" not in repr(logs)
    await coordinator.aclose()


async def test_a_wrong_password_is_refused_without_showing_it(
    start_redis_server: Callable[..., RedisServer],
) -> None:
    server = start_redis_server(password="right-pass")
    coordinator = RedisCoordinator(f"redis://:wrong-pass@127.0.0.1:{server.port}/0")
    with pytest.raises(StartupRefused) as refused:
        await coordinator.start()
    assert "wrong-pass" not in str(refused.value)
    assert "right-pass" not in str(refused.value)


# Lifecycle


async def test_closing_twice_and_starting_twice_are_harmless(
    redis_url: str, redis_prefix: str
) -> None:
    coordinator = RedisCoordinator(redis_url, key_prefix=redis_prefix)
    await coordinator.start()
    await coordinator.start()
    await coordinator.ping()
    await coordinator.aclose()
    await coordinator.aclose()


async def test_a_failing_subscriber_does_not_cut_the_others_off(
    open_redis: Opener, redis_url: str, redis_prefix: str
) -> None:
    a = await open_redis(redis_url, redis_prefix)

    def broken(job_id: str) -> None:
        raise RuntimeError("subscriber bug")

    notices = Notices()
    a.subscribe_job_changes(broken)
    a.subscribe_job_changes(notices)
    with capture_logs() as logs:
        await a.publish_job_change("job-1")
        await notices.wait_for("job-1")
    assert [e["event"] for e in logs] == ["job_change_callback_failed"]


# Outages


def events(logs: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


async def logged(logs: Sequence[Mapping[str, Any]], name: str, within_s: float = 10.0) -> None:
    async with asyncio.timeout(within_s):
        while True:
            if events(logs, name):
                return
            await asyncio.sleep(0.02)


async def test_calls_fail_with_a_builtin_connection_error_while_redis_is_down(
    open_redis: Opener, start_redis_server: Callable[..., RedisServer]
) -> None:
    server = start_redis_server()
    a = await open_redis(server.url, "c1", connect_timeout_s=0.5, command_timeout_s=0.5)
    server.stop()

    calls: list[Callable[[], Awaitable[object]]] = [
        a.ping,
        lambda: a.try_lease_ticks([("job-a", tick(0))], TTL_S),
        lambda: a.publish_job_change("job-a"),
        lambda: a.try_lead("instance-a", TTL_S),
        lambda: a.resign("instance-a"),
        a.current_leader,
        lambda: a.heartbeat(instance("instance-a"), TTL_S),
        a.live_instances,
        lambda: a.forget_instance("instance-a"),
    ]
    for call in calls:
        async with asyncio.timeout(5):
            with pytest.raises(ConnectionError):
                await call()


async def test_notices_resume_after_a_redis_restart_with_one_resync_call(
    open_redis: Opener, start_redis_server: Callable[..., RedisServer]
) -> None:
    server = start_redis_server(password="s3cret")
    a = await open_redis(server.url, "c1", connect_timeout_s=0.5, command_timeout_s=0.5)
    notices = Notices()
    a.subscribe_job_changes(notices)
    cancels: list[list[str]] = []
    a.subscribe_cancels(lambda ids: cancels.append(list(ids)))

    with capture_logs() as logs:
        server.stop()
        await logged(logs, "coordinator_unavailable")
        await asyncio.sleep(1.0)  # several reconnect attempts fail meanwhile
        assert notices.received == []
        server.start()
        await notices.wait_for(RESYNC, within_s=10)

        b = await open_redis(server.url, "c1")
        await b.publish_cancel(["exec-after"])
        await b.publish_job_change("job-after")
        await notices.wait_for("job-after")

    assert notices.received == [RESYNC, "job-after"]
    assert cancels == [["exec-after"]]  # the cancel channel is subscribed again too
    assert len(events(logs, "coordinator_unavailable")) == 1
    assert len(events(logs, "coordinator_recovered")) == 1
    assert "s3cret" not in repr(logs)
    await eventually(lambda: _answers(a))


async def _answers(coordinator: RedisCoordinator) -> bool:
    with contextlib.suppress(ConnectionError):
        await coordinator.ping()
        return True
    return False


async def test_a_silent_notice_connection_is_given_up_and_replaced(
    open_redis: Opener,
    start_redis_server: Callable[..., RedisServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A network that drops packets sends no RST: the listener notices the
    silence by its own pings."""
    monkeypatch.setattr("cronsvc.coord.redis._KEEPALIVE_S", 0.2)
    server = start_redis_server()
    async with FreezingProxy(server.port) as proxy:
        a = await open_redis(proxy.url, "c1", connect_timeout_s=0.5, command_timeout_s=0.5)
        notices = Notices()
        a.subscribe_job_changes(notices)
        with capture_logs() as logs:
            with proxy.frozen():
                await logged(logs, "coordinator_unavailable")
            await notices.wait_for(RESYNC, within_s=10)
        b = await open_redis(server.url, "c1")
        await b.publish_job_change("job-after")
        await notices.wait_for("job-after")


async def test_redis_losing_its_data_lets_a_tick_be_leased_again_but_tokens_still_grow(
    open_redis: Opener, start_redis_server: Callable[..., RedisServer]
) -> None:
    """After FLUSHALL (or a restart without persistence) the tick lease is won
    again: the store's unique tick claim is the fence then. The fencing token
    must not go back, or a deposed leader's writes would look current."""
    server = start_redis_server()
    a = await open_redis(server.url, "c1")
    b = await open_redis(server.url, "c1")
    assert await a.try_lease_ticks([("job-a", tick(0))], TTL_S) == [True]
    assert await b.try_lease_ticks([("job-a", tick(0))], TTL_S) == [False]
    before = await a.try_lead("instance-a", TTL_S)
    assert before is not None

    server.flushall()

    assert await b.try_lease_ticks([("job-a", tick(0))], TTL_S) == [True]
    after = await b.try_lead("instance-b", TTL_S)
    assert after is not None and after > before
    assert await a.try_lead("instance-a", TTL_S) is None


async def test_round_trips_count_each_exchange_and_a_lease_batch_once(
    redis_url: str, redis_prefix: str
) -> None:
    coordinator = RedisCoordinator(redis_url, key_prefix=redis_prefix)
    await coordinator.start()
    try:
        before = coordinator.round_trips
        ticks = [(f"job-{n}", datetime(2026, 1, 1, tzinfo=UTC)) for n in range(200)]
        await coordinator.try_lease_ticks(ticks, ttl_s=60)
        assert coordinator.round_trips == before + 1  # 200 leases, one pipeline
        await coordinator.publish_job_change("job-1")
        assert coordinator.round_trips == before + 2
    finally:
        await coordinator.aclose()


async def test_answered_counts_the_exchanges_redis_answered_and_not_those_it_did_not(
    start_redis_server: Callable[[], RedisServer], open_redis: Opener
) -> None:
    server = start_redis_server()
    a = await open_redis(server.url, "c1", connect_timeout_s=0.5, command_timeout_s=0.5)
    before = a.answered
    await a.ping()
    await a.try_lease_ticks([("job-a", tick(0))], TTL_S)
    assert a.answered == before + 2

    server.stop()
    with pytest.raises(CoordinatorUnavailable):
        await a.ping()

    assert a.answered == before + 2
