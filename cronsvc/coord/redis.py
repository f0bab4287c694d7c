"""Redis coordination for a cluster of cronsvc processes (redis.asyncio).

Keys, all under the configured prefix `{p}` (several clusters can share one
Redis):

- `{p}:tick:{job_id}:{tick_ms}`: a tick lease (redis_leases.py).
- `{p}:leader`, `{p}:leader-token`: the leader lease and its fencing-token
  counter (redis_leader.py).
- `{p}:instance:{instance_id}`, `{p}:instances`: the instance registry
  (redis_instances.py).
- `{p}:job-changes`, `{p}:cancels`: the pub/sub channels of notices
  (redis_notices.py).

`RedisCoordinator` starts and closes the connection they share
(redis_link.py) and hands each call to its part.

Outages: every call raises `CoordinatorUnavailable` (a builtin
`ConnectionError`) while Redis cannot be reached, after one quick reconnect
attempt; callers retry or degrade. The notice listener never gives up: it logs
`coordinator_unavailable` once, resubscribes with backoff, logs
`coordinator_recovered` once, and then calls every subscriber with
`RESYNC` (`"*"`), because notices published during the outage are gone.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Sequence
from datetime import datetime

import redis.exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff

from cronsvc.coord import CancelCallback, JobChangeCallback
from cronsvc.coord.redis_instances import RedisInstances
from cronsvc.coord.redis_leader import RedisLeadership
from cronsvc.coord.redis_leases import RedisTickLeases
from cronsvc.coord.redis_link import RedisLink
from cronsvc.coord.redis_notices import RedisNotices
from cronsvc.domain import InstanceInfo
from cronsvc.errors import CoordinatorUnavailable, StartupRefused


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
        self._link = link = RedisLink(
            url,
            key_prefix=key_prefix,
            connect_timeout_s=connect_timeout_s,
            command_timeout_s=command_timeout_s,
        )
        token = secrets.token_hex(8)
        self._leases = RedisTickLeases(link, token)
        self._notices = RedisNotices(link, token)
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
        return await self._leases.try_lease_ticks(ticks, ttl_s)

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
