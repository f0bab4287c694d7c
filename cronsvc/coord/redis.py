"""Redis coordination for a cluster of cronsvc processes (redis.asyncio).

Keys, all under the configured prefix `{p}` (several clusters can share one
Redis):

- `{p}:tick:{job_id}:{tick_ms}`: a tick lease, holding the winning instance's
  random token; expires after the lease TTL and is never deleted.
- `{p}:leader`: the leader lease, `"{instance_id}:{fencing_token}"`, with a TTL.
- `{p}:leader-token`: the fencing-token counter (see `_LEAD`).
- `{p}:instance:{instance_id}`: an instance's announcement (JSON), with a TTL.
- `{p}:instances`: sorted set of instance ids scored by the Unix ms at which
  their announcement expires (Redis's clock), so listing needs no SCAN.
- `{p}:job-changes`: the pub/sub channel of job-change notices, each "<sender
  token> <job id>" so a sender skips its own echo (it has told itself already).
- `{p}:cancels`: the pub/sub channel of cancel notices, each "<sender token>
  <execution id>,<execution id>,...", echoes skipped the same way. One
  connection listens to both channels.

Outages: every call raises `CoordinatorUnavailable` (a builtin
`ConnectionError`) while Redis cannot be reached, after one quick reconnect
attempt; callers retry or degrade. The notice listener never gives up: it logs
`coordinator_unavailable` once, resubscribes with backoff, logs
`coordinator_recovered` once, and then calls every subscriber with
`RESYNC` (`"*"`), because notices published during the outage are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis.asyncio as aredis
import redis.exceptions as rexc
import structlog
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.commands.core import AsyncScript

from cronsvc.coord import RESYNC, CancelCallback, JobChangeCallback
from cronsvc.domain import InstanceInfo
from cronsvc.errors import CoordinatorUnavailable, StartupRefused
from cronsvc.instants import parse_rfc3339, rfc3339
from cronsvc.retry import backoff_delay
from cronsvc.urls import redact_url

log = structlog.get_logger(__name__)

"""The job id passed to subscribers after the notice listener reconnects:
anything may have changed while notices could not arrive; resync everything."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_KEEPALIVE_S = 5.0
"""The listener pings a pub/sub connection silent for this long and gives it
up (reconnecting) after twice this long, so a dead peer is noticed even when
no RST ever arrives."""
_RECONNECT_BASE_S = 0.1
_RECONNECT_CAP_S = 2.0

# Errors that mean "Redis is not reachable or not serving right now".
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    rexc.ConnectionError,  # includes AuthenticationError, BusyLoadingError
    rexc.TimeoutError,
    rexc.ReadOnlyError,  # failover in progress: we hit a replica
    rexc.ClusterDownError,  # MasterDownError
    rexc.TryAgainError,
    OSError,  # builtin ConnectionError and TimeoutError included
)

# Ownership check shared by the leader scripts: the lease value `v` belongs to
# instance `id` when it is exactly "{id}:{digits}".
_OWNS = """
local function owns(v, id)
  if not v then return false end
  local head = id .. ':'
  return string.sub(v, 1, #head) == head and string.match(string.sub(v, #head + 1), '^%d+$') ~= nil
end
"""

_LEAD = (
    _OWNS
    + """
-- Acquire or renew the leader lease.
-- KEYS[1] = {p}:leader, KEYS[2] = {p}:leader-token
-- ARGV[1] = instance id, ARGV[2] = TTL in ms,
-- ARGV[3] = the value this process last set ("" when it holds no lease).
-- Returns the fencing token, or nil when another instance holds the lease or
-- a renewal (ARGV[3] set) finds the lease lost.
-- A new token is INCR of the counter, raised to Redis's clock in ms when
-- that is larger, so tokens keep growing even if Redis loses its data.
local v = redis.call('GET', KEYS[1])
if ARGV[3] ~= '' and v ~= ARGV[3] then
  return nil
end
if owns(v, ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(string.sub(v, #ARGV[1] + 2))
end
if v then
  return nil
end
local token = redis.call('INCR', KEYS[2])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if token < now_ms then
  token = now_ms
  redis.call('SET', KEYS[2], string.format('%d', token))
end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. string.format('%d', token), 'PX', ARGV[2])
return token
"""
)

_RESIGN = (
    _OWNS
    + """
-- Release the leader lease if this instance holds it.
-- KEYS[1] = {p}:leader; ARGV[1] = instance id. Returns 1 if released, else 0.
if owns(redis.call('GET', KEYS[1]), ARGV[1]) then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
)

_HEARTBEAT = """
-- Announce an instance.
-- KEYS[1] = {p}:instance:{id}, KEYS[2] = {p}:instances
-- ARGV[1] = announcement JSON, ARGV[2] = TTL in ms, ARGV[3] = instance id.
-- Returns 1 when an earlier announcement was still there, else 0. One equal
-- to ARGV[1] (which carries a nonce of the call) is this very announcement,
-- set by an attempt whose reply was lost (a client retry): whether one was
-- there before that attempt is unknown, so 0.
-- The index score is the expiry by Redis's clock, so instances with skewed
-- clocks agree on who is live.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local was = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[2]), ARGV[3])
if was and was ~= ARGV[1] then
  return 1
end
return 0
"""

_LIVE_IDS = """
-- The ids of unexpired announcements; drops expired ones from the index.
-- KEYS[1] = {p}:instances. No ARGV.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now_ms, '+inf')
"""


class RedisCoordinator:
    """Leases, notices, leadership and heartbeats in a shared Redis.

    Tick leases are re-entrant per coordinator: a repeated call for a lease
    this instance already holds reports True again, which makes a retry after a
    lost reply safe. After the notice listener reconnects, each subscriber is
    called with `RESYNC` ("*"): resync everything.
    """

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "cronsvc",
        connect_timeout_s: float = 2.0,
        command_timeout_s: float = 2.0,
    ) -> None:
        self._url = url
        self._safe_url = _safe_url(url)
        self._secret = _password(url)
        self._prefix = key_prefix
        self._round_trips = 0
        self._connect_timeout_s = connect_timeout_s
        self._command_timeout_s = command_timeout_s
        self._token = secrets.token_hex(8)
        self._channel = f"{key_prefix}:job-changes"
        self._cancel_channel = f"{key_prefix}:cancels"
        self._callbacks: list[JobChangeCallback] = []
        self._cancel_callbacks: list[CancelCallback] = []
        self._held: dict[str, str] = {}
        """instance id -> the leader lease value it set, while it leads."""
        self._client: aredis.Redis | None = None
        self._sub_client: aredis.Redis | None = None
        self._listener: asyncio.Task[None] | None = None
        self._lead: AsyncScript | None = None
        self._resign: AsyncScript | None = None
        self._heartbeat: AsyncScript | None = None
        self._live_ids: AsyncScript | None = None

    @property
    def round_trips(self) -> int:
        return self._round_trips

    def __repr__(self) -> str:
        return f"RedisCoordinator({self._safe_url!r}, key_prefix={self._prefix!r})"

    async def start(self) -> None:
        if self._client is not None:
            return
        try:
            # Commands retry once, quickly, to get past a pooled connection
            # that died; callers retry beyond that.
            client = self._make_client(Retry(ExponentialWithJitterBackoff(cap=0.2, base=0.02), 1))
            # The listener must see every disconnect (to resync after it), so
            # its client never reconnects behind our back.
            sub_client = self._make_client(Retry(NoBackoff(), 0))
        except ValueError as exc:  # a malformed URL
            raise StartupRefused(
                f"coordination.url {self._safe_url!r} cannot be used: {self._scrub(str(exc))}"
            ) from None
        try:
            if not await client.ping():
                raise rexc.ConnectionError("PING was not answered with PONG")
            pubsub = await self._subscribe(sub_client)
        except (rexc.RedisError, OSError) as exc:
            await sub_client.aclose()
            await client.aclose()
            raise StartupRefused(
                f"cannot use the Redis coordinator at {self._safe_url}: "
                f"{type(exc).__name__}: {self._scrub(str(exc))}"
            ) from None
        self._client, self._sub_client = client, sub_client
        self._lead = client.register_script(_LEAD)
        self._resign = client.register_script(_RESIGN)
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._live_ids = client.register_script(_LIVE_IDS)
        self._listener = asyncio.create_task(self._listen(pubsub), name="coordinator-notices")
        self._listener.add_done_callback(self._listener_done)

    def _make_client(self, retry: Retry) -> aredis.Redis:
        client: aredis.Redis = aredis.from_url(
            self._url,
            decode_responses=True,
            socket_connect_timeout=self._connect_timeout_s,
            socket_timeout=self._command_timeout_s,
            socket_keepalive=True,
            retry=retry,
        )
        return client

    async def aclose(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.wait([listener])
        for client in (self._sub_client, self._client):
            if client is not None:
                with contextlib.suppress(rexc.RedisError, OSError):
                    await client.aclose()
        self._client = self._sub_client = None
        self._lead = self._resign = self._heartbeat = self._live_ids = None

    @property
    def _redis(self) -> aredis.Redis:
        if self._client is None:
            raise RuntimeError("RedisCoordinator used before start() or after aclose()")
        return self._client

    def _script(self, script: AsyncScript | None) -> AsyncScript:
        if script is None:
            raise RuntimeError("RedisCoordinator used before start() or after aclose()")
        return script

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    @contextlib.contextmanager
    def _translate(self, op: str) -> Iterator[None]:
        """Count one exchange with Redis; re-raise its connection failures as a
        builtin ConnectionError."""
        self._round_trips += 1
        try:
            yield
        except _UNAVAILABLE as exc:
            raise CoordinatorUnavailable(
                f"{op}: Redis at {self._safe_url} unavailable: "
                f"{type(exc).__name__}: {self._scrub(str(exc))}"
            ) from exc

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    # Tick leases

    async def try_lease_ticks(
        self, ticks: Sequence[tuple[str, datetime]], ttl_s: float
    ) -> list[bool]:
        if not ticks:
            return []
        ttl_ms = _ttl_ms(ttl_s)
        keys = [self._key("tick", job_id, str((tick - _EPOCH) // _MS)) for job_id, tick in ticks]
        with self._translate("try_lease_ticks"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    # The GET makes the answer right even when this pipeline is
                    # a retry whose first attempt's SET did land.
                    pipe.set(key, self._token, nx=True, px=ttl_ms)
                    pipe.get(key)
                replies: list[Any] = await pipe.execute()
        return [
            replies[2 * i] is True or replies[2 * i + 1] == self._token for i in range(len(keys))
        ]

    # Notices: job changes, and the listener both kinds of notice share

    async def publish_job_change(self, job_id: str) -> None:
        # This instance hears of its own changes at once, Redis or not; the
        # message carries our token so the listener skips its echo.
        self._dispatch(job_id)
        with self._translate("publish_job_change"):
            await self._redis.publish(self._channel, f"{self._token} {job_id}")

    def subscribe_job_changes(self, callback: JobChangeCallback) -> None:
        self._callbacks.append(callback)

    async def _subscribe(self, client: aredis.Redis) -> PubSub:
        """A pub/sub connection subscribed to both notice channels, confirmed."""
        pubsub = client.pubsub()
        channels = (self._channel, self._cancel_channel)
        confirmed: set[str] = set()
        try:
            async with asyncio.timeout(self._connect_timeout_s + self._command_timeout_s):
                await pubsub.subscribe(*channels)
                while True:
                    message = await pubsub.get_message(timeout=self._command_timeout_s)
                    if message is not None and message["type"] == "subscribe":
                        confirmed.add(str(message["channel"]))
                        if confirmed.issuperset(channels):
                            return pubsub
        except BaseException:
            await _close_quietly(pubsub)
            raise

    async def _listen(self, pubsub: PubSub | None) -> None:
        down_since = 0.0
        attempt = 0
        try:
            while True:
                if pubsub is None:
                    attempt += 1
                    await asyncio.sleep(backoff_delay(attempt, _RECONNECT_BASE_S, _RECONNECT_CAP_S))
                    assert self._sub_client is not None
                    try:
                        pubsub = await self._subscribe(self._sub_client)
                    except (rexc.RedisError, OSError) as exc:
                        log.debug(
                            "coordinator_reconnect_failed",
                            url=self._safe_url,
                            attempt=attempt,
                            error=self._scrub(str(exc)),
                        )
                        continue
                    log.info(
                        "coordinator_recovered",
                        url=self._safe_url,
                        down_s=round(time.monotonic() - down_since, 3),
                    )
                    self._dispatch(RESYNC)
                try:
                    await self._pump(pubsub)
                except (rexc.RedisError, OSError) as exc:
                    log.warning(
                        "coordinator_unavailable",
                        url=self._safe_url,
                        error=f"{type(exc).__name__}: {self._scrub(str(exc))}",
                    )
                    down_since, attempt = time.monotonic(), 0
                    await _close_quietly(pubsub)
                    pubsub = None
        finally:
            if pubsub is not None:
                await _close_quietly(pubsub)

    async def _pump(self, pubsub: PubSub) -> None:
        """Deliver notices until the connection fails (raises)."""
        last_heard = last_ping = time.monotonic()
        while True:
            message = await pubsub.get_message(timeout=1.0)
            now = time.monotonic()
            if message is not None:
                last_heard = now
                if message["type"] == "message":
                    sender, _, payload = str(message["data"]).rpartition(" ")
                    if sender == self._token:
                        continue
                    if str(message["channel"]) == self._cancel_channel:
                        self._dispatch_cancel([i for i in payload.split(",") if i])
                    else:
                        self._dispatch(payload)
            elif now - last_heard > 2 * _KEEPALIVE_S:
                raise rexc.TimeoutError(f"no answer on the notice connection for {_KEEPALIVE_S}s")
            elif now - last_heard > _KEEPALIVE_S and now - last_ping > _KEEPALIVE_S:
                await pubsub.ping()
                last_ping = now

    def _dispatch(self, job_id: str) -> None:
        for callback in list(self._callbacks):
            try:
                callback(job_id)
            except Exception:
                # One broken subscriber must not cut the others off.
                log.exception("job_change_callback_failed", job_id=job_id)

    def _listener_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("coordinator_listener_crashed", url=self._safe_url, exc_info=task.exception())

    # Cancel notices

    async def publish_cancel(self, execution_ids: Sequence[str]) -> None:
        ids = [i for i in execution_ids if i]
        if not ids:
            return
        # As for job changes: this instance acts at once, and skips the echo.
        self._dispatch_cancel(ids)
        with self._translate("publish_cancel"):
            await self._redis.publish(self._cancel_channel, f"{self._token} {','.join(ids)}")

    def subscribe_cancels(self, callback: CancelCallback) -> None:
        self._cancel_callbacks.append(callback)

    def _dispatch_cancel(self, execution_ids: list[str]) -> None:
        for callback in list(self._cancel_callbacks):
            try:
                callback(execution_ids)
            except Exception:
                log.exception("cancel_callback_failed", execution_ids=execution_ids[:20])

    # Leadership

    async def try_lead(self, instance_id: str, ttl_s: float) -> int | None:
        script = self._script(self._lead)
        expected = self._held.get(instance_id, "")
        with self._translate("try_lead"):
            token = await script(
                keys=[self._key("leader"), self._key("leader-token")],
                args=[instance_id, _ttl_ms(ttl_s), expected],
            )
        if token is None:
            self._held.pop(instance_id, None)
            return None
        self._held[instance_id] = f"{instance_id}:{token}"
        return int(token)

    async def resign(self, instance_id: str) -> None:
        script = self._script(self._resign)
        with self._translate("resign"):
            await script(keys=[self._key("leader")], args=[instance_id])
        self._held.pop(instance_id, None)

    async def current_leader(self) -> str | None:
        with self._translate("current_leader"):
            value = await self._redis.get(self._key("leader"))
        if value is None:
            return None
        return str(value).rpartition(":")[0] or None

    # Heartbeats

    async def heartbeat(self, info: InstanceInfo, ttl_s: float) -> bool:
        script = self._script(self._heartbeat)
        with self._translate("heartbeat"):
            renewed = await script(
                keys=[self._key("instance", info.id), self._key("instances")],
                args=[_dump_instance(info, beat=secrets.token_hex(4)), _ttl_ms(ttl_s), info.id],
            )
        return bool(renewed)

    async def forget_instance(self, instance_id: str) -> None:
        with self._translate("forget_instance"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._key("instance", instance_id))
                pipe.zrem(self._key("instances"), instance_id)
                await pipe.execute()

    async def live_instances(self) -> list[InstanceInfo]:
        script = self._script(self._live_ids)
        with self._translate("live_instances"):
            ids: list[str] = await script(keys=[self._key("instances")])
            if not ids:
                return []
            self._round_trips += 1
            values = await self._redis.mget([self._key("instance", i) for i in ids])
        live = [_load_instance(str(v)) for v in values if v is not None]
        return sorted(live, key=lambda info: (info.started_at, info.id))

    async def ping(self) -> None:
        with self._translate("ping"):
            answered = await self._redis.ping()
        if not answered:
            raise CoordinatorUnavailable(f"Redis at {self._safe_url} did not answer PING")


async def _close_quietly(pubsub: PubSub) -> None:
    with contextlib.suppress(rexc.RedisError, OSError):
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py


def _ttl_ms(ttl_s: float) -> int:
    return max(1, round(ttl_s * 1000))


def _dump_instance(info: InstanceInfo, *, beat: str) -> str:
    """`beat` tells one heartbeat call from another (and from its retries)."""
    return json.dumps(
        {
            "id": info.id,
            "host": info.host,
            "version": info.version,
            "startedAt": rfc3339(info.started_at),
            "lastHeartbeat": rfc3339(info.last_heartbeat),
            "beat": beat,
        }
    )


def _load_instance(raw: str) -> InstanceInfo:
    data = json.loads(raw)
    return InstanceInfo(
        id=data["id"],
        host=data["host"],
        version=data["version"],
        started_at=parse_rfc3339(data["startedAt"]),
        last_heartbeat=parse_rfc3339(data["lastHeartbeat"]),
    )


def _safe_url(url: str) -> str:
    return redact_url(url)


def _password(url: str) -> str:
    """The password `url` carries, or "" (to scrub it from error messages)."""
    parts = urlsplit(url)
    if parts.password:
        return unquote(parts.password)
    for name, value in parse_qsl(parts.query):
        if name.lower() == "password":
            return value
    return ""
