"""Backend URLs: which backend serves which URL, the file a SQLite URL names,
and URLs fit to print. The configuration checks URLs with these and `open_store`
and `open_coordinator` pick their backend with them, so the two agree. A leaf:
it imports nothing of cronsvc but its errors."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Final

from cronsvc.errors import ConfigError


class StoreBackend(enum.Enum):
    SQLITE = "sqlite"
    MONGODB = "mongodb"


class CoordinationBackend(enum.Enum):
    LOCAL = "local"
    REDIS = "redis"


_STORE_PREFIXES: Final[dict[str, StoreBackend]] = {
    "sqlite:": StoreBackend.SQLITE,
    "mongodb://": StoreBackend.MONGODB,
    "mongodb+srv://": StoreBackend.MONGODB,
}
_COORDINATION_PREFIXES: Final[dict[str, CoordinationBackend]] = {
    "redis://": CoordinationBackend.REDIS,
    "rediss://": CoordinationBackend.REDIS,
    "unix://": CoordinationBackend.REDIS,
}
_SQLITE_PREFIX = "sqlite:///"


def store_backend(url: str) -> StoreBackend:
    for prefix, backend in _STORE_PREFIXES.items():
        if url.startswith(prefix):
            return backend
    raise ConfigError(
        f"store.url: unsupported URL {redact_url(url)!r}; "
        "use sqlite:///PATH or mongodb://HOST:PORT/DATABASE"
    )


def coordination_backend(url: str) -> CoordinationBackend:
    if url == "local":  # the whole URL, not a prefix
        return CoordinationBackend.LOCAL
    for prefix, backend in _COORDINATION_PREFIXES.items():
        if url.startswith(prefix):
            return backend
    raise ConfigError(
        f"coordination.url: unsupported value {redact_url(url)!r}; "
        "use 'local' or redis://HOST:PORT/DB"
    )


def sqlite_path(url: str) -> Path:
    """`sqlite:///./x.db` is relative, `sqlite:////abs/x.db` absolute."""
    if not url.startswith(_SQLITE_PREFIX) or len(url) == len(_SQLITE_PREFIX):
        raise ConfigError(f"store.url: {url!r} is not a sqlite:///PATH URL")
    return Path(url[len(_SQLITE_PREFIX) :])


_SECRET_OPTIONS = ("password", "token", "secret", "authmechanismproperties")


def redact_url(url: str) -> str:
    """`url` with its password, and any query option that may hold a secret, masked."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url if "@" not in url and "password" not in url.lower() else "<not a URL>"
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, hosts = authority.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        authority = f"{user}:***@{hosts}" if colon else f"{user}@{hosts}"
    path, question, query = tail.partition("?")
    if question:
        options = []
        for option in query.split("&"):
            name, equals, _ = option.partition("=")
            secret = equals and any(word in name.lower() for word in _SECRET_OPTIONS)
            options.append(f"{name}=***" if secret else option)
        tail = f"{path}?{'&'.join(options)}"
    return f"{scheme}://{authority}{tail}"
