"""The instance registry in Redis: `{p}:instance:{id}` holds an announcement
(JSON) with a TTL; `{p}:instances` is a sorted set of ids scored by when theirs
expires by Redis's clock (so skewed instances agree), so listing needs no SCAN."""

from __future__ import annotations

import json
import secrets

import redis.asyncio as aredis
from redis.commands.core import AsyncScript

from cronsvc.coord.redis_link import RedisLink, started, ttl_ms
from cronsvc.domain import InstanceInfo
from cronsvc.instants import parse_rfc3339, rfc3339

_HEARTBEAT = """
-- Announce an instance.
-- KEYS[1] = {p}:instance:{id}, KEYS[2] = {p}:instances
-- ARGV[1] = announcement JSON, ARGV[2] = TTL in ms, ARGV[3] = instance id.
-- Returns 1 when an earlier announcement was still there, else 0. One equal to
-- ARGV[1] (which carries a nonce of the call) was set by a retried attempt of
-- this call: whether one was there before it is unknown, so 0.
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


class RedisInstances:
    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._heartbeat: AsyncScript | None = None
        self._live_ids: AsyncScript | None = None

    def attach(self, client: aredis.Redis) -> None:
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._live_ids = client.register_script(_LIVE_IDS)

    def detach(self) -> None:
        self._heartbeat = self._live_ids = None

    async def heartbeat(self, info: InstanceInfo, ttl_s: float) -> bool:
        script = started(self._heartbeat)
        with self._link.translate("heartbeat"):
            renewed = await script(
                keys=[self._link.key("instance", info.id), self._link.key("instances")],
                args=[_dump_instance(info, beat=secrets.token_hex(4)), ttl_ms(ttl_s), info.id],
            )
        return bool(renewed)

    async def forget_instance(self, instance_id: str) -> None:
        with self._link.translate("forget_instance"):
            async with self._link.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._link.key("instance", instance_id))
                pipe.zrem(self._link.key("instances"), instance_id)
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
