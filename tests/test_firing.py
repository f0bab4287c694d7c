"""Jobs fire through a running service: real scheduler, real SQLite, real
receivers on port 0. Observed through HTTP alone."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from cronsvc.api.context import CONTEXT
from cronsvc.config import Config
from cronsvc.domain import Job, JobSpec
from cronsvc.errors import StoreUnavailable
from cronsvc.ids import new_id
from cronsvc.service import DELIVERIES, DISPATCHER, STORE, build_app
from tests.fakes import EarlyClock, Receiver, free_port
from tests.helpers_api import Client, MakeClient, parse
from tests.standard_webhooks import signatures, verifies

EVERY_SECOND = "*/1 * * * * *"


def fired_after(receiver: Receiver, start: int, instant: float) -> list[str]:
    """Ticks after `instant` among the requests from index `start` on."""
    ticks = [r.json()["scheduledAt"] for r in receiver.requests[start:]]
    return [t for t in ticks if parse(t).timestamp() > instant]


async def create(client: Client, url: str, **fields: Any) -> dict[str, Any]:
    document = {
        "name": f"job {url} {fields}",
        "cronExpression": EVERY_SECOND,
        "webhookUrl": url,
        **fields,
    }
    response = await client.post("/api/cron", json=document)
    assert response.status == 201, await response.text()
    job: dict[str, Any] = await response.json()
    return job


async def logs_for(
    client: Client, job_id: str, minimum: int = 1, within_s: float = 10.0
) -> list[dict[str, Any]]:
    """Final (non-RUNNING) logs of a job, waiting until there are `minimum`."""
    async with asyncio.timeout(within_s):
        while True:
            response = await client.get(f"/api/execution-logs/job/{job_id}?limit=500")
            final = [e for e in await response.json() if e["status"] != "RUNNING"]
            if len(final) >= minimum:
                return final
            await asyncio.sleep(0.1)


async def test_every_second_job_fires_each_second_and_is_logged(
    client: Client, receiver: Receiver
) -> None:
    job = await create(client, receiver.url)
    requests = await receiver.wait_for(3)
    ticks = [parse(r.json()["scheduledAt"]) for r in requests[:3]]
    assert all(t.microsecond == 0 for t in ticks)
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(ticks)] == [1.0, 1.0]
    for request, tick in zip(requests, ticks, strict=False):
        assert request.arrived >= tick.timestamp()
        body = request.json()
        assert body["jobId"] == job["id"] and body["jobName"] == job["name"]
        assert body["trigger"] == "schedule" and body["attempt"] == 1
        assert request.headers["webhook-id"] == body["executionId"]
    logs = await logs_for(client, job["id"], 3)
    by_id = {e["id"]: e for e in logs}
    first = by_id[requests[0].json()["executionId"]]
    assert (
        first["status"] == "SUCCESS"
        and first["responseStatus"] == 200
        and first["responseBody"] == "ok"
    )
    assert first["responseTruncated"] is False and first["error"] is None
    assert first["cronJobId"] == job["id"] and first["jobName"] == job["name"]
    assert parse(first["scheduledAt"]) == ticks[0]
    assert parse(first["executedAt"]) >= ticks[0]
    assert parse(first["finishedAt"]) >= parse(first["executedAt"])
    assert first["durationMs"] >= 0 and first["attempts"] == 1 and first["trigger"] == "schedule"
    assert first["instanceId"]
    everything = await (await client.get("/api/execution-logs?limit=500")).json()
    assert first["id"] in {e["id"] for e in everything}
    read = await (await client.get(f"/api/cron/{job['id']}")).json()
    assert read["lastStatus"] == "SUCCESS" and read["lastRunAt"] is not None


async def test_failure_is_recorded_with_status_and_error(
    client: Client, receiver: Receiver
) -> None:
    receiver.status = 500
    receiver.reply = "broken"
    job = await create(client, receiver.url)
    (log, *_) = await logs_for(client, job["id"])
    assert (
        log["status"] == "FAILURE"
        and log["responseStatus"] == 500
        and log["responseBody"] == "broken"
    )
    assert log["error"]["type"] == "http_status"
    assert "Traceback" not in log["error"]["message"]


@pytest.fixture
async def small_capture_client(config: Config) -> AsyncIterator[Client]:
    small = config.model_copy(
        update={"webhook": config.webhook.model_copy(update={"max_response_bytes": 10})}
    )
    async with TestClient(TestServer(build_app(small), host="127.0.0.1")) as test_client:
        yield test_client


async def test_response_body_is_truncated_at_the_limit_and_flagged(
    small_capture_client: Client, receiver: Receiver
) -> None:
    receiver.reply = "0123456789abcdef"
    job = await create(small_capture_client, receiver.url)
    (log, *_) = await logs_for(small_capture_client, job["id"])
    assert log["responseBody"] == "0123456789" and log["responseTruncated"] is True


async def test_new_webhook_url_is_used_by_the_next_tick_and_the_old_one_gets_nothing(
    client: Client, receiver: Receiver, start_receiver: Any
) -> None:
    new_receiver: Receiver = await start_receiver()
    job = await create(client, receiver.url)
    await receiver.wait_for(1)
    response = await client.patch(f"/api/cron/{job['id']}", json={"webhookUrl": new_receiver.url})
    assert response.status == 200
    changed_at = datetime.now().timestamp()
    old_count = len(receiver.requests)
    await new_receiver.wait_for(2)
    # A fire already on the wire when the change landed may still arrive; none after.
    assert fired_after(receiver, old_count, changed_at) == []
    assert {r.json()["jobId"] for r in new_receiver.requests} == {job["id"]}


async def test_new_schedule_is_used_at_once(client: Client, receiver: Receiver) -> None:
    job = await create(client, receiver.url, cronExpression="0 0 1 1 *")  # once a year
    await client.put(
        f"/api/cron/{job['id']}",
        json={"name": job["name"], "cronExpression": EVERY_SECOND, "webhookUrl": receiver.url},
    )
    await receiver.wait_for(2)


async def test_deleted_job_never_fires_again(client: Client, receiver: Receiver) -> None:
    job = await create(client, receiver.url)
    await receiver.wait_for(1)
    await client.delete(f"/api/cron/{job['id']}")
    deleted_at = datetime.now().timestamp()
    count = len(receiver.requests)
    await asyncio.sleep(2.5)
    assert fired_after(receiver, count, deleted_at) == []


async def test_pause_stops_firing_and_resume_restarts_it(
    client: Client, receiver: Receiver
) -> None:
    job = await create(client, receiver.url)
    await receiver.wait_for(1)
    await client.post(f"/api/cron/{job['id']}/pause")
    paused_at = datetime.now().timestamp()
    count = len(receiver.requests)
    await asyncio.sleep(2.5)
    assert fired_after(receiver, count, paused_at) == []
    resume_sent = datetime.now().timestamp()
    await client.post(f"/api/cron/{job['id']}/resume")
    await receiver.wait_for(len(receiver.requests) + 1)
    # Firing restarts after the resume: no tick from the paused stretch is sent.
    assert fired_after(receiver, count, paused_at) == fired_after(receiver, count, resume_sent)
    assert fired_after(receiver, count, resume_sent) != []
    # Ticks that fell while paused are not owed: no MISSED records for them.
    logs = await (await client.get(f"/api/execution-logs/job/{job['id']}?status=MISSED")).json()
    assert logs == []


async def test_inactive_job_does_not_fire(client: Client, receiver: Receiver) -> None:
    await create(client, receiver.url, isActive=False)
    await asyncio.sleep(2.2)
    assert receiver.requests == []


async def test_trigger_fires_now_and_answers_202_with_the_execution_id(
    client: Client, receiver: Receiver
) -> None:
    job = await create(client, receiver.url, cronExpression="0 0 1 1 *", isActive=False)
    response = await client.post(f"/api/cron/{job['id']}/trigger")
    assert response.status == 202
    body = await response.json()
    assert body["executionId"] == body["id"] and body["trigger"] == "manual"
    assert response.headers["Location"] == f"/api/execution-logs/{body['id']}"
    (request,) = await receiver.wait_for(1)
    assert request.headers["webhook-id"] == body["id"] and request.json()["trigger"] == "manual"
    async with asyncio.timeout(10):
        while True:
            log = await (await client.get(f"/api/execution-logs/{body['id']}")).json()
            if log["status"] != "RUNNING":
                break
            await asyncio.sleep(0.05)
    assert log["status"] == "SUCCESS" and log["trigger"] == "manual"


async def run_now(client: Client, job_id: str) -> dict[str, Any]:
    """Trigger the job and answer its execution log once it is final."""
    triggered = await client.post(f"/api/cron/{job_id}/trigger")
    assert triggered.status == 202, await triggered.text()
    execution_id = (await triggered.json())["id"]
    async with asyncio.timeout(10):
        while True:
            log: dict[str, Any] = await (
                await client.get(f"/api/execution-logs/{execution_id}")
            ).json()
            if log["status"] != "RUNNING":
                return log
            await asyncio.sleep(0.05)


YEARLY_PAUSED = {"cronExpression": "0 0 1 1 *", "isActive": False}
"""Fires only when triggered."""


async def test_a_generated_secret_signs_calls_and_a_rotation_signs_with_both(
    client: Client, receiver: Receiver
) -> None:
    job = await create(client, receiver.url, secret="generate", **YEARLY_PAUSED)
    first = job["secret"]

    await run_now(client, job["id"])
    rotated = await client.patch(f"/api/cron/{job['id']}", json={"secret": "generate"})
    second = (await rotated.json())["secret"]
    await run_now(client, job["id"])

    before, during = receiver.requests
    assert signatures(before.headers) != []
    assert verifies(first, before.headers, before.body)
    new, old = signatures(during.headers)
    assert verifies(second, {**during.headers, "webhook-signature": new}, during.body)
    assert verifies(first, {**during.headers, "webhook-signature": old}, during.body)
    assert not verifies(first, {**during.headers, "webhook-signature": new}, during.body)


async def test_a_removed_secret_signs_on_through_its_grace(
    client: Client, receiver: Receiver
) -> None:
    job = await create(client, receiver.url, secret="generate", **YEARLY_PAUSED)

    await client.patch(f"/api/cron/{job['id']}", json={"secret": None})
    await run_now(client, job["id"])

    (request,) = receiver.requests
    assert len(signatures(request.headers)) == 1
    assert verifies(job["secret"], request.headers, request.body)


@pytest.fixture
async def no_grace_client(config: Config) -> AsyncIterator[Client]:
    """Replaced secrets stop signing at once."""
    no_grace = config.model_copy(
        update={"webhook": config.webhook.model_copy(update={"secret_rotation_grace_s": 0})}
    )
    async with TestClient(TestServer(build_app(no_grace), host="127.0.0.1")) as test_client:
        yield test_client


async def test_after_the_grace_only_the_new_secret_signs_and_null_stops_signing(
    no_grace_client: Client, receiver: Receiver
) -> None:
    client = no_grace_client
    job = await create(client, receiver.url, secret="generate", **YEARLY_PAUSED)

    rotated = await (
        await client.patch(f"/api/cron/{job['id']}", json={"secret": "generate"})
    ).json()
    await run_now(client, job["id"])
    cleared = await (await client.patch(f"/api/cron/{job['id']}", json={"secret": None})).json()
    await run_now(client, job["id"])

    assert rotated["previousSecretExpiresAt"] is None
    assert cleared["previousSecretExpiresAt"] is None and cleared["hasSecret"] is False
    signed, unsigned = receiver.requests
    assert len(signatures(signed.headers)) == 1
    assert verifies(rotated["secret"], signed.headers, signed.body)
    assert not verifies(job["secret"], signed.headers, signed.body)
    assert "webhook-signature" not in unsigned.headers


async def test_every_attempt_is_in_the_execution_log(client: Client, receiver: Receiver) -> None:
    async def fail_twice() -> None:
        receiver.status = 503 if len(receiver.requests) < 3 else 200

    receiver.before_reply = fail_twice
    retry = {"maxAttempts": 3, "backoffSeconds": 0.05, "maxBackoffSeconds": 0.1}
    job = await create(client, receiver.url, retry=retry, **YEARLY_PAUSED)

    log = await run_now(client, job["id"])

    assert log["status"] == "SUCCESS" and log["attempts"] == 3 and log["responseStatus"] == 200
    attempts = log["attemptLog"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert [a["responseStatus"] for a in attempts] == [503, 503, 200]
    unavailable = {"type": "http_status", "message": "HTTP 503 Service Unavailable"}
    assert [a["error"] for a in attempts] == [unavailable, unavailable, None]
    assert all(isinstance(a["durationMs"], int) and a["durationMs"] >= 0 for a in attempts)
    waits = [a["retryAfterMs"] for a in attempts]
    assert waits[2] is None and all(0 <= w <= 100 for w in waits[:2])
    started = [parse(a["startedAt"]) for a in attempts]
    assert parse(log["executedAt"]) <= started[0] <= started[1] <= started[2]
    assert {r.headers["webhook-id"] for r in receiver.requests} == {log["id"]}
    assert [r.json()["attempt"] for r in receiver.requests] == [1, 2, 3]


async def test_refused_connections_are_logged_per_attempt_with_their_error_type(
    client: Client,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    retry = {"maxAttempts": 2, "backoffSeconds": 0.01, "maxBackoffSeconds": 0.01}
    job = await create(client, url, retry=retry, **YEARLY_PAUSED)

    log = await run_now(client, job["id"])

    assert log["status"] == "FAILURE" and log["attempts"] == 2
    assert [a["error"]["type"] for a in log["attemptLog"]] == ["connection_error"] * 2
    assert [a["responseStatus"] for a in log["attemptLog"]] == [None, None]


async def test_execution_log_can_be_deleted(client: Client, receiver: Receiver) -> None:
    job = await create(client, receiver.url, cronExpression="0 0 1 1 *")
    execution = await (await client.post(f"/api/cron/{job['id']}/trigger")).json()
    await logs_for(client, job["id"])
    response = await client.delete(f"/api/execution-logs/{execution['id']}")
    assert response.status == 200
    assert (await client.get(f"/api/execution-logs/{execution['id']}")).status == 404


async def test_log_filters_and_pages_newest_first(client: Client, receiver: Receiver) -> None:
    job = await create(client, receiver.url)
    receiver.status = 200
    await logs_for(client, job["id"], 4)
    first_page = await client.get(
        f"/api/execution-logs?cronJobId={job['id']}&limit=2&status=SUCCESS"
    )
    page = await first_page.json()
    assert len(page) == 2 and "Link" in first_page.headers
    assert parse(page[0]["scheduledAt"]) > parse(page[1]["scheduledAt"])
    link = first_page.headers["Link"]
    second = await (await client.get(link[1 : link.index(">")])).json()
    assert parse(second[0]["scheduledAt"]) < parse(page[1]["scheduledAt"])
    since = page[1]["scheduledAt"]
    window = await (
        await client.get(
            f"/api/execution-logs?cronJobId={job['id']}&since={since}&until={page[0]['scheduledAt']}"
        )
    ).json()
    assert [e["id"] for e in window] == [page[1]["id"]]


async def test_forbid_records_a_skipped_tick_while_the_previous_run_is_still_going(
    client: Client, receiver: Receiver
) -> None:
    release = asyncio.Event()

    async def hold() -> None:
        await asyncio.wait_for(release.wait(), 10)

    receiver.before_reply = hold
    job = await create(client, receiver.url, concurrencyPolicy="forbid", timeoutSeconds=30)
    try:
        skipped = await logs_for(client, job["id"])
        assert len(receiver.requests) == 1  # the held run; no overlapping second call
    finally:
        release.set()
    assert skipped[0]["status"] == "SKIPPED"
    assert skipped[0]["error"]["type"] == "skipped"


async def test_replace_aborts_the_running_request_records_it_replaced_and_runs_the_next_tick(
    client: Client, receiver: Receiver
) -> None:
    release = asyncio.Event()
    arrivals = itertools.count()

    async def hold_the_first() -> None:
        if next(arrivals) == 0:
            await asyncio.wait_for(release.wait(), 20)

    receiver.before_reply = hold_the_first
    job = await create(client, receiver.url, concurrencyPolicy="replace", timeoutSeconds=30)
    try:
        first, second = (await receiver.wait_for(2))[:2]
        (dropped,) = await receiver.wait_for_dropped(1)
    finally:
        release.set()
    assert dropped is first  # the held connection was cut, not answered
    first_id, second_id = first.json()["executionId"], second.json()["executionId"]
    replaced = await (await client.get(f"/api/execution-logs/{first_id}")).json()
    assert replaced["status"] == "FAILURE"
    assert replaced["error"]["type"] == "replaced" and second_id in replaced["error"]["message"]
    assert parse(second.json()["scheduledAt"]) > parse(first.json()["scheduledAt"])
    async with asyncio.timeout(10):
        while True:
            log = await (await client.get(f"/api/execution-logs/{second_id}")).json()
            if log["status"] != "RUNNING":
                break
            await asyncio.sleep(0.05)
    assert log["status"] == "SUCCESS"  # the next tick ran and was answered
    # The aborted request wrote nothing over the record the claim made.
    assert await (await client.get(f"/api/execution-logs/{first_id}")).json() == replaced
    samples = await scrape(client)
    assert samples[("cronsvc_runs_replaced_total", ())] == 1
    assert samples[("cronsvc_replaced_runs_aborted_total", ())] == 1
    # An aborted request has no result to bring late: no false alarm.
    assert samples[("cronsvc_late_results_total", (("stored_status", "FAILURE"),))] == 0
    logs = await logs_for(client, job["id"], 2)
    assert [e for e in logs if e["error"] and e["error"]["type"] == "shutdown"] == []


async def test_no_webhook_leaves_before_its_tick_though_the_clock_wakes_early(
    config: Config, receiver: Receiver
) -> None:
    async with TestClient(TestServer(build_app(config, clock=EarlyClock()))) as client:
        await create(client, receiver.url)
        requests = await receiver.wait_for(4)
    for request in requests[:4]:
        tick = parse(request.json()["scheduledAt"]).timestamp()
        assert request.arrived >= tick, f"arrived {1000 * (tick - request.arrived):.1f} ms early"


async def test_a_run_replaced_before_its_task_began_is_let_go_and_frees_its_slot(
    client: Client, receiver: Receiver
) -> None:
    jobs = client.app[CONTEXT].jobs
    deliveries = client.app[DELIVERIES]
    dispatcher = client.app[DISPATCHER]
    job = await create(client, receiver.url, cronExpression="0 0 1 1 *")  # not due in the test
    await jobs.trigger_now(job["id"])
    await logs_for(client, job["id"], 1)  # its connection is kept, idle
    before = await scrape(client)

    execution = await jobs.trigger_now(job["id"])  # its request is out already
    deliveries.cancel_replaced([execution.id])  # and its task has not run yet

    await receiver.wait_for(2)
    assert dispatcher.in_flight == 0
    after = await scrape(client)
    aborted = ("cronsvc_replaced_runs_aborted_total", ())
    assert after[aborted] - before.get(aborted, 0) == 1
    record = await (await client.get(f"/api/execution-logs/{execution.id}")).json()
    assert record["status"] == "RUNNING", "the replacing claim writes its record, not this run"


async def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, read by prometheus-client's own parser."""
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(await response.text())
        for sample in family.samples
    }


async def test_metrics_move_with_real_fires(
    client: Client, receiver: Receiver, start_receiver: Any
) -> None:
    before = await scrape(client)
    failing: Receiver = await start_receiver()
    failing.status = 500
    ok = await create(client, receiver.url)
    bad = await create(client, failing.url, name="failing")
    await logs_for(client, ok["id"], 2)
    await logs_for(client, bad["id"], 2)
    after = await scrape(client)

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved("cronsvc_executions_total", status="SUCCESS") >= 2
    assert moved("cronsvc_executions_total", status="FAILURE") >= 2
    assert moved("cronsvc_lease_total", result="won") >= 4
    assert moved("cronsvc_webhook_attempts_total") >= 4
    assert moved("cronsvc_fire_lag_seconds_count") >= 4
    assert moved("cronsvc_fire_lag_seconds_sum") > 0
    assert moved("cronsvc_webhook_duration_seconds_count", status="SUCCESS") >= 2
    assert moved("cronsvc_webhook_duration_seconds_count", status="FAILURE") >= 2
    assert after[("cronsvc_active_jobs", ())] == 2
    assert after[("cronsvc_is_leader", ())] == 1
    assert ("cronsvc_dispatches_in_flight", ()) in after
    # Low cardinality: no label carries a job id.
    job_ids = {ok["id"], bad["id"]}
    assert not [key for key in after if any(v in job_ids for _, v in key[1])]


@pytest.fixture
async def claim_ahead_client(config: Config) -> AsyncIterator[Client]:
    """Ticks claimed 3 s before they fall due, so changes land between claim and tick."""
    ahead = config.model_copy(
        update={"scheduler": config.scheduler.model_copy(update={"claim_ahead_s": 3.0})}
    )
    async with TestClient(TestServer(build_app(ahead), host="127.0.0.1")) as test_client:
        yield test_client


async def test_a_change_between_claim_and_tick_fires_the_new_version(
    claim_ahead_client: Client, receiver: Receiver, start_receiver: Any
) -> None:
    client = claim_ahead_client
    new_receiver: Receiver = await start_receiver()
    job = await create(client, receiver.url)
    await receiver.wait_for(1)
    changed = await client.patch(f"/api/cron/{job['id']}", json={"webhookUrl": new_receiver.url})
    changed_at = datetime.now().timestamp()
    assert changed.status == 200
    count = len(receiver.requests)
    await new_receiver.wait_for(3)  # ticks already claimed with the old URL among them
    assert fired_after(receiver, count, changed_at) == []


async def test_a_pause_between_claim_and_tick_records_the_claimed_ticks_skipped(
    claim_ahead_client: Client, receiver: Receiver
) -> None:
    client = claim_ahead_client
    job = await create(client, receiver.url)
    await receiver.wait_for(1)
    await client.post(f"/api/cron/{job['id']}/pause")
    paused_at = datetime.now().timestamp()
    count = len(receiver.requests)
    await asyncio.sleep(3.5)  # every tick claimed before the pause has fallen due
    assert fired_after(receiver, count, paused_at) == []
    logs = await (await client.get(f"/api/execution-logs/job/{job['id']}?status=SKIPPED")).json()
    assert logs and {e["error"]["type"] for e in logs} == {"job_changed"}
    assert all(parse(e["scheduledAt"]).timestamp() > paused_at for e in logs)
    running = await (await client.get(f"/api/execution-logs/job/{job['id']}?status=RUNNING")).json()
    assert running == []


async def test_a_job_whose_target_the_guard_refuses_fails_at_once_and_reaches_nothing(
    config: Config, receiver: Receiver
) -> None:
    """Written while private targets were allowed, run after they no longer are."""
    async with TestClient(TestServer(build_app(config), host="127.0.0.1")) as opened:
        job = await create(opened, receiver.url, isActive=False, retry={"maxAttempts": 3})
    shut = config.model_copy(
        update={"webhook": config.webhook.model_copy(update={"allow_private_targets": False})}
    )
    async with TestClient(TestServer(build_app(shut), host="127.0.0.1")) as client:
        response = await client.post(f"/api/cron/{job['id']}/trigger")
        assert response.status == 202, await response.text()
        (log, *_) = await logs_for(client, job["id"])
    assert log["status"] == "FAILURE" and log["attempts"] == 1
    assert log["error"]["type"] == "target_not_allowed"
    assert "127.0.0.1 is a loopback address" in log["error"]["message"]
    assert "webhook.allow_private_targets" in log["error"]["message"]  # and how to allow it
    assert receiver.requests == []


async def test_a_410_gone_pauses_the_job_and_says_why(client: Client, receiver: Receiver) -> None:
    receiver.status = 410
    job = await create(client, receiver.url)
    [log] = await logs_for(client, job["id"])
    await asyncio.sleep(2.5)  # ticks that would have come due meanwhile

    assert len(receiver.requests) == 1
    assert log["status"] == "FAILURE" and log["responseStatus"] == 410
    assert log["error"]["type"] == "target_gone"
    paused = await (await client.get(f"/api/cron/{job['id']}")).json()
    assert paused["isActive"] is False and paused["nextRunAt"] is None
    assert "410 Gone" in paused["pausedReason"]
    assert paused["version"] == job["version"] + 1
    resumed = await (await client.post(f"/api/cron/{job['id']}/resume")).json()
    assert resumed["isActive"] is True and resumed["pausedReason"] is None


async def test_retry_after_on_a_503_holds_back_the_next_ticks_inside_it(
    client: Client, receiver: Receiver
) -> None:
    receiver.status = 503
    receiver.reply_headers = {"Retry-After": "3"}
    job = await create(client, receiver.url)
    await receiver.wait_for(1)
    receiver.status = 200
    await receiver.wait_for(2, within_s=10)  # the first tick after the hold

    first, second = receiver.requests[:2]
    held_for = second.arrived - first.arrived
    assert held_for > 2.5  # the every-second job was held, not fired each second
    logs = await logs_for(client, job["id"], 3)
    deferred = [e for e in logs if e["status"] == "SKIPPED"]
    assert len(deferred) >= 2
    assert {e["error"]["type"] for e in deferred} == {"deferred"}
    held = await (await client.get(f"/api/cron/{job['id']}")).json()
    assert held["deferredUntil"] is not None and held["isActive"] is True


async def test_changes_that_sent_no_notice_are_picked_up_by_the_resync(
    make_client: MakeClient, config: Config, receiver: Receiver, start_receiver: Any
) -> None:
    """A lost notice is repaired by the periodic resync: jobs added, changed
    and paused straight in the store, with no notice, are in force within a
    resync interval."""
    client = await make_client(
        scheduler=config.scheduler.model_copy(update={"resync_interval_s": 1.0})
    )
    store = client.server.app[STORE]
    held = await create(client, receiver.url, name="held by the scheduler")
    await receiver.wait_for(1)
    other: Receiver = await start_receiver()
    now = datetime.now(UTC)
    quiet = Job(
        id=new_id(),
        spec=JobSpec(name="quiet", cron_expression=EVERY_SECOND, webhook_url=other.url),
        created_at=now,
        updated_at=now,
        last_tick=now,
    )
    await store.create_job(quiet)  # no notice goes out

    await other.wait_for(1, within_s=10)
    moved: Receiver = await start_receiver()
    spec = dataclasses.replace(quiet.spec, webhook_url=moved.url)
    await store.update_job(quiet.id, spec, now=datetime.now(UTC))
    await moved.wait_for(1, within_s=10)
    paused = dataclasses.replace(spec, is_active=False)
    await store.update_job(quiet.id, paused, now=datetime.now(UTC))
    await asyncio.sleep(3)  # one resync, and the tick it might have claimed before it
    before = len(moved.requests)
    await asyncio.sleep(2)
    assert len(moved.requests) == before
    assert (await client.get(f"/api/cron/{held['id']}")).status == 200


async def test_ticks_keep_firing_while_a_resync_reads_the_store(
    make_client: MakeClient, config: Config, receiver: Receiver
) -> None:
    """A resync reads in the background: a slow read (held here for 3 s,
    as a million jobs would take) does not hold the ticks back."""
    client = await make_client(
        scheduler=config.scheduler.model_copy(update={"resync_interval_s": 1.0})
    )
    store = client.server.app[STORE]
    await create(client, receiver.url)
    await receiver.wait_for(1)
    reading = asyncio.Event()
    read_versions = store.active_versions

    async def slow_versions(*args: Any) -> dict[str, int]:
        reading.set()
        await asyncio.sleep(3)
        return await read_versions(*args)

    store.active_versions = slow_versions  # type: ignore[method-assign]
    await asyncio.wait_for(reading.wait(), 5)
    during = len(receiver.requests)
    await asyncio.sleep(2.5)  # the read is still going on

    assert len(receiver.requests) - during >= 2


async def test_ticks_the_store_will_not_take_are_held_and_each_settled_once_it_takes_them(
    client: Client, receiver: Receiver
) -> None:
    """Claims refused for 3 s: the ticks go back to the scheduler, counted
    and logged, and once the store takes claims again every tick of the
    outage ends as one record (fired late or MISSED), none a gap."""
    store = client.server.app[STORE]
    job = await create(client, receiver.url)
    await receiver.wait_for(1)
    refusals = 0

    async def unavailable(*_: Any) -> Any:
        nonlocal refusals
        refusals += 1
        raise StoreUnavailable("the disk is gone")

    with capture_logs() as logs:
        store.claim_ticks = unavailable  # type: ignore[method-assign]
        await asyncio.sleep(3)
        del store.claim_ticks  # the store's own method again
        resumed = len(receiver.requests)
        await receiver.wait_for(resumed + 2, within_s=10)
    samples = await scrape(client)

    held = samples[("cronsvc_ticks_held_total", ())]
    assert held >= 2 and refusals >= held  # each batch tried (and retried), then held
    assert any(e["event"] == "ticks_held" for e in logs)
    assert ("cronsvc_ticks_dropped_total", (("reason", "store_unavailable"),)) not in samples
    until = receiver.requests[-1].json()["scheduledAt"]
    kinds: list[str] = []
    async with asyncio.timeout(10):  # the MISSED records are written in the background
        while not kinds or "gap" in kinds:
            ledger = await client.get(f"/api/cron/{job['id']}/ledger", params={"until": until})
            assert ledger.status == 200
            entries = (await ledger.json())["entries"]
            kinds = [entry["kind"] for entry in entries]
            await asyncio.sleep(0.2)
    # The outage's ticks, but the last, coalesced into one late run (fire_once).
    statuses = [(entry["status"], entry["trigger"]) for entry in entries]
    assert ("MISSED", "schedule") in statuses and ("SUCCESS", "catchup") in statuses, statuses
    ticks = [r.json()["scheduledAt"] for r in receiver.requests]
    assert len(ticks) == len(set(ticks))
