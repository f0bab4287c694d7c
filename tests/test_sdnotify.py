"""systemd readiness and watchdog notifications, read from a real datagram
socket, from the module and from a real `cronsvc serve` process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from cronsvc.sdnotify import Notifier
from tests.fakes import free_port
from tests.processes import CronsvcProcess, write_config


@pytest.fixture
def listener() -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket where systemd would listen, at a short path."""
    with tempfile.TemporaryDirectory(prefix="sd") as directory:
        path = os.path.join(directory, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.setblocking(False)
        try:
            yield path, sock
        finally:
            sock.close()


async def receive(sock: socket.socket, within_s: float = 20.0) -> str:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(within_s):
        data = await loop.sock_recv(sock, 4096)
    return data.decode()


async def test_notify_sends_the_fields_as_one_datagram(
    listener: tuple[str, socket.socket],
) -> None:
    path, sock = listener
    Notifier({"NOTIFY_SOCKET": path}).notify("READY=1", "STATUS=serving")
    assert await receive(sock, 5) == "READY=1\nSTATUS=serving"


async def test_an_abstract_socket_name_is_understood() -> None:
    name = f"cronsvc-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.setblocking(False)
        Notifier({"NOTIFY_SOCKET": "@" + name}).notify("READY=1")
        assert await receive(sock, 5) == "READY=1"


def test_without_systemd_nothing_is_sent_and_nothing_fails() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_s is None
    notifier.notify("READY=1")


def test_a_missing_listener_is_not_an_error(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    notifier.notify("READY=1")
    notifier.notify("STOPPING=1")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_the_watchdog_interval_is_read_from_the_environment(
    env: dict[str, str], expected: float | None
) -> None:
    assert Notifier({"NOTIFY_SOCKET": "/x", **env}).watchdog_s == expected


@pytest.mark.e2e
async def test_a_served_process_says_ready_once_it_serves_pings_the_watchdog_and_says_stopping(
    tmp_path: Path, listener: tuple[str, socket.socket]
) -> None:
    path, sock = listener
    port = free_port()
    config = write_config(tmp_path / "config.toml", port, tmp_path / "cronsvc.db")
    process = CronsvcProcess(
        config_path=config,
        port=port,
        log_path=tmp_path / "cronsvc.log",
        env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"},
    )
    await process.start(wait=False)
    try:
        ready = await receive(sock)
        assert ready.splitlines()[0] == "READY=1"
        # Ready means serving: the API answers at once.
        async with aiohttp.ClientSession() as session, session.get(f"{process.url}/readyz") as r:
            assert r.status == 200
        assert [await receive(sock) for _ in range(3)] == ["WATCHDOG=1"] * 3
        assert await process.stop(signal.SIGTERM) == 0
        messages = []
        while (message := await receive(sock)) != "STOPPING=1":
            messages.append(message)
        assert set(messages) <= {"WATCHDOG=1"}
    finally:
        await process.stop(signal.SIGKILL)
