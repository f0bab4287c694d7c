"""MongoDB for tests: a real wire-protocol server on a free loopback port.

`CRONSVC_TEST_MONGODB_URL` names a real mongod to use. Without it, the test
session starts its own nx-27017 (a MongoDB wire-protocol server on SQLite,
one file per logical database) with its data, log and pid files in the
session's temporary directory, so test runs side by side share nothing, and
stops it at the end. A server that cannot be started fails the tests that
need it; they are never skipped.

Each test that asks for `mongo_database_url` gets a database of its own,
dropped afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import pytest
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from tests.fakes import free_port

MONGODB_URL_ENV = "CRONSVC_TEST_MONGODB_URL"
_START_ATTEMPTS = 3  # a free port can be taken by someone else before the server binds it


@dataclass
class NxServer:
    """One nx-27017 process and the directory that holds its files."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    @property
    def output(self) -> Path:
        return self.directory / "output.log"

    def stop(self, within_s: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(within_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(within_s)

    def output_tail(self, lines: int = 20) -> str:
        text = self.output.read_text(errors="replace") if self.output.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def nx_27017_command() -> list[str]:
    """The server's console script beside this interpreter, else its module."""
    script = Path(sys.executable).with_name("nx-27017")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "nx_27017.nx_27017"]


def start_nx_27017(directory: Path, *, port: int | None = None, within_s: float = 30.0) -> NxServer:
    """Start nx-27017 on a free loopback port (or on `port`: to restart a
    server where its clients expect it, on the same files) with every file
    in `directory`, and wait until it answers `ping`. Raises `RuntimeError`
    if it does not."""
    directory.mkdir(parents=True, exist_ok=True)
    failure = ""
    for _ in range(1 if port else _START_ATTEMPTS):
        chosen = port or free_port()
        with open(directory / "output.log", "ab") as output:
            process = subprocess.Popen(
                [
                    *nx_27017_command(),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(chosen),
                    "--data-dir",
                    str(directory / "data"),
                    "--log-file",
                    str(directory / "nx-27017.log"),
                    "--pid-file",
                    str(directory / "nx-27017.pid"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        server = NxServer(directory=directory, port=chosen, process=process)
        try:
            if _wait_for_ping(server, within_s):
                return server
        except BaseException:
            server.stop()
            raise
        failure = f"exited with {process.returncode}:\n{server.output_tail()}"
    raise RuntimeError(f"nx-27017 did not start in {directory}: {failure}")


def _wait_for_ping(server: NxServer, within_s: float) -> bool:
    """True once the server answers; False if it exited (a port taken, say).
    Raises `RuntimeError` if it is still silent after `within_s`."""
    deadline = time.monotonic() + within_s
    client: MongoClient[dict[str, object]] = MongoClient(
        server.url, serverSelectionTimeoutMS=250, connectTimeoutMS=250
    )
    with client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                return False
            try:
                client.admin.command("ping")
            except PyMongoError:
                time.sleep(0.05)
            else:
                return True
    server.stop()
    raise RuntimeError(
        f"nx-27017 on port {server.port} did not answer within {within_s} s:\n"
        f"{server.output_tail()}"
    )


def with_database(url: str, database: str) -> str:
    """`url` naming `database` (its options kept)."""
    scheme, _, rest = url.partition("://")
    authority, _, path = rest.partition("/")
    authority, question, query = authority.partition("?")
    if not question:
        query = path.partition("?")[2]
    return f"{scheme}://{authority}/{database}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def mongo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A MongoDB server for the whole session (no database in the URL)."""
    configured = os.environ.get(MONGODB_URL_ENV)
    if configured:
        yield configured
        return
    server = start_nx_27017(tmp_path_factory.mktemp("nx-27017"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _mongo_admin(mongo_url: str) -> Iterator[MongoClient[dict[str, object]]]:
    client: MongoClient[dict[str, object]] = MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    with client:
        yield client


@pytest.fixture
def mongo_database_url(
    mongo_url: str, _mongo_admin: MongoClient[dict[str, object]]
) -> Iterator[str]:
    """The URL of a database of this test's own, dropped after it."""
    name = f"t{uuid4().hex[:10]}"
    yield with_database(mongo_url, name)
    _mongo_admin.drop_database(name)
