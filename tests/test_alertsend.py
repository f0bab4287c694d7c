"""The alert sender against real receivers: the documents, their signatures,
retries, failures, the SSRF guard and a full queue, each counted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from cronsvc.alerts import AlertChange, AlertKind, AlertState, Outcome
from cronsvc.alertsend import Alert, AlertSender
from cronsvc.clock import SystemClock
from cronsvc.config import AlertsConfig
from cronsvc.domain import AlertFormat, AlertPolicy, ErrorInfo, ExecutionStatus
from cronsvc.metrics import Metrics
from cronsvc.netguard import TargetPolicy
from tests.fakes import Receiver
from tests.standard_webhooks import new_secret, verifies

TICK = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
DASHBOARD = "https://cron.example.com"
StartReceiver = Callable[..., Any]
MakeSender = Callable[..., AlertSender]


def failing(url: str, **policy: Any) -> AlertChange:
    outcome = Outcome(
        job_id="0123456789abcdef01234567",
        status=ExecutionStatus.FAILURE,
        scheduled_at=TICK,
        finished_at=TICK,
        execution_id="fedcba9876543210fedcba98",
        error=ErrorInfo(type="http_status", message="HTTP 500 Internal Server Error"),
    )
    return AlertChange(
        job_id=outcome.job_id,
        kind=AlertKind.FAILING,
        before=AlertState(streak=2, version=4),
        after=AlertState(alerting=True, streak=3, changed_at=TICK, version=5),
        outcome=outcome,
        policy=AlertPolicy(url=url, after=3, **policy),
    )


def alert(change: AlertChange, job_secret: str | None = None) -> Alert:
    return Alert(change=change, job_name="nightly report", job_secret=job_secret)


@pytest.fixture
async def make_sender() -> AsyncIterator[MakeSender]:
    """Senders running against loopback receivers (the guard opened unless
    `target_policy` says otherwise), stopped at teardown."""
    running: list[tuple[AlertSender, asyncio.Task[None]]] = []
    metrics = Metrics()

    def make(
        *, start: bool = True, target_policy: TargetPolicy | None = None, **config: Any
    ) -> AlertSender:
        settings = {"max_attempts": 3, "timeout_s": 5.0, **config}
        sender = AlertSender(
            config=AlertsConfig(**settings),
            dashboard_url=DASHBOARD,
            target_policy=target_policy
            or TargetPolicy.from_settings(allow_private=True, allowed_cidrs=[]),
            clock=SystemClock(),
            metrics=metrics,
            backoff_s=0.01,
        )
        if start:
            running.append((sender, asyncio.create_task(sender.run())))
        return sender

    yield make
    for sender, task in running:
        await sender.aclose(task, 0.0)


def counted(sender: AlertSender, outcome: str) -> float:
    return sender._metrics.get("cronsvc_alerts_total", outcome=outcome)


async def test_a_failing_alert_is_the_standard_document_signed_with_the_policys_secret(
    make_sender: MakeSender, receiver: Receiver
) -> None:
    secret = new_secret()
    change = failing(receiver.url, secret=secret)
    make_sender().send(alert(change, job_secret=new_secret()))

    (request,) = await receiver.wait_for(1)
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["webhook-id"] == change.alert_id
    assert verifies(secret, request.headers, request.body)
    document = json.loads(request.body)
    sent_at = document.pop("sentAt")
    assert datetime.fromisoformat(sent_at.replace("Z", "+00:00")).tzinfo is not None
    assert document == {
        "type": "job.failing",
        "job": {"id": change.job_id, "name": "nightly report"},
        "state": {"from": "ok", "to": "alerting"},
        "consecutiveFailures": 3,
        "lastRun": {
            "executionId": "fedcba9876543210fedcba98",
            "status": "FAILURE",
            "scheduledAt": "2026-03-01T09:30:00.000Z",
            "finishedAt": "2026-03-01T09:30:00.000Z",
            "error": {"type": "http_status", "message": "HTTP 500 Internal Server Error"},
        },
        "dashboardUrl": f"{DASHBOARD}/#/jobs/{change.job_id}",
    }


@pytest.mark.parametrize("signer", ["job", "service", "none"])
async def test_an_alert_is_signed_with_the_jobs_secret_else_the_services_else_not(
    make_sender: MakeSender, receiver: Receiver, signer: str
) -> None:
    job_secret, service_secret = new_secret(), new_secret()
    sender = make_sender(secret=service_secret if signer != "none" else "")
    sender.send(alert(failing(receiver.url), job_secret=job_secret if signer == "job" else None))

    (request,) = await receiver.wait_for(1)
    if signer == "none":
        assert "webhook-signature" not in request.headers
        assert request.headers["webhook-timestamp"]
    else:
        expected = job_secret if signer == "job" else service_secret
        assert verifies(expected, request.headers, request.body)


async def test_a_slack_alert_is_one_line_of_text_with_the_link(
    make_sender: MakeSender, receiver: Receiver
) -> None:
    change = failing(receiver.url, format=AlertFormat.SLACK)
    make_sender().send(alert(change))

    (request,) = await receiver.wait_for(1)
    document = json.loads(request.body)
    assert list(document) == ["text"]
    text = document["text"]
    assert "\n" not in text
    assert "'nightly report' is failing after 3 failed runs" in text
    assert "FAILURE (http_status: HTTP 500 Internal Server Error)" in text
    assert f"<{DASHBOARD}/#/jobs/{change.job_id}|" in text


async def test_an_alert_whose_receiver_fails_twice_is_retried_and_sent(
    make_sender: MakeSender, start_receiver: StartReceiver
) -> None:
    answers = iter([503, 500, 204])

    async def flaky(request: web.Request) -> web.Response:
        return web.Response(status=next(answers))

    receiver: Receiver = await start_receiver(flaky)
    sender = make_sender()
    change = failing(receiver.url)
    assert await sender.deliver(alert(change))

    assert len(receiver.requests) == 3
    assert {r.headers["webhook-id"] for r in receiver.requests} == {change.alert_id}
    assert counted(sender, "retried") == 2
    assert counted(sender, "sent") == 1
    assert counted(sender, "failed") == 0


async def test_an_alert_whose_receiver_always_fails_is_counted_failed(
    make_sender: MakeSender, start_receiver: StartReceiver
) -> None:
    receiver: Receiver = await start_receiver()
    receiver.status = 500
    sender = make_sender(max_attempts=2)
    assert not await sender.deliver(alert(failing(receiver.url)))

    assert len(receiver.requests) == 2
    assert counted(sender, "retried") == 1
    assert counted(sender, "failed") == 1
    assert counted(sender, "sent") == 0


async def test_an_alert_answered_with_a_client_error_is_not_retried(
    make_sender: MakeSender, receiver: Receiver
) -> None:
    receiver.status = 404
    sender = make_sender()
    assert not await sender.deliver(alert(failing(receiver.url)))
    assert len(receiver.requests) == 1
    assert counted(sender, "failed") == 1


async def test_an_alert_to_a_target_the_ssrf_guard_refuses_is_counted_failed(
    make_sender: MakeSender, receiver: Receiver
) -> None:
    sender = make_sender(target_policy=TargetPolicy())  # loopback refused
    assert not await sender.deliver(alert(failing(receiver.url)))
    assert receiver.requests == []
    assert counted(sender, "failed") == 1
    assert counted(sender, "retried") == 0


async def test_alerts_beyond_the_queue_are_counted_dropped(
    make_sender: MakeSender, receiver: Receiver
) -> None:
    sender = make_sender(start=False, max_pending=2)
    for _ in range(5):
        sender.send(alert(failing(receiver.url)))
    assert sender.pending == 2
    assert counted(sender, "dropped") == 3


async def test_alerts_still_queued_when_the_sender_stops_are_counted_dropped(
    make_sender: MakeSender, start_receiver: StartReceiver
) -> None:
    receiver: Receiver = await start_receiver()
    receiver.before_reply = receiver.hold  # every sender is kept waiting
    sender = make_sender(start=False)
    task = asyncio.create_task(sender.run())
    for _ in range(6):
        sender.send(alert(failing(receiver.url)))
    await receiver.wait_active(4)  # four senders busy, two alerts queued
    await sender.aclose(task, 0.0)
    assert counted(sender, "dropped") == 6  # the unanswered ones too
    assert counted(sender, "sent") == 0
