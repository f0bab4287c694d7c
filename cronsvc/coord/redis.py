"""Redis coordination for a cluster (redis.asyncio), keys under the prefix `{p}`:
`RedisCoordinator` owns the connection, tick leases, leader lease, instance registry and
notices, `RedisNotices` the notice listener. While Redis is unreachable every call raises
`CoordinatorUnavailable` after one quick reconnect attempt; callers retry or degrade."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import redis.asyncio as aredis
import redis.exceptions as rexc
import structlog
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.commands.core import AsyncScript

from cronsvc.coord import RESYNC, CancelCallback, Heartbeat, JobChangeCallback
from cronsvc.domain import InstanceInfo
from cronsvc.errors import CoordinatorUnavailable, StartupRefused
from cronsvc.instants import parse_rfc3339, rfc3339
from cronsvc.retry import backoff_delay
from cronsvc.urls import redact_url

log = structlog.get_logger(__name__)
T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

# Errors that mean "Redis is not reachable or not serving right now".
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    rexc.ConnectionError,  # includes AuthenticationError, BusyLoadingError
    rexc.TimeoutError,
    rexc.ReadOnlyError,  # failover in progress: we hit a replica
    rexc.ClusterDownError,  # MasterDownError
    rexc.TryAgainError,
    OSError,  # builtin ConnectionError and TimeoutError included
)

_UNSTARTED = "RedisCoordinator used before start() or after aclose()"

# A connection silent this long is pinged, twice this long given up: a dead
# peer is noticed even when no RST ever arrives.
_KEEPALIVE_S = 5.0
_RECONNECT_BASE_S = 0.1
_RECONNECT_CAP_S = 2.0

# The leader lease: `{p}:leader` holds `"{instance_id}:{fencing_token}"` with a
# TTL; `{p}:leader-token` counts the tokens. Each step is one Lua script.
# The lease value `v` belongs to instance `id` when it is exactly "{id}:{digits}".
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
-- KEYS[1] = {p}:leader, KEYS[2] = {p}:leader-token
-- ARGV[1] = instance id, ARGV[2] = TTL in ms,
-- ARGV[3] = the value this process last set ("" when it holds no lease).
-- Returns the fencing token, or nil (held by another, or a renewal found it lost).
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
-- KEYS[1] = {p}:leader; ARGV[1] = instance id. Returns 1 if released, else 0.
if owns(redis.call('GET', KEYS[1]), ARGV[1]) then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
)


# The instance registry: `{p}:instance:{id}` holds an announcement (JSON) with a
# TTL; `{p}:instances` is a sorted set of ids scored by when theirs expires by
# Redis's clock (so skewed instances agree), so listing needs no SCAN;
# `{p}:owners` the same for the instances that schedule their share of the jobs,
# and `{p}:loading` for those whose share is kept while they load (`Heartbeat`).
_HEARTBEAT = """
-- Announce an instance.
-- KEYS[1] = {p}:instance:{id}, KEYS[2] = {p}:instances, KEYS[3] = {p}:owners,
-- KEYS[4] = {p}:loading
-- ARGV[1] = announcement JSON, ARGV[2] = TTL in ms, ARGV[3] = instance id,
-- ARGV[4] = '1' when it schedules its share, 'L' while it loads its jobs
-- for the first time, else '0'.
-- Returns {renewed, owners, loading}: renewed is 1 when an earlier
-- announcement was still there, else 0. One equal to ARGV[1] (which carries
-- a nonce of the call) was set by a retried attempt of this call: whether one
-- was there before it is unknown, so 0. Owners are the ids unexpired in
-- KEYS[3]; loading those in KEYS[4], where an instance that loads enters only
-- while there is no owner, and stays while it keeps loading.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local was = redis.call('GET', KEYS[1])
local expires = now_ms + tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], expires, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now_ms)
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[3], expires, ARGV[3])
  redis.call('ZREM', KEYS[4], ARGV[3])
else
  redis.call('ZREM', KEYS[3], ARGV[3])
  if ARGV[4] == 'L' and (redis.call('ZSCORE', KEYS[4], ARGV[3])
      or redis.call('ZCARD', KEYS[3]) == 0) then
    redis.call('ZADD', KEYS[4], expires, ARGV[3])
  else
    redis.call('ZREM', KEYS[4], ARGV[3])
  end
end
local owners = redis.call('ZRANGE', KEYS[3], 0, -1)
local loading = redis.call('ZRANGE', KEYS[4], 0, -1)
local renewed = 0
if was and was ~= ARGV[1] then
  renewed = 1
end
return {renewed, owners, loading}
"""

_LIVE_IDS = """
-- The ids of unexpired announcements; drops expired ones from the index.
-- KEYS[1] = {p}:instances. No ARGV.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now_ms, '+inf')
"""

# A batch of tick leases in one command: a pipeline of SET NX and GET per tick
# costs the client two commands packed and two replies parsed per tick.
_LEASE_TICKS = """
-- KEYS = {p}:tick:{job_id}:{tick_ms}, one per tick; ARGV[1] = this
-- coordinator's token, ARGV[2] = TTL in ms.
-- Returns one character per key: '1' won, '0' another's. A key that already
-- holds ARGV[1] was won by this coordinator (a retried call whose first
-- attempt landed), so it answers '1' too.
local won = {}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) or redis.call('GET', key) == ARGV[1] then
    won[i] = '1'
  else
    won[i] = '0'
  end
end
return table.concat(won)
"""


class RedisLink:
    """`RedisCoordinator` opens and closes its clients."""

    def __init__(
        self, url: str, *, key_prefix: str, connect_timeout_s: float, command_timeout_s: float
    ) -> None:
        self._url = url
        self.safe_url = redact_url(url)
        self._secret = _password(url)
        self.prefix = key_prefix
        self.round_trips = 0
        self.answered = 0
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self.client: aredis.Redis | None = None  # None unless started
        self.sub_client: aredis.Redis | None = None  # the notice listener's

    def make_client(self, retry: Retry) -> aredis.Redis:
        return aredis.from_url(
            self._url,
            decode_responses=True,
            socket_connect_timeout=self.connect_timeout_s,
            socket_timeout=self.command_timeout_s,
            socket_keepalive=True,
            retry=retry,
        )

    @property
    def redis(self) -> aredis.Redis:
        if self.client is None:
            raise RuntimeError(_UNSTARTED)
        return self.client

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @contextlib.contextmanager
    def translate(self, op: str) -> Iterator[None]:
        """Count one exchange, and its answer; its connection failures become
        `CoordinatorUnavailable`."""
        self.round_trips += 1
        try:
            yield
        except _UNAVAILABLE as exc:
            raise CoordinatorUnavailable(
                f"{op}: Redis at {self.safe_url} unavailable: "
                f"{type(exc).__name__}: {self.scrub(str(exc))}"
            ) from exc
        self.answered += 1

    def scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text


def started(script: AsyncScript | None) -> AsyncScript:
    if script is None:
        raise RuntimeError(_UNSTARTED)
    return script


def ttl_ms(ttl_s: float) -> int:
    return max(1, round(ttl_s * 1000))


def _password(url: str) -> str:
    """To scrub from error messages."""
    parts = urlsplit(url)
    if parts.password:
        return unquote(parts.password)
    for name, value in parse_qsl(parts.query):
        if name.lower() == "password":
            return value
    return ""


class RedisCoordinator:
    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "cronsvc",
        connect_timeout_s: float = 2.0,
        command_timeout_s: float = 2.0,
    ) -> None:
        self._link = RedisLink(
            url,
            key_prefix=key_prefix,
            connect_timeout_s=connect_timeout_s,
            command_timeout_s=command_timeout_s,
        )
        self._token = secrets.token_hex(8)  # the value of the leases it wins
        self._notices = RedisNotices(self._link, self._token, self._dispatch, self._dispatch_cancel)
        self._callbacks: list[JobChangeCallback] = []
        self._cancel_callbacks: list[CancelCallback] = []
        self._held: dict[str, str] = {}  # instance id -> the leader lease value it set
        self._lease_ticks: AsyncScript | None = None
        self._lead: AsyncScript | None = None
        self._resign: AsyncScript | None = None
        self._heartbeat: AsyncScript | None = None
        self._live_ids: AsyncScript | None = None

    @property
    def round_trips(self) -> int:
        return self._link.round_trips

    @property
    def answered(self) -> int:
        return self._link.answered

    def __repr__(self) -> str:
        return f"RedisCoordinator({self._link.safe_url!r}, key_prefix={self._link.prefix!r})"

    async def start(self) -> None:
        link = self._link
        if link.client is not None:
            return
        try:
            # Commands retry once, quickly, to get past a pooled connection
            # that died; callers retry beyond that.
            client = link.make_client(Retry(ExponentialWithJitterBackoff(cap=0.2, base=0.02), 1))
            # The listener must see every disconnect (to resync after it), so
            # its client never reconnects behind our back.
            sub_client = link.make_client(Retry(NoBackoff(), 0))
        except ValueError as exc:  # a malformed URL
            raise StartupRefused(
                f"coordination.url {link.safe_url!r} cannot be used: {link.scrub(str(exc))}"
            ) from None
        try:
            if not await client.ping():
                raise rexc.ConnectionError("PING was not answered with PONG")
            # Loaded now, so the first batch of leases is one command, not a
            # NOSCRIPT bounce and a load.
            await client.script_load(_LEASE_TICKS)
            pubsub = await self._notices.subscribe(sub_client)
        except (rexc.RedisError, OSError) as exc:
            await sub_client.aclose()
            await client.aclose()
            raise StartupRefused(
                f"cannot use the Redis coordinator at {link.safe_url}: "
                f"{type(exc).__name__}: {link.scrub(str(exc))}"
            ) from None
        link.client, link.sub_client = client, sub_client
        self._lease_ticks = client.register_script(_LEASE_TICKS)
        self._lead = client.register_script(_LEAD)
        self._resign = client.register_script(_RESIGN)
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._live_ids = client.register_script(_LIVE_IDS)
        self._notices.listen(pubsub)

    async def aclose(self) -> None:
        await self._notices.aclose()
        link = self._link
        for client in (link.sub_client, link.client):
            if client is not None:
                with contextlib.suppress(rexc.RedisError, OSError):
                    await client.aclose()
        link.client = link.sub_client = None
        self._lease_ticks = self._lead = self._resign = None
        self._heartbeat = self._live_ids = None

    async def ping(self) -> None:
        with self._link.translate("ping"):
            answered = await self._link.redis.ping()
        if not answered:
            raise CoordinatorUnavailable(f"Redis at {self._link.safe_url} did not answer PING")

    async def try_lease_ticks(
        self, ticks: Sequence[tuple[str, datetime]], ttl_s: float
    ) -> list[bool]:
        if not ticks:
            return []
        # `{p}:tick:{job_id}:{tick_ms}` holds the winner's token, never deleted, only expired.
        link = self._link
        script = started(self._lease_ticks)
        keys = [link.key("tick", job_id, str((tick - _EPOCH) // _MS)) for job_id, tick in ticks]
        with link.translate("try_lease_ticks"):
            won: str = await script(keys=keys, args=[self._token, ttl_ms(ttl_s)])
        return [answer == "1" for answer in won]

    async def publish_job_change(self, job_id: str) -> None:
        self._dispatch(job_id)  # at once, Redis or not
        with self._link.translate("publish_job_change"):
            await self._link.redis.publish(self._notices.channel, f"{self._token} {job_id}")

    def subscribe_job_changes(self, callback: JobChangeCallback) -> None:
        self._callbacks.append(callback)

    def _dispatch(self, job_id: str) -> None:
        _tell(self._callbacks, job_id, "job_change_callback_failed", job_id=job_id)

    async def publish_cancel(self, execution_ids: Sequence[str]) -> None:
        ids = [i for i in execution_ids if i]
        if not ids:
            return
        self._dispatch_cancel(ids)
        with self._link.translate("publish_cancel"):
            channel = self._notices.cancel_channel
            await self._link.redis.publish(channel, f"{self._token} {','.join(ids)}")

    def subscribe_cancels(self, callback: CancelCallback) -> None:
        self._cancel_callbacks.append(callback)

    def _dispatch_cancel(self, ids: Sequence[str]) -> None:
        _tell(self._cancel_callbacks, ids, "cancel_callback_failed", execution_ids=ids[:20])

    async def try_lead(self, instance_id: str, ttl_s: float) -> int | None:
        script = started(self._lead)
        expected = self._held.get(instance_id, "")
        with self._link.translate("try_lead"):
            token = await script(
                keys=[self._link.key("leader"), self._link.key("leader-token")],
                args=[instance_id, ttl_ms(ttl_s), expected],
            )
        if token is None:
            self._held.pop(instance_id, None)
            return None
        self._held[instance_id] = f"{instance_id}:{token}"
        return int(token)

    async def resign(self, instance_id: str) -> None:
        script = started(self._resign)
        with self._link.translate("resign"):
            await script(keys=[self._link.key("leader")], args=[instance_id])
        self._held.pop(instance_id, None)

    async def current_leader(self) -> str | None:
        with self._link.translate("current_leader"):
            value = await self._link.redis.get(self._link.key("leader"))
        if value is None:
            return None
        return str(value).rpartition(":")[0] or None

    async def heartbeat(self, info: InstanceInfo, ttl_s: float) -> Heartbeat:
        script = started(self._heartbeat)
        link = self._link
        with link.translate("heartbeat"):
            renewed, owners, loading = await script(
                keys=[
                    link.key("instance", info.id),
                    link.key("instances"),
                    link.key("owners"),
                    link.key("loading"),
                ],
                args=[
                    _dump_instance(info, beat=secrets.token_hex(4)),
                    ttl_ms(ttl_s),
                    info.id,
                    "1" if info.jobs_owned is not None else "L" if info.loading else "0",
                ],
            )
        return Heartbeat(
            bool(renewed),
            frozenset(str(owner) for owner in owners),
            frozenset(str(instance) for instance in loading),
        )

    async def forget_instance(self, instance_id: str) -> None:
        with self._link.translate("forget_instance"):
            async with self._link.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._link.key("instance", instance_id))
                pipe.zrem(self._link.key("instances"), instance_id)
                pipe.zrem(self._link.key("owners"), instance_id)
                pipe.zrem(self._link.key("loading"), instance_id)
                await pipe.execute()

    async def live_instances(self) -> list[InstanceInfo]:
        script = started(self._live_ids)
        with self._link.translate("live_instances"):
            ids: list[str] = await script(keys=[self._link.key("instances")])
            if not ids:
                return []
            self._link.round_trips += 1
            values = await self._link.redis.mget([self._link.key("instance", i) for i in ids])
        live = [_load_instance(str(v)) for v in values if v is not None]
        return sorted(live, key=lambda info: (info.started_at, info.id))


def _dump_instance(info: InstanceInfo, *, beat: str) -> str:
    return json.dumps(
        {
            "id": info.id,
            "host": info.host,
            "version": info.version,
            "startedAt": rfc3339(info.started_at),
            "lastHeartbeat": rfc3339(info.last_heartbeat),
            "ticksFiredLastMinute": info.ticks_fired_last_minute,
            "jobsOwned": info.jobs_owned,
            "loading": info.loading,
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
        ticks_fired_last_minute=data.get("ticksFiredLastMinute", 0),
        jobs_owned=data.get("jobsOwned"),
        loading=data.get("loading", False),
    )


class RedisNotices:
    """The listener of job changes on `{p}:job-changes` ("<sender token> <job id>")
    and cancels on `{p}:cancels` ("<sender token> <id>,<id>,..."), on one
    connection. A sender tells itself at once and skips its echo. The listener
    never gives up: it logs `coordinator_unavailable` once, resubscribes with
    backoff, logs `coordinator_recovered`, then calls `on_change` with `RESYNC`
    (every job-change subscriber): notices sent during the outage are gone."""

    def __init__(
        self, link: RedisLink, token: str, on_change: JobChangeCallback, on_cancel: CancelCallback
    ) -> None:
        self._link = link
        self._token = token  # tells this coordinator's own notices apart
        self._on_change = on_change
        self._on_cancel = on_cancel
        self.channel = f"{link.prefix}:job-changes"
        self.cancel_channel = f"{link.prefix}:cancels"
        self._listener: asyncio.Task[None] | None = None

    def listen(self, pubsub: PubSub) -> None:
        """From now on, reconnecting through the link's `sub_client`."""
        self._listener = asyncio.create_task(self._listen(pubsub), name="coordinator-notices")
        self._listener.add_done_callback(self._listener_done)

    async def aclose(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.wait([listener])

    async def subscribe(self, client: aredis.Redis) -> PubSub:
        """A pub/sub connection, its subscription to both channels confirmed."""
        pubsub = client.pubsub()
        channels = (self.channel, self.cancel_channel)
        confirmed: set[str] = set()
        link = self._link
        try:
            async with asyncio.timeout(link.connect_timeout_s + link.command_timeout_s):
                await pubsub.subscribe(*channels)
                while True:
                    message = await pubsub.get_message(timeout=link.command_timeout_s)
                    if message is not None and message["type"] == "subscribe":
                        confirmed.add(str(message["channel"]))
                        if confirmed.issuperset(channels):
                            return pubsub
        except BaseException:
            await close_quietly(pubsub)
            raise

    async def _listen(self, pubsub: PubSub | None) -> None:
        down_since = 0.0
        attempt = 0
        try:
            while True:
                if pubsub is None:
                    attempt += 1
                    await asyncio.sleep(backoff_delay(attempt, _RECONNECT_BASE_S, _RECONNECT_CAP_S))
                    assert self._link.sub_client is not None
                    try:
                        pubsub = await self.subscribe(self._link.sub_client)
                    except (rexc.RedisError, OSError) as exc:
                        log.debug(
                            "coordinator_reconnect_failed",
                            url=self._link.safe_url,
                            attempt=attempt,
                            error=self._link.scrub(str(exc)),
                        )
                        continue
                    log.info(
                        "coordinator_recovered",
                        url=self._link.safe_url,
                        down_s=round(time.monotonic() - down_since, 3),
                    )
                    self._on_change(RESYNC)
                try:
                    await self._pump(pubsub)
                except (rexc.RedisError, OSError) as exc:
                    log.warning(
                        "coordinator_unavailable",
                        url=self._link.safe_url,
                        error=f"{type(exc).__name__}: {self._link.scrub(str(exc))}",
                    )
                    down_since, attempt = time.monotonic(), 0
                    await close_quietly(pubsub)
                    pubsub = None
        finally:
            if pubsub is not None:
                await close_quietly(pubsub)

    async def _pump(self, pubsub: PubSub) -> None:
        """Until the connection fails (raises)."""
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
                    if str(message["channel"]) == self.cancel_channel:
                        self._on_cancel([i for i in payload.split(",") if i])
                    else:
                        self._on_change(payload)
            elif now - last_heard > 2 * _KEEPALIVE_S:
                raise rexc.TimeoutError(f"no answer on the notice connection for {_KEEPALIVE_S}s")
            elif now - last_heard > _KEEPALIVE_S and now - last_ping > _KEEPALIVE_S:
                await pubsub.ping()
                last_ping = now

    def _listener_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "coordinator_listener_crashed", url=self._link.safe_url, exc_info=task.exception()
            )


def _tell(callbacks: Sequence[Callable[[T], None]], value: T, event: str, **fields: Any) -> None:
    for callback in list(callbacks):
        try:
            callback(value)
        except Exception:
            # One broken subscriber must not cut the others off.
            log.exception(event, **fields)


async def close_quietly(pubsub: PubSub) -> None:
    with contextlib.suppress(rexc.RedisError, OSError):
        # Typed through a variable: redis-py before 8.2 leaves `aclose` untyped.
        close: Callable[[], Awaitable[None]] = pubsub.aclose
        await close()
