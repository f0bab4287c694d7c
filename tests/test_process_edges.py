"""End to end through real `cronsvc serve` processes, at the edges: requests
no HTTP client library would send, clients that hang up, ports that cannot
be listened on. Each ends with stderr still one JSON document per line."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.processes import CronsvcProcess, free_port, write_config

pytestmark = pytest.mark.e2e

Event = dict[str, Any]


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[CronsvcProcess]:
    port = free_port()
    config = write_config(tmp_path / "config.toml", port, tmp_path / "data" / "cronsvc.db")
    process = CronsvcProcess(config_path=config, port=port, log_path=tmp_path / "cronsvc.log")
    await process.start()
    yield process
    await process.stop(signal.SIGKILL)


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
