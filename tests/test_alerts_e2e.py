"""Failure alerts end to end: real `cronsvc serve` processes, real webhook
targets and a real alert receiver, checked through HTTP alone; one process
on SQLite, and three sharing MongoDB and Redis, where each state change is
told once, not once per instance."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import Receiver, free_port
from tests.processes import CronsvcProcess, write_config
from tests.standard_webhooks import new_secret, verifies
from tests.test_cluster import call, cluster_processes

pytestmark = pytest.mark.e2e


async def until(check: Callable[[], Any], within_s: float = 30.0, every_s: float = 0.1) -> Any:
    """Poll `check` (sync or async) until it answers something true."""
    async with asyncio.timeout(within_s):
        while True:
            answer = check()
            if asyncio.iscoroutine(answer):
                answer = await answer
            if answer:
                return answer
            await asyncio.sleep(every_s)


def alert_env(receiver: Receiver, **keys: str) -> dict[str, str]:
    return {
        "CRONSVC_ALERTS_URL": receiver.url,
        **{f"CRONSVC_ALERTS_{key.upper()}": value for key, value in keys.items()},
    }


def documents(receiver: Receiver) -> list[dict[str, Any]]:
    return [json.loads(request.body) for request in receiver.requests]


async def job_state(base: str, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = await call("GET", f"{base}/api/cron/{job_id}")
    return job


@pytest.fixture
async def start_service(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[CronsvcProcess] = []

    async def start(env: dict[str, str]) -> CronsvcProcess:
        port = free_port()
        config = write_config(tmp_path / "config.toml", port, tmp_path / "data" / "cronsvc.db")
        process = CronsvcProcess(
            config_path=config, port=port, log_path=tmp_path / "cronsvc.log", env=env
        )
        await process.start()
        started.append(process)
        return process

    yield start
    for process in started:
        await process.stop(signal.SIGKILL)


async def test_a_failing_job_alerts_once_after_n_failures_and_once_on_recovery(
    start_service: Callable[..., Any], start_receiver: Callable[..., Any]
) -> None:
    target: Receiver = await start_receiver()
    alerts: Receiver = await start_receiver()
    secret = new_secret()
    service = await start_service(alert_env(alerts, after="2", secret=secret))
    target.status = 500
    job = await call(
        "POST",
        f"{service.url}/api/cron",
        json={"name": "flaky", "cronExpression": "* * * * * *", "webhookUrl": target.url},
    )
    assert job["alertState"] == {"alerting": False, "consecutiveFailures": 0, "since": None}

    await alerts.wait_for(1, within_s=30)
    # Runs go on failing: still one alert, not one per run.
    failing = await until(lambda: _failures_at_least(service.url, job["id"], 5), within_s=30)
    assert failing["alerting"] is True and failing["since"] is not None
    assert [d["type"] for d in documents(alerts)] == ["job.failing"]
    first = documents(alerts)[0]
    assert first["consecutiveFailures"] == 2
    assert first["job"] == {"id": job["id"], "name": "flaky"}
    assert first["state"] == {"from": "ok", "to": "alerting"}
    assert first["lastRun"]["status"] == "FAILURE"
    assert first["dashboardUrl"].endswith(f"/#/jobs/{job['id']}")
    assert verifies(secret, alerts.requests[0].headers, alerts.requests[0].body)

    target.status = 200
    await alerts.wait_for(2, within_s=30)
    recovered = (await job_state(service.url, job["id"]))["alertState"]
    assert recovered["alerting"] is False and recovered["consecutiveFailures"] == 0
    # Runs go on succeeding: nothing more is told.
    runs = len(target.requests)
    await until(lambda: len(target.requests) >= runs + 3, within_s=30)
    await until(lambda: _last_status(service.url, job["id"], "SUCCESS"))
    assert [d["type"] for d in documents(alerts)] == ["job.failing", "job.recovered"]
    assert documents(alerts)[1]["state"] == {"from": "alerting", "to": "ok"}


async def _failures_at_least(base: str, job_id: str, count: int) -> dict[str, Any] | None:
    state: dict[str, Any] = (await job_state(base, job_id))["alertState"]
    return state if state["consecutiveFailures"] >= count else None


async def _last_status(base: str, job_id: str, status: str) -> bool:
    job = await job_state(base, job_id)
    return bool(job["lastStatus"] == status)


async def test_a_job_its_target_pauses_with_410_alerts_paused_once(
    start_service: Callable[..., Any], start_receiver: Callable[..., Any]
) -> None:
    target: Receiver = await start_receiver()
    alerts: Receiver = await start_receiver()
    service = await start_service(alert_env(alerts, after="5", format="slack"))
    target.status = 410
    job = await call(
        "POST",
        f"{service.url}/api/cron",
        json={"name": "gone", "cronExpression": "* * * * * *", "webhookUrl": target.url},
    )
    (request,) = await alerts.wait_for(1, within_s=30)
    text = json.loads(request.body)["text"]
    assert "'gone' was paused: its target answered 410 Gone" in text
    paused = await job_state(service.url, job["id"])
    assert paused["isActive"] is False
    assert paused["pausedReason"].startswith("the webhook target answered 410 Gone")
    # The paused run's own FAILURE counts once; no failing alert (after = 5).
    await until(lambda: _failures_at_least(service.url, job["id"], 1))
    assert len(alerts.requests) == 1


async def test_a_jobs_own_alert_policy_set_through_the_api_wins_over_the_default(
    start_service: Callable[..., Any], start_receiver: Callable[..., Any]
) -> None:
    target: Receiver = await start_receiver()
    default: Receiver = await start_receiver()
    own: Receiver = await start_receiver()
    service = await start_service(alert_env(default))
    target.status = 500
    secret = new_secret()
    policy = {"url": own.url, "after": 2, "format": "slack", "secret": secret}
    mine = await call(
        "POST",
        f"{service.url}/api/cron",
        json={
            "name": "mine",
            "cronExpression": "* * * * * *",
            "webhookUrl": target.url,
            "alerts": policy,
        },
    )
    quiet = await call(
        "POST",
        f"{service.url}/api/cron",
        json={
            "name": "quiet",
            "cronExpression": "* * * * * *",
            "webhookUrl": target.url,
            "alerts": {"enabled": False},
        },
    )
    assert mine["alerts"]["hasSecret"] is True and "secret" not in mine["alerts"]
    assert quiet["alertState"] is None

    (request,) = await own.wait_for(1, within_s=30)
    assert "cronsvc: job 'mine' is failing after 2 failed runs" in json.loads(request.body)["text"]
    assert verifies(secret, request.headers, request.body)
    # Both jobs keep failing; the default's receiver hears of neither: one
    # has its own policy, the other turned alerts off.
    await until(lambda: _failures_at_least(service.url, mine["id"], 4), within_s=30)
    await until(lambda: _executions_at_least(service.url, quiet["id"], 4), within_s=30)
    assert default.requests == []
    assert len(own.requests) == 1
    assert (await job_state(service.url, quiet["id"]))["alertState"] is None


async def _executions_at_least(base: str, job_id: str, count: int) -> bool:
    logs = await call("GET", f"{base}/api/execution-logs/job/{job_id}?limit=500")
    return len(logs) >= count


async def test_three_instances_tell_each_state_change_once(
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
    mongo_database_url: str,
    start_receiver: Callable[..., Any],
) -> None:
    target: Receiver = await start_receiver()
    alerts: Receiver = await start_receiver()
    processes = cluster_processes(tmp_path, redis_url, redis_prefix, mongo_database_url)
    for process in processes:
        process.env = alert_env(alerts, after="3")
    await asyncio.gather(*(p.start() for p in processes))
    try:
        target.status = 500
        job = await call(
            "POST",
            f"{processes[0].url}/api/cron",
            json={"name": "shared", "cronExpression": "* * * * * *", "webhookUrl": target.url},
        )
        # Its owner fires its ticks; runs by hand on every instance fold
        # outcomes from all three into the one alert state.
        for process in processes:
            await call("POST", f"{process.url}/api/cron/{job['id']}/trigger")
        await alerts.wait_for(1, within_s=40)
        await until(lambda: _failures_at_least(processes[1].url, job["id"], 8), within_s=40)
        target.status = 200
        await alerts.wait_for(2, within_s=40)
        runs = len(target.requests)
        await until(lambda: len(target.requests) >= runs + 5, within_s=40)
        await until(lambda: _last_status(processes[2].url, job["id"], "SUCCESS"))
        logs = await call("GET", f"{processes[0].url}/api/execution-logs/job/{job['id']}?limit=500")
        assert len({entry["instanceId"] for entry in logs}) >= 2  # the runs were spread out
        assert [d["type"] for d in documents(alerts)] == ["job.failing", "job.recovered"]
        assert len({r.headers["webhook-id"] for r in alerts.requests}) == 2
    finally:
        await asyncio.gather(*(p.stop(signal.SIGKILL) for p in processes))


async def test_a_run_its_killed_process_left_is_marked_lost_and_alerts(
    start_service: Callable[..., Any], start_receiver: Callable[..., Any]
) -> None:
    stuck: Receiver = await start_receiver()
    stuck.before_reply = stuck.hold  # answers nothing while the process lives
    alerts: Receiver = await start_receiver()
    service = await start_service(alert_env(alerts))
    job = await call(
        "POST",
        f"{service.url}/api/cron",
        json={"name": "stuck", "cronExpression": "0 0 1 1 *", "webhookUrl": stuck.url},
    )
    execution = await call("POST", f"{service.url}/api/cron/{job['id']}/trigger")
    await stuck.wait_for(1)
    await service.stop(signal.SIGKILL)
    await service.start()  # its leader marks the run LOST at start-up

    (request,) = await alerts.wait_for(1, within_s=30)
    document = json.loads(request.body)
    assert document["type"] == "job.failing"
    assert document["lastRun"]["executionId"] == execution["id"]
    assert document["lastRun"]["status"] == "LOST"
    assert document["lastRun"]["error"]["type"] == "lost"
