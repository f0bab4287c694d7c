"""Notices through Redis pub/sub, on one listening connection: job changes on
`{p}:job-changes` ("<sender token> <job id>") and cancels on `{p}:cancels`
("<sender token> <id>,<id>,..."). A sender tells itself at once and skips its
echo. The listener never gives up: it logs `coordinator_unavailable` once,
resubscribes with backoff, logs `coordinator_recovered`, then calls every
job-change subscriber with `RESYNC`: notices sent during the outage are gone."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aredis
import redis.exceptions as rexc
import structlog
from redis.asyncio.client import PubSub

from cronsvc.coord import RESYNC, CancelCallback, JobChangeCallback
from cronsvc.coord.redis_link import RedisLink
from cronsvc.retry import backoff_delay

log = structlog.get_logger(__name__)
T = TypeVar("T")

# A connection silent this long is pinged, twice this long given up: a dead
# peer is noticed even when no RST ever arrives.
_KEEPALIVE_S = 5.0
_RECONNECT_BASE_S = 0.1
_RECONNECT_CAP_S = 2.0


class RedisNotices:
    def __init__(self, link: RedisLink, token: str) -> None:
        self._link = link
        self._token = token  # tells this coordinator's own notices apart
        self._channel = f"{link.prefix}:job-changes"
        self._cancel_channel = f"{link.prefix}:cancels"
        self._callbacks: list[JobChangeCallback] = []
        self._cancel_callbacks: list[CancelCallback] = []
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

    async def publish_job_change(self, job_id: str) -> None:
        self._dispatch(job_id)  # at once, Redis or not
        with self._link.translate("publish_job_change"):
            await self._link.redis.publish(self._channel, f"{self._token} {job_id}")

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
            await self._link.redis.publish(self._cancel_channel, f"{self._token} {','.join(ids)}")

    def subscribe_cancels(self, callback: CancelCallback) -> None:
        self._cancel_callbacks.append(callback)

    def _dispatch_cancel(self, ids: list[str]) -> None:
        _tell(self._cancel_callbacks, ids, "cancel_callback_failed", execution_ids=ids[:20])

    async def subscribe(self, client: aredis.Redis) -> PubSub:
        """A pub/sub connection, its subscription to both channels confirmed."""
        pubsub = client.pubsub()
        channels = (self._channel, self._cancel_channel)
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
                    self._dispatch(RESYNC)
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
                    if str(message["channel"]) == self._cancel_channel:
                        self._dispatch_cancel([i for i in payload.split(",") if i])
                    else:
                        self._dispatch(payload)
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
