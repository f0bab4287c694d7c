"""Redis coordination for a cluster (redis.asyncio). `RedisCoordinator` opens the
connection its parts share (redis_link.py), owns the tick leases, and hands
other calls to the leader lease (redis_leader.py), the instance registry
(redis_instances.py) and the notices (redis_notices.py). Keys are under the
prefix `{p}`; a tick lease is `{p}:tick:{job_id}:{tick_ms}`, holding the
winner's token (``SET NX PX``), never deleted, only expired. While Redis cannot
be reached every call raises `CoordinatorUnavailable` (a `ConnectionError`)
after one quick reconnect attempt; callers retry or degrade.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff

from cronsvc.coord import CancelCallback, JobChangeCallback
from cronsvc.coord.redis_instances import RedisInstances
from cronsvc.coord.redis_leader import RedisLeadership
from cronsvc.coord.redis_link import RedisLink, ttl_ms
from cronsvc.coord.redis_notices import RedisNotices
from cronsvc.domain import InstanceInfo
from cronsvc.errors import CoordinatorUnavailable, StartupRefused

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class RedisCoordinator:
    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "cronsvc",
        connect_timeout_s: float = 2.0,
        command_timeout_s: float = 2.0,
    ) -> None:
        self._link = link = RedisLink(
            url,
            key_prefix=key_prefix,
            connect_timeout_s=connect_timeout_s,
            command_timeout_s=command_timeout_s,
        )
        self._token = secrets.token_hex(8)  # the value of the leases it wins
        self._notices = RedisNotices(link, self._token)
        self._leadership = RedisLeadership(link)
        self._instances = RedisInstances(link)

    @property
    def round_trips(self) -> int:
        return self._link.round_trips

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
            pubsub = await self._notices.subscribe(sub_client)
        except (rexc.RedisError, OSError) as exc:
            await sub_client.aclose()
            await client.aclose()
            raise StartupRefused(
                f"cannot use the Redis coordinator at {link.safe_url}: "
                f"{type(exc).__name__}: {link.scrub(str(exc))}"
            ) from None
        link.client, link.sub_client = client, sub_client
        self._leadership.attach(client)
        self._instances.attach(client)
        self._notices.listen(pubsub)

    async def aclose(self) -> None:
        await self._notices.aclose()
        link = self._link
        for client in (link.sub_client, link.client):
            if client is not None:
                with contextlib.suppress(rexc.RedisError, OSError):
                    await client.aclose()
        link.client = link.sub_client = None
        self._leadership.detach()
        self._instances.detach()

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
        link = self._link
        lease_ms = ttl_ms(ttl_s)
        keys = [link.key("tick", job_id, str((tick - _EPOCH) // _MS)) for job_id, tick in ticks]
        with link.translate("try_lease_ticks"):
            async with link.redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    # The GET makes the answer right even when this pipeline is
                    # a retry whose first attempt's SET did land.
                    pipe.set(key, self._token, nx=True, px=lease_ms)
                    pipe.get(key)
                replies: list[Any] = await pipe.execute()
        return [
            replies[2 * i] is True or replies[2 * i + 1] == self._token for i in range(len(keys))
        ]

    async def publish_job_change(self, job_id: str) -> None:
        await self._notices.publish_job_change(job_id)

    def subscribe_job_changes(self, callback: JobChangeCallback) -> None:
        self._notices.subscribe_job_changes(callback)

    async def publish_cancel(self, execution_ids: Sequence[str]) -> None:
        await self._notices.publish_cancel(execution_ids)

    def subscribe_cancels(self, callback: CancelCallback) -> None:
        self._notices.subscribe_cancels(callback)

    async def try_lead(self, instance_id: str, ttl_s: float) -> int | None:
        return await self._leadership.try_lead(instance_id, ttl_s)

    async def resign(self, instance_id: str) -> None:
        await self._leadership.resign(instance_id)

    async def current_leader(self) -> str | None:
        return await self._leadership.current_leader()

    async def heartbeat(self, info: InstanceInfo, ttl_s: float) -> bool:
        return await self._instances.heartbeat(info, ttl_s)

    async def forget_instance(self, instance_id: str) -> None:
        await self._instances.forget_instance(instance_id)

    async def live_instances(self) -> list[InstanceInfo]:
        return await self._instances.live_instances()
