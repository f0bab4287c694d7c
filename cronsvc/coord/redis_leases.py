"""Tick leases in Redis: `{p}:tick:{job_id}:{tick_ms}`, holding the winning
instance's token, set with ``SET NX PX``; each expires after the lease TTL
and is never deleted.

Re-entrant per coordinator: asking again for a lease this instance already
holds reports True again, which makes a retry after a lost reply safe."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cronsvc.coord.redis_link import RedisLink, ttl_ms

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class RedisTickLeases:
    """The coordinator's `try_lease_ticks`."""

    def __init__(self, link: RedisLink, token: str) -> None:
        self._link = link
        self._token = token
        """This coordinator's: the value of the leases it wins."""

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
