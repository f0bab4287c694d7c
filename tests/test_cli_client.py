"""The client commands (`cronsvc jobs|logs|next|cluster`) against a running
service: in-process through `cronsvc.cli.main`, and as real `python -m
cronsvc` processes where the console entry, Ctrl-C or stderr matter."""

from __future__ import annotations

import asyncio
import io
import json
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from cronsvc.cli import main
from cronsvc.commands import jobs_owned_cell
from cronsvc.tables import aligned, duration
from tests.fakes import Receiver, Run, free_port
from tests.helpers_api import Client

YEARLY = "0 0 1 1 *"  # nextRunAt stays put while a test runs
_ENVIRONMENT = (
    "CRONSVC_URL",
    "CRONSVC_TOKEN",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
)


Cli = Callable[..., Awaitable[Run]]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No API URL, token or proxy from the environment the tests run in (the
    subprocesses inherit this environment too)."""
    for name in _ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def quiet_service() -> Iterator[None]:
    """The service under test logs in this process: keep its events out of
    the output the commands are judged by."""
    with capture_logs():
        yield


@pytest.fixture
def base_url(client: Client) -> str:
    return f"http://127.0.0.1:{client.server.port}"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], base_url: str) -> Cli:
    """Run `cronsvc --url <the test service> ARGS...` in a thread (the service
    answers on this test's event loop) and capture what it prints."""

    async def run(*args: str, url: str | None = base_url) -> Run:
        argv = [*(["--url", url] if url else []), *args]
        capsys.readouterr()
        code = await asyncio.to_thread(_main, argv)
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def _main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's usage errors
        return int(exc.code or 0)


async def python_m_cronsvc(*args: str, within_s: float = 30.0) -> Run:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cronsvc",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(within_s):
        out, err = await process.communicate()
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


async def create(client: Client, **fields: Any) -> dict[str, Any]:
    document = {"name": "report", "cronExpression": YEARLY, "webhookUrl": "https://example.org/"}
    response = await client.post("/api/cron", json={**document, **fields})
    assert response.status == 201, await response.text()
    job: dict[str, Any] = await response.json()
    return job


async def api_get(client: Client, path: str) -> Any:
    response = await client.get(path)
    assert response.status == 200, await response.text()
    return await response.json()


async def finished_log(client: Client, execution_id: str, within_s: float = 10.0) -> Any:
    async with asyncio.timeout(within_s):
        while True:
            response = await client.get(f"/api/execution-logs/{execution_id}")
            if response.status == 200 and (log := await response.json())["status"] != "RUNNING":
                return log
            await asyncio.sleep(0.05)


def one_line_error(run: Run, code: int = 1) -> str:
    assert run.code == code, run
    assert run.out == ""
    assert run.err.endswith("\n") and run.err.count("\n") == 1, run.err
    assert run.err.startswith("cronsvc: ")
    assert "Traceback" not in run.err
    return run.err.strip()


def table(run: Run) -> list[dict[str, str]]:
    """Parse an aligned table: columns start where the header's names start."""
    header, *rows = run.lines
    starts = [m.start() for m in re.finditer(r"(?<!\S)\S+(?: \S+)*", header)]
    names = [header[s:e].strip() for s, e in zip(starts, [*starts[1:], None], strict=True)]
    parsed = []
    for row in rows:
        cells = [row[s:e].strip() for s, e in zip(starts, [*starts[1:], None], strict=True)]
        assert all(row[s - 2 : s] == "  " for s in starts[1:]), f"not aligned: {row!r}"
        parsed.append(dict(zip(names, cells, strict=True)))
    return parsed


# -- jobs -----------------------------------------------------------------------


async def test_job_lifecycle_from_create_to_delete(
    cli: Cli, client: Client, receiver: Receiver
) -> None:
    created = await cli(
        "jobs", "create", "--name", "nightly", "--schedule", YEARLY, "--url", receiver.url,
        "--header", "X-Token: abc", "--tag", "cli",
    )  # fmt: skip
    assert created.code == 0, created
    match = re.fullmatch(r"created job ([0-9a-f]{24}) \(nightly\), next run \S+Z\n", created.out)
    assert match, created.out
    job_id = match[1]

    (row,) = table(await cli("jobs", "list"))
    assert row == {
        "ID": job_id,
        "NAME": "nightly",
        "SCHEDULE": YEARLY,
        "TZ": "UTC",
        "ACTIVE": "yes",
        "NEXT RUN": row["NEXT RUN"],
        "LAST STATUS": "-",
    }
    assert re.fullmatch(r"\d{4}-01-01T00:00:00Z", row["NEXT RUN"])

    shown = await cli("jobs", "get", job_id)
    fields = dict(line.split(":", 1) for line in shown.lines)
    assert fields["webhookUrl"].strip() == receiver.url
    assert fields["headers"].strip() == '{"X-Token":"abc"}'
    values_start = {len(line) - len(line.split(":", 1)[1].lstrip()) for line in shown.lines}
    assert len(values_start) == 1, shown.out

    updated = await cli(
        "jobs", "update", job_id, "--schedule", "30 2 * * *", "--tz", "Europe/Paris",
        "--header", "X-B:2",
    )  # fmt: skip
    assert updated.out == f"updated job {job_id} (nightly)\n"
    job = await api_get(client, f"/api/cron/{job_id}")
    assert (job["cronExpression"], job["timezone"]) == ("30 2 * * *", "Europe/Paris")
    assert job["headers"] == {"X-Token": "abc", "X-B": "2"} and job["tags"] == ["cli"]

    assert (await cli("jobs", "pause", job_id)).out == f"paused job {job_id} (nightly)\n"
    (row,) = table(await cli("jobs", "list"))
    assert (row["ACTIVE"], row["NEXT RUN"]) == ("no", "-")
    assert (await cli("jobs", "list", "--active")).lines[1:] == []
    assert (await cli("jobs", "resume", job_id)).out.startswith(f"resumed job {job_id}")
    (row,) = table(await cli("jobs", "list", "--active"))
    assert row["ACTIVE"] == "yes" and row["NEXT RUN"] != "-"

    triggered = await cli("jobs", "trigger", job_id)
    match = re.fullmatch(
        rf"triggered job {job_id} \(nightly\): execution ([0-9a-f]{{24}}), RUNNING\n",
        triggered.out,
    )
    assert match, triggered.out
    execution_id = match[1]
    await receiver.wait_for(1)
    await finished_log(client, execution_id)
    (log,) = table(await cli("logs", "--job", job_id))
    assert log["ID"] == execution_id and log["JOB"] == "nightly"
    assert (log["TRIGGER"], log["STATUS"], log["HTTP"]) == ("manual", "SUCCESS", "200")
    assert re.fullmatch(r"\d+ms|\d+\.\ds", log["DURATION"])

    deleted = await cli("jobs", "delete", job_id, "--yes")
    assert deleted.out == f"deleted job {job_id} (nightly)\n"
    assert (await client.get(f"/api/cron/{job_id}")).status == 404
    assert table(await cli("jobs", "list")) == []


async def test_json_output_is_the_api_answer(cli: Cli, client: Client) -> None:
    job = await create(client, tags=["a"], body={"k": [1, 2]})
    assert (await cli("jobs", "list", "--json")).json() == await api_get(client, "/api/cron")
    assert (await cli("jobs", "get", job["id"], "--json")).json() == job
    preview = await client.post(
        "/api/schedule/preview",
        json={"cronExpression": "*/15 * * * *", "count": 3, "after": "2026-01-01T00:00:00Z"},
    )
    shown = await cli(
        "next", "*/15 * * * *", "-n", "3", "--after", "2026-01-01T00:00:00Z", "--json"
    )
    assert shown.json() == await preview.json()
    paused = await cli("--json", "jobs", "pause", job["id"])
    assert paused.json() == await api_get(client, f"/api/cron/{job['id']}")


async def test_create_takes_a_whole_job_from_a_file_and_options_override_it(
    cli: Cli, client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = {
        "name": "from file",
        "cronExpression": YEARLY,
        "webhookUrl": "https://example.org/a",
        "headers": {"X-A": "1"},
        "retry": {"maxAttempts": 3},
    }
    (tmp_path / "job.json").write_text(json.dumps(document))
    (tmp_path / "body.json").write_text('{"report": "daily"}')
    created = await cli(
        "jobs", "create", "--from-file", str(tmp_path / "job.json"), "--name", "overridden",
        "--header", "X-B: 2", "--json-body", str(tmp_path / "body.json"), "--paused", "--json",
    )  # fmt: skip
    job = created.json()
    assert job["name"] == "overridden" and job["retry"]["maxAttempts"] == 3
    assert job["headers"] == {"X-A": "1", "X-B": "2"}
    assert job["body"] == {"report": "daily"} and job["isActive"] is False

    (tmp_path / "body.txt").write_text("plain text")
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({**document, "name": "stdin"})))
    created = await cli(
        "jobs", "create", "--from-file", "-", "--body", f"@{tmp_path / 'body.txt'}", "--json"
    )
    assert created.json()["name"] == "stdin" and created.json()["body"] == "plain text"


async def test_alerts_are_set_from_a_file_and_their_secret_never_printed(
    cli: Cli, client: Client, tmp_path: Path
) -> None:
    secret = "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
    alerts = {"url": "https://alerts.example.org/", "after": 2, "secret": secret}
    document = {"name": "alerting", "cronExpression": YEARLY, "webhookUrl": "https://e.org/"}
    (tmp_path / "job.json").write_text(json.dumps({**document, "alerts": alerts}))
    created = await cli("jobs", "create", "--from-file", str(tmp_path / "job.json"), "--json")
    job = created.json()
    assert job["alerts"]["after"] == 2 and job["alerts"]["hasSecret"] is True

    (tmp_path / "patch.json").write_text(json.dumps({"alerts": {"after": 4, "secret": None}}))
    patch = ["jobs", "update", job["id"], "--from-file", str(tmp_path / "patch.json")]
    shown = await cli(*patch, "--dry-run")
    assert shown.code == 0, shown
    assert "alerts.secret" in shown.out and "(not shown)" in shown.out
    assert secret.removeprefix("whsec_") not in shown.out + created.out
    updated = await cli(*patch, "--json")
    assert updated.json()["alerts"]["after"] == 4
    assert updated.json()["alerts"]["hasSecret"] is False


async def test_list_shows_a_page_and_all_follows_the_link_header(cli: Cli, client: Client) -> None:
    for name in ("one", "two", "three"):
        await create(client, name=name)
    page = await cli("jobs", "list", "--limit", "2")
    assert [row["NAME"] for row in table(page)] == ["three", "two"]
    assert "--all" in page.err
    every = await cli("jobs", "list", "--limit", "2", "--all", "--json")
    assert every.json() == await api_get(client, "/api/cron?limit=500")
    assert len(every.json()) == 3


async def test_delete_asks_on_a_terminal_and_refuses_without_one(
    cli: Cli, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await create(client)
    refused = await cli("jobs", "delete", job["id"])  # stdin is not a terminal under pytest
    assert "--yes" in one_line_error(refused, 2)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))
    declined = await cli("jobs", "delete", job["id"])
    assert declined.code == 1 and f"Delete job {job['id']} (report)? [y/N]" in declined.err
    assert (await client.get(f"/api/cron/{job['id']}")).status == 200

    monkeypatch.setattr(sys, "stdin", Terminal("y\n"))
    assert (await cli("jobs", "delete", job["id"])).code == 0
    assert (await client.get(f"/api/cron/{job['id']}")).status == 404


# -- errors ---------------------------------------------------------------------


async def test_bad_expression_exits_1_with_one_line_naming_the_field(
    cli: Cli, client: Client
) -> None:
    run = await cli(
        "jobs", "create", "--name", "bad", "--schedule", "61 * * * *", "--url", "https://x.org/"
    )
    line = one_line_error(run)
    assert line.startswith("cronsvc: 400 Bad Request: cronExpression: "), line
    assert await api_get(client, "/api/cron") == []


async def test_update_dry_run_prints_changes_and_fires_and_writes_nothing(
    cli: Cli, client: Client
) -> None:
    job = await create(client, cronExpression="0 2 * * *")
    run = await cli(
        "jobs", "update", job["id"], "--schedule", "0 14 * * *", "--tz", "Europe/Berlin",
        "--dry-run",
    )  # fmt: skip
    assert run.code == 0, run
    assert run.lines[0] == f"dry run: update job {job['id']} (report)"
    changes = run.lines[run.lines.index("changes:") + 1 : run.lines.index("next fires:")]
    assert [line.split()[0] for line in changes] == ["FIELD", "cronExpression", "timezone"]
    assert "whsec_" not in run.out
    fires = run.lines[run.lines.index("next fires:") + 2 : -1]
    assert len(fires) == 10
    assert all(line.split()[2] == "moved" and line.split()[-1] == "moved" for line in fires)
    assert run.lines[-1] == "10 moved, 0 new, 0 gone (nothing written)"
    assert await api_get(client, f"/api/cron/{job['id']}") == job


async def test_create_dry_run_writes_nothing_and_json_is_the_api_answer(
    cli: Cli, client: Client
) -> None:
    args = ["jobs", "create", "--name", "n", "--schedule", "0 * * * *", "--url", "https://x.org/"]
    run = await cli(*args, "--dry-run")
    assert run.code == 0, run
    assert run.lines[0] == "dry run: create job 'n'"
    assert run.lines[-1] == "0 moved, 10 new, 0 gone (nothing written)"
    run = await cli("--json", *args, "--dry-run", "--paused")
    answer = json.loads(run.out)
    assert answer["dryRun"] is True and answer["fires"]["after"] == []
    assert await api_get(client, "/api/cron") == []


async def test_a_refused_dry_run_exits_1_like_the_write(cli: Cli, client: Client) -> None:
    job = await create(client)
    run = await cli("jobs", "update", job["id"], "--schedule", "61 * * * *", "--dry-run")
    line = one_line_error(run)
    assert line.startswith("cronsvc: 400 Bad Request: cronExpression: "), line


@pytest.mark.parametrize(
    "command",
    [
        ["jobs", "get"],
        ["jobs", "update", "{id}", "--name", "x"],
        ["jobs", "delete", "{id}", "--yes"],
        ["jobs", "pause"],
        ["jobs", "resume"],
        ["jobs", "trigger"],
    ],
)
async def test_unknown_job_exits_1_with_a_404_line(cli: Cli, command: list[str]) -> None:
    unknown = "0" * 24
    args = [a.replace("{id}", unknown) for a in command]
    run = await cli(*(args if unknown in args else [*args, unknown]))
    assert one_line_error(run) == f"cronsvc: 404 Not Found: no job with id '{unknown}'"


async def test_unreachable_api_exits_1_with_one_line_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    run = await python_m_cronsvc("jobs", "list", "--url", url)
    assert one_line_error(run) == f"cronsvc: cannot reach {url}: Connection refused"


async def test_silent_api_times_out_with_one_line() -> None:
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        run = await python_m_cronsvc("cluster", "--url", url, "--timeout", "0.5")
    assert one_line_error(run) == f"cronsvc: cannot reach {url}: no answer within 0.5 s"


@pytest.mark.parametrize(
    "args",
    [
        ["jobs", "update", "0" * 24],  # nothing to change
        ["jobs", "create", "--header", "no colon"],
        ["--url", "ftp://127.0.0.1/", "cluster"],
        ["jobs", "create", "--from-file", "/nonexistent/job.json"],
    ],
)
async def test_usage_errors_exit_2(cli: Cli, args: list[str]) -> None:
    run = await cli(*args, url=None)
    assert run.code == 2 and run.out == "" and "Traceback" not in run.err
    assert run.err.strip().splitlines()[-1].startswith("cronsvc")


# -- next, cluster, the console entry ----------------------------------------------


async def test_next_prints_the_asked_number_of_instants(cli: Cli) -> None:
    run = await cli("next", "*/15 * * * *", "-n", "4", "--after", "2026-01-01T00:00:00Z")
    assert run.code == 0 and run.err == ""
    assert run.lines == [
        "UTC",
        "2026-01-01T00:15:00Z",
        "2026-01-01T00:30:00Z",
        "2026-01-01T00:45:00Z",
        "2026-01-01T01:00:00Z",
    ]
    paris = await cli("next", "0 9 * * *", "--tz", "Europe/Paris", "-n", "2", "--after",
                      "2026-03-28T12:00:00Z")  # fmt: skip
    assert [(r["UTC"], r["LOCAL (Europe/Paris)"]) for r in table(paris)] == [
        ("2026-03-29T07:00:00Z", "2026-03-29T09:00:00+02:00"),
        ("2026-03-30T07:00:00Z", "2026-03-30T09:00:00+02:00"),
    ]


async def test_cluster_lists_this_instance_as_leader(cli: Cli, client: Client) -> None:
    await create(client, name="owned")
    async with asyncio.timeout(10):  # told with the first heartbeat after the jobs loaded
        while True:
            view = await api_get(client, "/api/cluster")
            if view["instances"][0]["jobsOwned"] == 1:
                break
            await asyncio.sleep(0.1)
    (row,) = table(await cli("cluster"))
    assert row["JOBS OWNED"] == "1"
    assert row["ID"] == view["leader"] and row["LEADER"] == "yes"
    assert row["VERSION"] == view["instances"][0]["version"]
    assert re.fullmatch(r"\d+s ago", row["LAST HEARTBEAT"])
    assert row["FIRED LAST MIN"] == str(view["instances"][0]["ticksFiredLastMinute"])


@pytest.mark.parametrize(
    ("instance", "shown"),
    [
        ({"jobsOwned": 3, "loading": False}, "3"),
        ({"jobsOwned": 0, "loading": False}, "0"),
        ({"jobsOwned": None, "loading": True}, "loading"),
        ({"jobsOwned": None, "loading": False}, "none"),
        ({"jobsOwned": None}, "none"),  # an earlier version tells neither
    ],
)
def test_cluster_tells_a_share_from_a_loading_instance_and_one_with_none(
    instance: dict[str, Any], shown: str
) -> None:
    assert jobs_owned_cell(instance) == shown


async def test_console_entry_lists_jobs(client: Client, base_url: str) -> None:
    job = await create(client, name="via python -m")
    run = await python_m_cronsvc("jobs", "list", "--url", base_url)
    assert run.code == 0, run
    assert [(r["ID"], r["NAME"]) for r in table(run)] == [(job["id"], "via python -m")]


# -- logs --------------------------------------------------------------------------


async def test_logs_follow_prints_a_run_that_finishes_after_it_started_and_ctrl_c_exits_0(
    client: Client, base_url: str, receiver: Receiver
) -> None:
    job = await create(client, webhookUrl=receiver.url, isActive=False)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cronsvc", "logs", "--follow", "--interval", "0.2",
        "--job", job["id"], "--url", base_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        # Python turns SIGINT into KeyboardInterrupt only if it is not ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    try:
        async with asyncio.timeout(20):
            header = await process.stdout.readline()  # printed after the first poll
            assert header.decode().split() == [
                "ID", "JOB", "TRIGGER", "SCHEDULED", "STATUS", "HTTP", "DURATION",
            ]  # fmt: skip
            response = await client.post(f"/api/cron/{job['id']}/trigger")
            execution_id = (await response.json())["executionId"]
            row = (await process.stdout.readline()).decode()
            assert row.split()[:2] == [execution_id, "report"]
            assert "SUCCESS" in row.split() and "200" in row.split()
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0
            err = await process.stderr.read()
            assert b"Traceback" not in err and err == b"", err
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_logs_follow_prints_each_run_once(
    cli: Cli, client: Client, receiver: Receiver
) -> None:
    job = await create(client, webhookUrl=receiver.url)
    ids = []
    for _ in range(2):
        response = await client.post(f"/api/cron/{job['id']}/trigger")
        ids.append((await finished_log(client, (await response.json())["executionId"]))["id"])
    run = await cli(
        "logs", "--follow", "--max-polls", "3", "--interval", "0.05", "--job", job["id"]
    )
    assert run.code == 0
    assert [row["ID"] for row in table(run)] == ids  # oldest first, each once
    limited = await cli(
        "logs", "-f", "--max-polls", "2", "--interval", "0.05", "--limit", "1", "--json"
    )
    assert [json.loads(line)["id"] for line in limited.lines] == ids[1:]


async def test_logs_are_listed_oldest_first_with_filters(
    cli: Cli, client: Client, receiver: Receiver
) -> None:
    job = await create(client, webhookUrl=receiver.url)
    ids = []
    for _ in range(3):
        response = await client.post(f"/api/cron/{job['id']}/trigger")
        ids.append((await finished_log(client, (await response.json())["executionId"]))["id"])
    assert [row["ID"] for row in table(await cli("logs"))] == ids
    assert [row["ID"] for row in table(await cli("logs", "--limit", "2"))] == ids[1:]
    assert [row["ID"] for row in table(await cli("logs", "--since", "1h"))] == ids
    assert table(await cli("logs", "--status", "failure")) == []
    newest_first = (await cli("logs", "--json", "--status", "SUCCESS")).json()
    assert newest_first == await api_get(client, "/api/execution-logs?status=SUCCESS&limit=20")
    line = one_line_error(await cli("logs", "--status", "sometimes"))
    assert line.startswith("cronsvc: 400 Bad Request: status: ")


# -- a fake API: the token, redirects, answers that are not problems -----------------


@dataclass
class FakeApi:
    url: str
    authorizations: list[str | None]


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeApi]:
    """Stands in for a service that requires the token `s3cret`."""
    seen: list[str | None] = []

    async def jobs(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != "Bearer s3cret":
            return web.json_response(
                {"type": "about:blank", "title": "Unauthorized", "status": 401,
                 "detail": "a valid bearer token is required"},
                status=401, content_type="application/problem+json",
            )  # fmt: skip
        return web.json_response([])

    async def moved(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        raise web.HTTPFound("/api/cron")

    async def gateway(request: web.Request) -> web.Response:
        return web.Response(status=502, text="<html><body>bad gateway</body></html>")

    app = web.Application()
    app.router.add_get("/api/cron", jobs)
    app.router.add_get("/api/cluster", moved)
    app.router.add_get("/api/execution-logs", gateway)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield FakeApi(f"http://127.0.0.1:{runner.addresses[0][1]}", seen)
    await runner.cleanup()


async def test_token_is_sent_as_a_bearer_header(
    cli: Cli, fake_api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await cli("jobs", "list", "--token", "s3cret", url=fake_api.url)).code == 0
    monkeypatch.setenv("CRONSVC_TOKEN", "s3cret")
    monkeypatch.setenv("CRONSVC_URL", fake_api.url)
    assert (await cli("jobs", "list", url=None)).code == 0
    monkeypatch.delenv("CRONSVC_TOKEN")
    refused = one_line_error(await cli("jobs", "list", url=fake_api.url))
    assert refused == (
        "cronsvc: 401 Unauthorized: a valid bearer token is required"
        " (give a token with --token or CRONSVC_TOKEN)"
    )
    assert fake_api.authorizations == ["Bearer s3cret", "Bearer s3cret", None]


async def test_redirect_is_not_followed_and_an_html_error_is_one_line(
    cli: Cli, fake_api: FakeApi
) -> None:
    moved = one_line_error(await cli("cluster", "--token", "s3cret", url=fake_api.url))
    assert moved == "cronsvc: 302 Found: redirected to /api/cron (not followed: check the API URL)"
    assert fake_api.authorizations == ["Bearer s3cret"]  # not replayed to the new address
    assert one_line_error(await cli("logs", url=fake_api.url)) == "cronsvc: 502 Bad Gateway"


# -- tables ---------------------------------------------------------------------------


def test_table_columns_are_as_wide_as_their_widest_cell() -> None:
    widths: list[int] = []
    assert aligned([["ID", "NAME"], ["1", "a much longer name"], ["22", "-"]], widths) == [
        "ID  NAME",
        "1   a much longer name",
        "22  -",
    ]
    assert aligned([["333", "x"]], widths) == ["333  x"]  # widths only grow
    assert aligned([["1", "x"]], widths) == ["1    x"]


@pytest.mark.parametrize(
    ("ms", "text"),
    [(None, "-"), (0, "0ms"), (999, "999ms"), (1250, "1.2s"), (185_000, "3m05s")],
)
def test_durations_read_as_people_say_them(ms: int | None, text: str) -> None:
    assert duration(ms) == text
