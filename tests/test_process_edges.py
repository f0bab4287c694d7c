"""End to end through real `cronsvc serve` processes, at the edges: requests
no HTTP client library would send, clients that hang up, ports that cannot
be listened on. Each ends with stderr still one JSON document per line."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cronsvc.config import Config
from cronsvc.coord import open_coordinator
from cronsvc.errors import CannotListen
from cronsvc.service import cannot_listen, serve
from cronsvc.urls import sqlite_path
from tests.fakes import free_port
from tests.processes import CronsvcProcess, write_config

pytestmark = pytest.mark.e2e

Event = dict[str, Any]


async def exchange(port: int, data: bytes, *, hang_up: bool = False) -> bytes:
    """Send raw bytes to the service and read its answer until it closes the
    connection; with `hang_up`, close right after sending instead."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if hang_up:
            return b""
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


def events(process: CronsvcProcess) -> list[Event]:
    """Every line the process wrote, each parsed as the JSON object it must be."""
    lines = process.log_path.read_text().splitlines()
    parsed = []
    for line in lines:
        assert "Traceback" not in line, line
        event = json.loads(line)
        assert isinstance(event, dict), line
        parsed.append(event)
    return parsed


async def wait_for_event(
    process: CronsvcProcess, match: Callable[[Event], bool], within_s: float = 10.0
) -> Event:
    async with asyncio.timeout(within_s):
        while True:
            found = [e for e in events(process) if match(e)]
            if found:
                return found[0]
            await asyncio.sleep(0.05)


# -- requests aiohttp's parser refuses ----------------------------------------------

MALFORMED = [
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Probe: a\x00b\r\n\r\n", "Invalid header value"),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "8190"),
]


@pytest.mark.parametrize(("data", "error"), MALFORMED, ids=["nul-in-header", "long-line"])
async def test_a_request_the_parser_refuses_is_one_json_warning_without_a_traceback(
    service: CronsvcProcess, data: bytes, error: str
) -> None:
    answer = await exchange(service.port, data)

    assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")
    event = await wait_for_event(service, lambda e: e["event"] == "bad_request")
    assert event["level"] == "warning"
    assert error in event["error"] and "\n" not in event["error"]
    assert event["remote"] == "127.0.0.1" and event["logger"] == "aiohttp.server"
    assert [e for e in events(service) if e["level"] in ("error", "critical")] == []


def test_every_library_logger_writes_json_lines_through_the_same_processors() -> None:
    script = """
import logging, warnings
from cronsvc.config import LoggingConfig
from cronsvc.logs import configure_logging
configure_logging(LoggingConfig())
try:
    raise RuntimeError("lost a task")
except RuntimeError:
    logging.getLogger("asyncio").exception("Task exception was never retrieved")
logging.getLogger("aiohttp.client").warning("connection %s reset", "c1")
logging.getLogger("some.library").error("plain %d", 7)
logging.getLogger("aiohttp.web").info("below the threshold")
warnings.warn("an old call", DeprecationWarning, stacklevel=1)
"""
    result = subprocess.run(
        [sys.executable, "-W", "always", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    parsed = [json.loads(line) for line in lines]
    assert [(e["logger"], e["level"]) for e in parsed] == [
        ("asyncio", "error"),
        ("aiohttp.client", "warning"),
        ("some.library", "error"),
        ("py.warnings", "warning"),
    ]
    assert parsed[0]["event"] == "Task exception was never retrieved"
    assert "RuntimeError: lost a task" in parsed[0]["exception"]  # kept, inside the line
    assert parsed[1]["event"] == "connection c1 reset"
    assert all("timestamp" in e for e in parsed)


# -- a client that hangs up --------------------------------------------------------


async def test_a_client_that_hangs_up_mid_body_is_one_info_line(service: CronsvcProcess) -> None:
    head = (
        b"POST /api/cron HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n"
    )
    await exchange(service.port, head + b'{"name": 1', hang_up=True)

    event = await wait_for_event(service, lambda e: e["event"] == "request_aborted")
    assert event["level"] == "info"
    assert (event["method"], event["path"]) == ("POST", "/api/cron")
    await asyncio.sleep(0.2)  # anything logged after it would be seen below
    assert [e for e in events(service) if e["level"] not in ("info", "debug")] == []


# -- an address that cannot be listened on --------------------------------------------


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port a socket of the test listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def serve_until_it_exits(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cronsvc", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
    )


def log_and_last_line(stderr: str) -> tuple[list[Event], str]:
    """The JSON events a run logged before its last line, and that line."""
    *logged, last = stderr.strip().splitlines()
    assert all("Traceback" not in line for line in logged), stderr
    return [json.loads(line) for line in logged], last


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_a_port_in_use_stops_start_up_with_one_line_naming_the_setting(
    tmp_path: Path, held_port: int, event_loop: str
) -> None:
    config = write_config(tmp_path / "c.toml", held_port, tmp_path / "cronsvc.db")

    result = serve_until_it_exits(config, {"CRONSVC_SERVER_EVENT_LOOP": event_loop})

    assert result.returncode == 2, result.stderr
    logged, last = log_and_last_line(result.stderr)
    assert last == (
        f"cronsvc: cannot listen on 127.0.0.1:{held_port}: address already in use "
        "(set server.port or CRONSVC_SERVER_PORT)"
    )
    assert "service_started" not in [e["event"] for e in logged]
    assert [e for e in logged if e["level"] in ("error", "critical")] == []
    # Nothing it opened is left held: the next process on the same file starts.
    port = free_port()
    again = write_config(tmp_path / "again.toml", port, tmp_path / "cronsvc.db")
    with subprocess.Popen(
        [sys.executable, "-m", "cronsvc", "serve", "--config", str(again)],
        stderr=subprocess.PIPE,
        text=True,
    ) as second:
        assert second.stderr is not None
        try:
            started = json.loads(second.stderr.readline())
            while started["event"] != "service_started":
                started = json.loads(second.stderr.readline())
            assert started["port"] == port and started["host"] == "127.0.0.1"
        finally:
            second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0


def test_an_address_not_on_this_host_stops_start_up_with_one_line_naming_the_host(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path / "c.toml", free_port(), tmp_path / "cronsvc.db")
    env = {
        "CRONSVC_SERVER_HOST": "192.0.2.10",
        "CRONSVC_SERVER_API_TOKENS": "edge-token-0123456789",
    }

    result = serve_until_it_exits(config, env)

    assert result.returncode == 2, result.stderr
    _, last = log_and_last_line(result.stderr)
    assert last.startswith("cronsvc: cannot listen on 192.0.2.10:"), last
    assert "(set server.host or CRONSVC_SERVER_HOST)" in last


async def test_a_failed_listen_closes_what_start_up_opened_and_releases_the_lock(
    config: Config, held_port: int
) -> None:
    config = config.model_copy(
        update={"server": config.server.model_copy(update={"port": held_port})}
    )
    before = asyncio.all_tasks()

    with pytest.raises(CannotListen, match="address already in use"):
        await asyncio.wait_for(serve(config), timeout=20)

    assert asyncio.all_tasks() == before  # the engine's loops are over
    lock_path = sqlite_path(config.store.url).with_name("cronsvc.db.lock")
    coordinator = open_coordinator("local", lock_path=lock_path, key_prefix="cronsvc")
    await coordinator.start()  # StartupRefused if the lock were still held
    await coordinator.aclose()


@pytest.mark.parametrize(
    ("host", "port", "error", "fragment"),
    [
        ("127.0.0.1", 8080, errno.EADDRINUSE, "address already in use (set server.port"),
        ("127.0.0.1", 80, errno.EACCES, "below 1024"),
        ("10.9.8.7", 8080, errno.EADDRNOTAVAIL, "(set server.host or CRONSVC_SERVER_HOST)"),
        ("::1", 8080, errno.EADDRINUSE, "cannot listen on [::1]:8080: "),
        ("127.0.0.1", 8080, errno.EMFILE, "open files (check server.host and server.port"),
    ],
)
def test_each_listen_error_names_the_setting_to_change(
    host: str, port: int, error: int, fragment: str
) -> None:
    uvloop_style = OSError(error, f"error while attempting to bind on address {(host, port)}")

    message = str(cannot_listen(host, port, uvloop_style))

    assert message.startswith("cannot listen on ") and fragment in message
    assert "\n" not in message


def test_a_host_that_does_not_resolve_is_named() -> None:
    gai = socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    message = str(cannot_listen("api.invalid", 8080, gai))

    assert message == (
        "cannot listen on api.invalid:8080: the name does not resolve "
        "(set server.host or CRONSVC_SERVER_HOST)"
    )
