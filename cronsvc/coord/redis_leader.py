"""The leader lease in Redis: `{p}:leader` holds `"{instance_id}:{fencing_token}"`
with a TTL; `{p}:leader-token` counts the tokens. Each step is one Lua script."""

from __future__ import annotations

import redis.asyncio as aredis
from redis.commands.core import AsyncScript

from cronsvc.coord.redis_link import RedisLink, started, ttl_ms

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


class RedisLeadership:
    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._held: dict[str, str] = {}  # instance id -> the lease value it set
        self._lead: AsyncScript | None = None
        self._resign: AsyncScript | None = None

    def attach(self, client: aredis.Redis) -> None:
        self._lead = client.register_script(_LEAD)
        self._resign = client.register_script(_RESIGN)

    def detach(self) -> None:
        self._lead = self._resign = None

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
