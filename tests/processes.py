"""Start and stop real `cronsvc serve` processes for end-to-end tests, and
stall any process for a while."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp


@dataclass
class CronsvcProcess:
    config_path: Path
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    profile_path: Path | None = None
    """When set, the process runs under cProfile and writes its profile here
    when it exits (a clean stop: SIGTERM)."""
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, *, wait: bool = True) -> None:
        log = self._open_log()
        profiler = ["-m", "cProfile", "-o", str(self.profile_path)] if self.profile_path else []
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            *profiler,
            "-m",
            "cronsvc",
            "serve",
            "--config",
            str(self.config_path),
            stdout=log,
            stderr=log,
            env={**os.environ, **self.env},
        )
        log.close()
        if wait:
            await self.wait_ready()

    def _open_log(self) -> IO[bytes]:
        return open(self.log_path, "ab")

    async def wait_ready(self, within_s: float = 20.0) -> None:
        assert self.process is not None
        async with aiohttp.ClientSession() as session, asyncio.timeout(within_s):
            while True:
                if self.process.returncode is not None:
                    raise RuntimeError(
                        f"cronsvc exited with {self.process.returncode}: {self.log_tail()}"
                    )
                try:
                    async with session.get(f"{self.url}/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)

    async def stop(self, sig: int = signal.SIGTERM, within_s: float = 30.0) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(sig)
        try:
            async with asyncio.timeout(within_s):
                return await self.process.wait()
        except TimeoutError:
            # Never left running past its test or benchmark run.
            self.process.kill()
            await self.process.wait()
            raise

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def write_config(path: Path, port: int, db: Path, extra: str = "") -> Path:
    """A config for one process; `extra` continues its [scheduler] table. The
    SSRF guard is opened: webhook receivers in tests listen on 127.0.0.1. The
    API's rate limit is off, as in the `config` fixture."""
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nshutdown_grace_s = 5\n'
        f'[store]\nurl = "sqlite:///{db}"\n'
        "[webhook]\nallow_private_targets = true\n"
        "[limits]\nrate_limit_per_s = 0\n"
        f"[scheduler]\nheartbeat_interval_s = 1\n{extra}"
    )
    return path


async def all_logs(base: str, job_id: str) -> list[dict[str, Any]]:
    """Every execution log of a job, following the Link header page by page."""
    logs: list[dict[str, Any]] = []
    url: str | None = f"{base}/api/execution-logs/job/{job_id}?limit=500"
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            if url is None:
                break
            async with session.get(url) as response:
                logs += await response.json()
                link = response.headers.get("Link")
                url = f"{base}{link[1 : link.index('>')]}" if link else None
    return logs


@contextmanager
def stopped(pid: int | None) -> Iterator[None]:
    """The process stalled (SIGSTOP) for the block: it keeps its sockets open
    and answers nothing, as a hung server does."""
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
