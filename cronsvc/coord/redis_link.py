"""The connection every part of `RedisCoordinator` shares: clients, keys, round
trips counted, and Redis's connection failures as `CoordinatorUnavailable`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from urllib.parse import parse_qsl, unquote, urlsplit

import redis.asyncio as aredis
import redis.exceptions as rexc
from redis.asyncio.retry import Retry
from redis.commands.core import AsyncScript

from cronsvc.errors import CoordinatorUnavailable
from cronsvc.urls import redact_url

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
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self.client: aredis.Redis | None = None  # None unless started
        self.sub_client: aredis.Redis | None = None  # the notice listener's

    def make_client(self, retry: Retry) -> aredis.Redis:
        client: aredis.Redis = aredis.from_url(
            self._url,
            decode_responses=True,
            socket_connect_timeout=self.connect_timeout_s,
            socket_timeout=self.command_timeout_s,
            socket_keepalive=True,
            retry=retry,
        )
        return client

    @property
    def redis(self) -> aredis.Redis:
        if self.client is None:
            raise RuntimeError(_UNSTARTED)
        return self.client

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @contextlib.contextmanager
    def translate(self, op: str) -> Iterator[None]:
        """Count one exchange; its connection failures become `CoordinatorUnavailable`."""
        self.round_trips += 1
        try:
            yield
        except _UNAVAILABLE as exc:
            raise CoordinatorUnavailable(
                f"{op}: Redis at {self.safe_url} unavailable: "
                f"{type(exc).__name__}: {self.scrub(str(exc))}"
            ) from exc

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
