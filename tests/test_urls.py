"""Which backend serves which URL, decided in one place that config, store
and coordination share."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cronsvc.coord import open_coordinator
from cronsvc.errors import ConfigError
from cronsvc.store import open_store
from cronsvc.urls import (
    CoordinationBackend,
    StoreBackend,
    coordination_backend,
    sqlite_path,
    store_backend,
)


@pytest.mark.parametrize(
    ("url", "backend"),
    [
        ("sqlite:///./cronsvc.db", StoreBackend.SQLITE),
        ("sqlite:////var/lib/cronsvc/x.db", StoreBackend.SQLITE),
        ("sqlite:relative.db", StoreBackend.SQLITE),  # then refused by sqlite_path
        ("mongodb://db:27017/cronsvc", StoreBackend.MONGODB),
        ("mongodb+srv://cluster.example.org/cronsvc", StoreBackend.MONGODB),
    ],
)
def test_a_store_url_names_its_backend(url: str, backend: StoreBackend) -> None:
    assert store_backend(url) is backend


@pytest.mark.parametrize(
    "url", ["postgres://db/cronsvc", "mongodb:db", "MONGODB://db/cronsvc", "", "cronsvc.db"]
)
def test_a_store_url_no_backend_serves_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^store\.url: unsupported URL"):
        store_backend(url)


@pytest.mark.parametrize(
    ("url", "backend"),
    [
        ("local", CoordinationBackend.LOCAL),
        ("redis://127.0.0.1:6379/0", CoordinationBackend.REDIS),
        ("rediss://redis.internal:6380/1", CoordinationBackend.REDIS),
        ("unix:///run/redis.sock", CoordinationBackend.REDIS),
    ],
)
def test_a_coordination_url_names_its_backend(url: str, backend: CoordinationBackend) -> None:
    assert coordination_backend(url) is backend


@pytest.mark.parametrize("url", ["localhost", "Local", "zookeeper://x", "redis:x", ""])
def test_a_coordination_url_no_backend_serves_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^coordination\.url: unsupported value"):
        coordination_backend(url)


def test_refusals_never_show_a_password() -> None:
    with pytest.raises(ConfigError) as store_refusal:
        store_backend("postgres://admin:s3cr3t@db/cronsvc")
    with pytest.raises(ConfigError) as coordination_refusal:
        coordination_backend("memcached://admin:s3cr3t@cache:11211")
    assert "s3cr3t" not in str(store_refusal.value)
    assert "s3cr3t" not in str(coordination_refusal.value)


async def test_opening_refuses_what_the_configuration_refuses() -> None:
    with pytest.raises(ConfigError, match=r"^store\.url"):
        await open_store("postgres://db/cronsvc")
    with pytest.raises(ConfigError, match=r"^coordination\.url"):
        open_coordinator("zookeeper://x", lock_path=None)


@pytest.mark.parametrize(
    ("url", "path"),
    [("sqlite:///./x.db", Path("./x.db")), ("sqlite:////abs/x.db", Path("/abs/x.db"))],
)
def test_a_sqlite_url_names_its_file(url: str, path: Path) -> None:
    assert sqlite_path(url) == path


@pytest.mark.parametrize("url", ["sqlite:///", "sqlite:x.db", "sqlite://x.db"])
def test_a_sqlite_url_without_a_path_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^store\.url: .* is not a sqlite:///PATH URL"):
        sqlite_path(url)


@pytest.mark.parametrize("first", ["cronsvc.store.mongo", "cronsvc.coord.redis", "cronsvc.config"])
def test_each_module_imports_first_without_a_circle(first: str) -> None:
    """The URL module is a leaf: configuration and backends import it, and
    any of them can be the first one imported."""
    script = (
        f"import sys, {first}\n"
        "import cronsvc.urls\n"
        "assert 'cronsvc.config' not in sys.modules or "
        f"{first!r} == 'cronsvc.config', sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
