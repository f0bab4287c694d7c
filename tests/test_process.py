"""End to end through real `cronsvc serve` processes: start-up, shutdown,
restart, refusal of a second process, and configuration errors."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes import Receiver, free_port
from tests.helpers_api import parse
from tests.processes import CronsvcProcess, all_logs, stopped, write_config

pytestmark = pytest.mark.e2e


async def api(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, **kwargs) as response,
    ):
        return response.status, await response.json(content_type=None)


async def test_restart_resumes_from_the_last_tick_without_double_firing(
    service: CronsvcProcess, receiver: Receiver
) -> None:
    status, job = await api(
        "POST",
        f"{service.url}/api/cron",
        json={"name": "tick", "cronExpression": "*/1 * * * * *", "webhookUrl": receiver.url},
    )
    assert status == 201
    await receiver.wait_for(3)
    assert await service.stop() == 0
    await asyncio.sleep(3.2)  # ticks fall due while nothing runs
    before_restart = len(receiver.requests)
    await service.start()
    await receiver.wait_for(before_restart + 3)
    await api(
        "POST", f"{service.url}/api/cron/{job['id']}/pause"
    )  # nothing owed while stopped again
    await service.stop()

    ticks = Counter(r.json()["scheduledAt"] for r in receiver.requests)
    assert [t for t, n in ticks.items() if n > 1] == []  # no tick reached the receiver twice

    await service.start()
    logs = await all_logs(service.url, job["id"])
    await service.stop()
    assert not [e for e in logs if e["status"] in ("RUNNING", "LOST")]
    by_tick = Counter(e["scheduledAt"] for e in logs)
    assert [t for t, n in by_tick.items() if n > 1] == []  # one record per tick
    instants = sorted(parse(t) for t in by_tick)
    gaps = [b - a for a, b in itertools.pairwise(instants) if b - a != timedelta(seconds=1)]
    assert gaps == []  # every tick from the first to the last has a record
    # The ticks that fell due while it was down are MISSED, coalesced by
    # fire_once into the run after them: a `catchup` when the latest of them
    # fell before the start, else (a start slower than the next tick) that
    # tick's own `schedule` run.
    ordered = sorted(logs, key=lambda e: e["scheduledAt"])
    first_missed = next(n for n, e in enumerate(ordered) if e["status"] == "MISSED")
    after = next(e for e in ordered[first_missed:] if e["status"] != "MISSED")
    assert after["status"] == "SUCCESS" and after["trigger"] in ("catchup", "schedule")
    catchups = [e for e in logs if e["trigger"] == "catchup"]
    assert len(catchups) <= 1 and all(e["status"] == "SUCCESS" for e in catchups)


async def test_the_ledger_shows_every_owed_tick_across_a_pause_and_a_restart_and_gaps(
    service: CronsvcProcess, receiver: Receiver
) -> None:
    status, job = await api(
        "POST",
        f"{service.url}/api/cron",
        json={
            "name": "ledgered",
            "cronExpression": "*/1 * * * * *",
            "webhookUrl": receiver.url,
            "misfirePolicy": "skip",  # every tick that falls while stopped is MISSED
        },
    )
    assert status == 201
    await receiver.wait_for(3)
    _, paused = await api("POST", f"{service.url}/api/cron/{job['id']}/pause")
    await asyncio.sleep(3)
    _, resumed = await api("POST", f"{service.url}/api/cron/{job['id']}/resume")
    await receiver.wait_for(len(receiver.requests) + 2)
    assert await service.stop() == 0
    await asyncio.sleep(3.2)  # ticks fall due while nothing runs
    count = len(receiver.requests)
    await service.start()
    await receiver.wait_for(count + 2)
    await asyncio.sleep(0.5)  # the results of runs just answered are written behind
    until = parse(receiver.requests[-1].json()["scheduledAt"])
    created, paused_at, resumed_at = (
        parse(job["createdAt"]),
        parse(paused["updatedAt"]),
        parse(resumed["updatedAt"]),
    )
    window = {"since": job["createdAt"], "until": until.isoformat()}
    ledger_url = f"{service.url}/api/cron/{job['id']}/ledger"

    status, ledger = await api("GET", ledger_url, params=window)

    assert status == 200 and ledger["complete"] is True
    owed = [e for e in ledger["entries"] if e["kind"] in ("tick", "gap")]
    # Every second after the creation and after the resume, none in between.
    expected = {
        int(created.timestamp()) + n
        for n in range(1, 60)
        if created.timestamp() < int(created.timestamp()) + n < paused_at.timestamp()
        or resumed_at.timestamp() < int(created.timestamp()) + n < until.timestamp()
    }
    assert {int(parse(e["scheduledAt"]).timestamp()) for e in owed} == expected
    assert [e for e in owed if e["kind"] == "gap"] == [] and ledger["summary"]["gaps"] == 0
    assert len(owed) == ledger["summary"]["ticks"] == len(expected)
    # A tick claimed just before the pause is recorded SKIPPED; nothing else is
    # recorded for the paused span.
    others = [e for e in ledger["entries"] if e["kind"] not in ("tick", "gap")]
    for entry in others:
        assert entry["kind"] == "unscheduled" and entry["status"] == "SKIPPED"
        assert parse(entry["scheduledAt"]) < paused_at + timedelta(seconds=1)
    statuses = Counter(e["status"] for e in owed)
    assert statuses["MISSED"] >= 2  # the ticks that fell while it was stopped
    assert ledger["summary"]["byStatus"]["MISSED"] == statuses["MISSED"]
    assert statuses["SUCCESS"] >= 5

    deleted = next(e for e in owed if e["status"] == "SUCCESS")
    status, _ = await api("DELETE", f"{service.url}/api/execution-logs/{deleted['executionId']}")
    assert status == 200
    status, after = await api("GET", ledger_url, params=window)
    gaps = [e for e in after["entries"] if e["kind"] == "gap"]
    assert [(g["scheduledAt"], g["status"], g["executionId"]) for g in gaps] == [
        (deleted["scheduledAt"], None, None)
    ]
    assert after["summary"]["gaps"] == 1


async def test_sigterm_lets_the_webhook_in_flight_finish_and_leaves_nothing_running(
    service: CronsvcProcess, start_receiver: Any
) -> None:
    slow: Receiver = await start_receiver()
    release = asyncio.Event()

    async def hold() -> None:
        await asyncio.wait_for(release.wait(), 10)

    slow.before_reply = hold
    status, job = await api(
        "POST",
        f"{service.url}/api/cron",
        json={"name": "slow", "cronExpression": "0 0 1 1 *", "webhookUrl": slow.url},
    )
    status, execution = await api("POST", f"{service.url}/api/cron/{job['id']}/trigger")
    assert status == 202
    await slow.wait_for(1)
    assert service.process is not None
    service.process.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    release.set()
    assert await service.stop() == 0
    await service.start()
    status, log = await api("GET", f"{service.url}/api/execution-logs/{execution['id']}")
    assert log["status"] == "SUCCESS"


async def test_sigterm_past_the_grace_period_records_a_failure_not_running(
    service: CronsvcProcess, start_receiver: Any
) -> None:
    stuck: Receiver = await start_receiver()

    async def never() -> None:
        await asyncio.sleep(30)

    stuck.before_reply = never
    _, job = await api(
        "POST",
        f"{service.url}/api/cron",
        json={
            "name": "stuck",
            "cronExpression": "0 0 1 1 *",
            "webhookUrl": stuck.url,
            "timeoutSeconds": 60,
        },
    )
    _, execution = await api("POST", f"{service.url}/api/cron/{job['id']}/trigger")
    await asyncio.sleep(0.5)
    assert await service.stop() == 0  # grace is 5 s in the test config
    await service.start()
    _, log = await api("GET", f"{service.url}/api/execution-logs/{execution['id']}")
    assert log["status"] == "FAILURE" and log["error"]["type"] == "shutdown"


async def test_a_killed_process_leaves_runs_that_the_next_start_marks_lost(
    service: CronsvcProcess, start_receiver: Any
) -> None:
    stuck: Receiver = await start_receiver()

    async def never() -> None:
        await asyncio.sleep(30)

    stuck.before_reply = never
    _, job = await api(
        "POST",
        f"{service.url}/api/cron",
        json={"name": "k", "cronExpression": "0 0 1 1 *", "webhookUrl": stuck.url},
    )
    _, execution = await api("POST", f"{service.url}/api/cron/{job['id']}/trigger")
    await asyncio.sleep(0.3)
    await service.stop(signal.SIGKILL)
    await service.start()
    _, log = await api("GET", f"{service.url}/api/execution-logs/{execution['id']}")
    assert log["status"] == "LOST" and log["error"]["type"] == "lost"


async def claiming_ahead(tmp_path: Path) -> CronsvcProcess:
    """A started process that claims ticks 4 s ahead of them."""
    port = free_port()
    config = write_config(
        tmp_path / "config.toml", port, tmp_path / "cronsvc.db", extra="claim_ahead_s = 4\n"
    )
    service = CronsvcProcess(config_path=config, port=port, log_path=tmp_path / "cronsvc.log")
    await service.start()
    return service


async def claim_ahead(service: CronsvcProcess, job_id: str) -> dict[str, Any]:
    """The job's one claim for a tick still to come, once it exists."""
    async with asyncio.timeout(15):
        while True:
            claims = [
                e
                for e in await all_logs(service.url, job_id)
                if e["status"] == "RUNNING" and parse(e["scheduledAt"]) > datetime.now(UTC)
            ]
            if claims:
                [claim] = claims
                return claim
            await asyncio.sleep(0.1)


async def test_a_tick_claimed_ahead_by_a_killed_process_is_sent_once_at_its_time_after_restart(
    tmp_path: Path, receiver: Receiver
) -> None:
    service = await claiming_ahead(tmp_path)
    try:
        _, job = await api(
            "POST",
            f"{service.url}/api/cron",
            json={"name": "ahead", "cronExpression": "*/10 * * * * *", "webhookUrl": receiver.url},
        )
        claim = await claim_ahead(service, job["id"])
        # A tick may have gone out before the claim was found (a job made just
        # before a ten-second boundary fires at once): wait for the next one.
        sent_before = len(receiver.requests)
        await service.stop(signal.SIGKILL)
        await service.start()
        await receiver.wait_for(sent_before + 1, within_s=15)
        await asyncio.sleep(0.5)
        _, log = await api("GET", f"{service.url}/api/execution-logs/{claim['id']}")
    finally:
        await service.stop(signal.SIGKILL)
    tick = parse(claim["scheduledAt"])
    sent = [r for r in receiver.requests if parse(r.json()["scheduledAt"]) == tick]
    assert len(sent) == 1
    assert sent[0].headers["webhook-id"] == claim["id"]
    assert sent[0].arrived >= tick.timestamp()  # never before its tick
    assert log["status"] == "SUCCESS"


async def test_a_process_paused_between_its_claim_and_its_tick_does_not_send_it_late(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Paused (SIGSTOP) with a tick claimed ahead, and woken past the tick's
    grace: the tick is recorded MISSED, its webhook never sent late."""
    service = await claiming_ahead(tmp_path)
    try:
        _, job = await api(
            "POST",
            f"{service.url}/api/cron",
            json={
                "name": "ahead",
                "cronExpression": "*/10 * * * * *",
                "webhookUrl": receiver.url,
                "misfirePolicy": "skip",
                "misfireGraceSeconds": 0,
            },
        )
        claim = await claim_ahead(service, job["id"])
        tick = parse(claim["scheduledAt"])
        assert service.process is not None
        with stopped(service.process.pid):
            await asyncio.sleep(tick.timestamp() - time.time() + 2)  # past the tick's grace
        async with asyncio.timeout(10):
            while True:
                _, log = await api("GET", f"{service.url}/api/execution-logs/{claim['id']}")
                if log["status"] != "RUNNING":
                    break
                await asyncio.sleep(0.1)
    finally:
        await service.stop(signal.SIGKILL)
    assert [r for r in receiver.requests if parse(r.json()["scheduledAt"]) == tick] == []
    assert log["status"] == "MISSED" and "held up" in log["error"]["message"]


async def test_jobs_survive_a_restart(service: CronsvcProcess) -> None:
    _, job = await api(
        "POST",
        f"{service.url}/api/cron",
        json={"name": "keep", "cronExpression": "0 0 1 1 *", "webhookUrl": "https://example.org/x"},
    )
    await service.stop()
    await service.start()
    status, again = await api("GET", f"{service.url}/api/cron/{job['id']}")
    assert status == 200 and again == job


async def test_second_process_on_the_same_database_refuses_to_start(
    service: CronsvcProcess, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "second.toml"
    config.write_text(
        service.config_path.read_text().replace(f"port = {service.port}", f"port = {port}")
    )
    second = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cronsvc",
        "serve",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        _, stderr = await second.communicate()
    assert second.returncode == 1
    assert "refusing to start" in stderr.decode() and "locked" in stderr.decode()
    status, _ = await api("GET", f"{service.url}/healthz")
    assert status == 200


@pytest.mark.parametrize(
    ("content", "env", "fragment"),
    [
        ("[server]\nport = 'eighty'\n", {}, "server.port"),
        ("[server]\nprot = 80\n", {}, "server.prot"),
        ("[server\n", {}, "not valid TOML"),
        ("", {"CRONSVC_SCHEDULER_RESYNC_INTERVAL_S": "soon"}, "scheduler.resync_interval_s"),
        ("", {"CRONSVC_LOGGING_FORMAT": "xml"}, "logging.format"),
        ("", {"CRONSVC_STORE_URL": "postgres://db/x"}, "store.url"),
    ],
)
def test_bad_configuration_stops_start_up_with_one_line_naming_the_key(
    tmp_path: Path, content: str, env: dict[str, str], fragment: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(content)
    result = subprocess.run(
        [sys.executable, "-m", "cronsvc", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr


def test_check_config_prints_the_resolved_configuration(tmp_path: Path) -> None:

    config = tmp_path / "ok.toml"
    config.write_text("[server]\nport = 9999\n")
    result = subprocess.run(
        [sys.executable, "-m", "cronsvc", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "CRONSVC_WEBHOOK_TIMEOUT_S": "3"},
    )
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    assert resolved["server"]["port"] == 9999 and resolved["webhook"]["timeout_s"] == 3.0


@pytest.fixture
async def few_records_service(tmp_path: Path) -> AsyncIterator[CronsvcProcess]:
    """Keeps one MISSED record and one catch-up per job, so a short outage
    already overflows what is recorded."""
    port = free_port()
    config = write_config(
        tmp_path / "config.toml",
        port,
        tmp_path / "data" / "cronsvc.db",
        "max_missed_records = 1\nmax_catchup = 1\n",
    )
    process = CronsvcProcess(config_path=config, port=port, log_path=tmp_path / "cronsvc.log")
    await process.start()
    yield process
    await process.stop(signal.SIGKILL)


async def test_after_more_overdue_ticks_than_are_recorded_the_latest_one_still_fires(
    few_records_service: CronsvcProcess, receiver: Receiver
) -> None:
    service = few_records_service
    _, job = await api(
        "POST",
        f"{service.url}/api/cron",
        json={
            "name": "overflow",
            "cronExpression": "*/1 * * * * *",
            "webhookUrl": receiver.url,
            # Room for a start-up slowed by a busy machine: the newest
            # overdue tick must still be in its grace when the scheduler
            # first looks.
            "misfireGraceSeconds": 4,
        },
    )
    await receiver.wait_for(2)
    assert await service.stop() == 0
    # ~8 ticks fall due: older ones past the 4 s grace. The start is timed so
    # the service starts mid-second (spawning takes ~0.75 s): a tick falling
    # between its start and its first look would be due as a regular tick,
    # newer than every overdue one, and fire_once rightly fires only that.
    await asyncio.sleep(8 + (0.75 - time.time()) % 1)
    await service.start()
    _, ready = await api("GET", f"{service.url}/readyz")
    restarted = parse(ready["startedAt"]).timestamp()  # ticks before it are catch-ups
    await receiver.wait_for(len(receiver.requests) + 2)
    await api("POST", f"{service.url}/api/cron/{job['id']}/pause")
    async with asyncio.timeout(10):  # results are written behind the sends
        while True:
            logs = await all_logs(service.url, job["id"])
            if all(e["status"] != "RUNNING" for e in logs):
                break
            await asyncio.sleep(0.1)
    catchups = [e for e in logs if e["trigger"] == "catchup"]
    assert len(catchups) == 1 and catchups[0]["status"] == "SUCCESS"
    # The catch-up is the newest overdue tick, not the oldest one kept.
    overdue = [
        parse(e["scheduledAt"]).timestamp()
        for e in logs
        if parse(e["scheduledAt"]).timestamp() < restarted
    ]
    assert parse(catchups[0]["scheduledAt"]).timestamp() == max(overdue)
    assert restarted - parse(catchups[0]["scheduledAt"]).timestamp() <= 2.5
    ticks = Counter(r.json()["scheduledAt"] for r in receiver.requests)
    assert [t for t, n in ticks.items() if n > 1] == []
    metrics = await _metrics_text(service.url)
    assert "cronsvc_ticks_missed_unrecorded_total" in metrics


async def _metrics_text(base: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as response:
        return await response.text()


def run_cronsvc(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cronsvc", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_a_public_host_without_tokens_refuses_to_start_with_one_line(
    tmp_path: Path, host: str
) -> None:
    config = write_config(tmp_path / "c.toml", free_port(), tmp_path / "cronsvc.db")
    config.write_text(config.read_text().replace('host = "127.0.0.1"', f'host = "{host}"'))
    result = run_cronsvc("serve", "--config", str(config))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "server.host: refusing to serve" in lines[0] and host in lines[0]
    assert "server.allow_unauthenticated" in lines[0] and "server.api_tokens" in lines[0]
    assert not (tmp_path / "cronsvc.db").exists()  # stopped before opening anything


def test_a_public_host_is_allowed_with_a_token_or_when_explicitly_unauthenticated(
    tmp_path: Path,
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[server]\nhost = "0.0.0.0"\nallow_unauthenticated = true\n')
    result = run_cronsvc("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    server = json.loads(result.stdout)["server"]
    assert server["host"] == "0.0.0.0" and server["allow_unauthenticated"] is True
    assert server["api_tokens"] == []
    with_token = run_cronsvc(
        "check-config",
        env={"CRONSVC_SERVER_HOST": "0.0.0.0", "CRONSVC_SERVER_API_TOKENS": SECRET_TOKENS[0]},
    )
    assert with_token.returncode == 0, with_token.stderr


SECRET_TOKENS = ["process-token-one-5f0c2a9e7d", "process-token-two-8b1e4c6a3f"]
WRONG_TOKEN = "wrong-token-guess-0d9f8e7c6b"


async def test_tokens_never_reach_the_logs_or_check_config(tmp_path: Path) -> None:
    tokens_file = tmp_path / "api_tokens"
    tokens_file.write_text(f"# second token\n{SECRET_TOKENS[1]}\n")
    port = free_port()
    config = write_config(
        tmp_path / "c.toml",
        port,
        tmp_path / "cronsvc.db",
        "[logging]\nlevel = 'debug'\n",
    )
    config.write_text(
        config.read_text().replace(
            "shutdown_grace_s = 5\n",
            f'shutdown_grace_s = 5\napi_tokens = ["{SECRET_TOKENS[0]}"]\n'
            f'api_tokens_file = "{tokens_file}"\n',
        )
    )
    process = CronsvcProcess(config_path=config, port=port, log_path=tmp_path / "cronsvc.log")
    await process.start()
    try:
        job = {"name": "j", "cronExpression": "@daily", "webhookUrl": "https://example.org/"}
        for token in (*SECRET_TOKENS, WRONG_TOKEN):
            headers = {"Authorization": f"Bearer {token}"}
            status, _ = await api("POST", f"{process.url}/api/cron", json=job, headers=headers)
            expected = (201, 409) if token in SECRET_TOKENS else (401,)  # 409: the name is taken
            assert status in expected, token
            status, _ = await api("GET", f"{process.url}/api/nowhere", headers=headers)
            assert status in (401, 404)
        status, _ = await api("GET", f"{process.url}/api/cron")
        assert status == 401
    finally:
        assert await process.stop() == 0
    log = process.log_path.read_text()
    assert "request_rejected" in log  # debug logging was on and saw the refusals
    assert '"api_tokens": 2' in log or "api_tokens=2" in log
    for token in (*SECRET_TOKENS, WRONG_TOKEN):
        assert token not in log

    checked = run_cronsvc("check-config", "--config", str(config))
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["server"]["api_tokens"] == ["<redacted>"] * 2
    for token in SECRET_TOKENS:
        assert token not in checked.stdout and token not in checked.stderr


async def test_a_paused_process_deals_with_the_ticks_it_slept_through_by_each_jobs_policy(
    service: CronsvcProcess, receiver: Receiver
) -> None:
    jobs = {}
    for policy in ("fire_once", "fire_all", "skip"):
        status, jobs[policy] = await api(
            "POST",
            f"{service.url}/api/cron",
            json={
                "name": policy,
                "cronExpression": "* * * * * *",
                "webhookUrl": receiver.url,
                "misfirePolicy": policy,
            },
        )
        assert status == 201
    await receiver.wait_for(6)
    assert service.process is not None
    service.process.send_signal(signal.SIGSTOP)  # the event loop stops dead
    stopped_at = datetime.now(UTC)
    await asyncio.sleep(4.5)
    service.process.send_signal(signal.SIGCONT)
    await asyncio.sleep(2.5)
    since = stopped_at.replace(microsecond=0) + timedelta(seconds=1)
    until = since + timedelta(seconds=4)  # the ticks that fell due while it slept

    outcomes = {}
    for policy, job in jobs.items():
        _, ledger = await api(
            "GET",
            f"{service.url}/api/cron/{job['id']}/ledger",
            params={"since": since.isoformat(), "until": until.isoformat()},
        )
        entries = [e for e in ledger["entries"] if e["kind"] == "tick"]
        assert len(entries) == 4, ledger
        assert ledger["summary"]["gaps"] == 0  # every owed tick has its one record
        outcomes[policy] = [e["status"] for e in entries]
    # fire_all sends every tick late; fire_once only the latest (and at most
    # one claimed just before the pause), the rest MISSED; skip sends none of
    # the overdue ones, bar one claimed before the pause.
    assert outcomes["fire_all"] == ["SUCCESS"] * 4
    assert outcomes["fire_once"][-1] == "SUCCESS"
    assert outcomes["fire_once"].count("MISSED") >= 2
    assert outcomes["skip"][1:] == ["MISSED"] * 3
