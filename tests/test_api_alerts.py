"""A job's `alerts` policy through the HTTP API: written, validated field by
field, merged by PATCH, its secret write-only and kept, shown in dry runs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cronsvc.config import WebhookConfig
from tests.helpers_api import Client, MakeClient, problem
from tests.standard_webhooks import new_secret

NODE_JOB = {
    "name": "nightly",
    "cronExpression": "0 0 1 1 *",  # yearly: never fires during a test
    "webhookUrl": "https://example.org/hook",
}
ALERTS = {"url": "https://alerts.example.org/hook", "after": 3, "format": "slack"}
ANSWERED = {
    "enabled": True,
    "url": "https://alerts.example.org/hook",
    "after": 3,
    "onRecovery": True,
    "format": "slack",
    "hasSecret": False,
}


async def create(client: Client, **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/cron", json={**NODE_JOB, **fields})
    assert response.status == 201, await response.text()
    job: dict[str, Any] = await response.json()
    return job


async def read(client: Client, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = await (await client.get(f"/api/cron/{job_id}")).json()
    return job


def fields_of(body: dict[str, Any]) -> set[str]:
    return {e["field"] for e in body.get("errors", [])}


async def test_a_job_without_alerts_follows_the_default_and_answers_null(client: Client) -> None:
    job = await create(client)

    assert job["alerts"] is None
    assert (await read(client, job["id"]))["alerts"] is None


async def test_a_jobs_alerts_are_written_with_defaults_filled_in_and_read_back(
    client: Client,
) -> None:
    job = await create(client, alerts=ALERTS)

    assert job["alerts"] == ANSWERED
    assert (await read(client, job["id"]))["alerts"] == ANSWERED
    [listed] = await (await client.get("/api/cron")).json()
    assert listed["alerts"] == ANSWERED


async def test_alerts_turned_off_need_no_url(client: Client) -> None:
    job = await create(client, alerts={"enabled": False})

    assert job["alerts"] == {
        "enabled": False,
        "url": None,
        "after": 1,
        "onRecovery": True,
        "format": "standard",
        "hasSecret": False,
    }


@pytest.mark.parametrize(
    ("alerts", "field"),
    [
        pytest.param({}, "alerts.url", id="url-missing-while-enabled"),
        pytest.param({"enabled": True, "url": None}, "alerts.url", id="url-null-while-enabled"),
        pytest.param({"url": "ftp://alerts.example.org/"}, "alerts.url", id="url-not-http"),
        pytest.param({"url": "not a url"}, "alerts.url", id="url-not-a-url"),
        pytest.param({"url": ""}, "alerts.url", id="url-empty"),
        pytest.param(
            {"url": "https://alerts.example.org/" + "a" * 2048}, "alerts.url", id="url-too-long"
        ),
        pytest.param(
            {"url": "https://user:pw@alerts.example.org/"}, "alerts.url", id="url-credentials"
        ),
        pytest.param({**ALERTS, "after": 0}, "alerts.after", id="after-zero"),
        pytest.param({**ALERTS, "after": 1001}, "alerts.after", id="after-too-many"),
        pytest.param({**ALERTS, "after": "3"}, "alerts.after", id="after-a-string"),
        pytest.param({**ALERTS, "after": 1.5}, "alerts.after", id="after-a-fraction"),
        pytest.param({**ALERTS, "enabled": "yes"}, "alerts.enabled", id="enabled-a-string"),
        pytest.param({**ALERTS, "onRecovery": 1}, "alerts.onRecovery", id="on-recovery-a-number"),
        pytest.param({**ALERTS, "format": "teams"}, "alerts.format", id="format-unknown"),
        pytest.param({**ALERTS, "secret": "s3cret"}, "alerts.secret", id="secret-not-whsec"),
        pytest.param({**ALERTS, "secret": "generate"}, "alerts.secret", id="secret-generate"),
        pytest.param({**ALERTS, "colour": "red"}, "alerts.colour", id="unknown-field"),
        pytest.param("https://alerts.example.org/", "alerts", id="not-an-object"),
    ],
)
async def test_a_bad_alerts_value_is_400_naming_the_field_and_writes_nothing(
    client: Client, alerts: Any, field: str
) -> None:
    body = await problem(await client.post("/api/cron", json={**NODE_JOB, "alerts": alerts}), 400)
    assert fields_of(body) == {field}
    assert await (await client.get("/api/cron")).json() == []

    job = await create(client, name="kept", alerts={**ALERTS, "after": 7})
    put = await client.put(f"/api/cron/{job['id']}", json={**NODE_JOB, "alerts": alerts})
    assert fields_of(await problem(put, 400)) == {field}
    if alerts != {}:  # merged into the stored policy, {} changes nothing
        patched = await client.patch(f"/api/cron/{job['id']}", json={"alerts": alerts})
        assert fields_of(await problem(patched, 400)) == {field}
    assert await read(client, job["id"]) == job


async def test_an_alert_secret_error_never_quotes_it(client: Client) -> None:
    secret = "whsec_not-base64-but-secret!"
    response = await client.post(
        "/api/cron", json={**NODE_JOB, "alerts": {**ALERTS, "secret": secret}}
    )
    assert "not-base64-but-secret" not in await response.text()


async def test_bad_alerts_are_reported_with_the_other_bad_fields(client: Client) -> None:
    document = {**NODE_JOB, "cronExpression": "0 0 30 2 *", "alerts": {"after": 0}}
    body = await problem(await client.post("/api/cron", json=document), 400)
    assert fields_of(body) == {"cronExpression", "alerts.url", "alerts.after"}


@pytest.fixture
async def guarded(make_client: MakeClient) -> Client:
    """A service whose `webhook` settings are the defaults: the guard shut."""
    return await make_client(webhook=WebhookConfig())


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/alert", "http://localhost:9/alert", "http://[::1]/", "http://10.1.2.3/"],
)
async def test_a_private_alert_target_is_refused_as_a_webhook_target_is_and_nothing_is_written(
    guarded: Client, url: str
) -> None:
    document = {**NODE_JOB, "alerts": {"url": url}}
    body = await problem(await guarded.post("/api/cron", json=document), 400)
    [error] = body["errors"]
    assert error["field"] == "alerts.url"
    assert "webhook.allowed_cidrs" in error["message"]
    assert await (await guarded.get("/api/cron")).json() == []

    job = await create(guarded, isActive=False)
    put = await guarded.put(f"/api/cron/{job['id']}", json=document)
    assert fields_of(await problem(put, 400)) == {"alerts.url"}
    patched = await guarded.patch(f"/api/cron/{job['id']}", json={"alerts": {"url": url}})
    assert fields_of(await problem(patched, 400)) == {"alerts.url"}
    assert await read(guarded, job["id"]) == job


async def test_a_private_alert_target_is_reported_with_the_other_bad_fields(
    guarded: Client,
) -> None:
    document = {
        **NODE_JOB,
        "webhookUrl": "http://127.0.0.1/",
        "alerts": {"url": "http://127.1/", "after": 0},
    }
    body = await problem(await guarded.post("/api/cron", json=document), 400)
    assert fields_of(body) == {"webhookUrl", "alerts.url", "alerts.after"}


async def test_allowed_cidrs_let_an_alert_target_through(make_client: MakeClient) -> None:
    client = await make_client(webhook=WebhookConfig(allowed_cidrs=["10.20.0.0/16"]))

    job = await create(client, alerts={"url": "http://10.20.30.40/alert"}, isActive=False)

    assert job["alerts"]["url"] == "http://10.20.30.40/alert"


async def test_the_alert_secret_is_write_only_and_kept_by_writes_that_leave_it_out(
    client: Client,
) -> None:
    secret = new_secret()
    job = await create(client, alerts={**ALERTS, "secret": secret})
    hidden = secret.removeprefix("whsec_")
    assert job["alerts"]["hasSecret"] is True and "secret" not in job["alerts"]

    # Sent back as answered (hasSecret and all), edited: the secret stays.
    put = await client.put(f"/api/cron/{job['id']}", json={**job, "name": "edited"})
    assert put.status == 200, await put.text()
    assert (await put.json())["alerts"]["hasSecret"] is True
    replaced = await client.put(
        f"/api/cron/{job['id']}", json={**NODE_JOB, "alerts": {"url": ALERTS["url"]}}
    )
    assert (await replaced.json())["alerts"]["hasSecret"] is True
    for patch in ({"name": "again"}, {"alerts": {"after": 9}}, {"alerts": {"enabled": False}}):
        patched = await client.patch(f"/api/cron/{job['id']}", json=patch)
        assert (await patched.json())["alerts"]["hasSecret"] is True, patch

    listed = await (await client.get("/api/cron")).json()
    read_back = await read(client, job["id"])
    paused = await (await client.post(f"/api/cron/{job['id']}/pause")).json()
    for answer in (read_back, *listed, paused):
        assert hidden not in json.dumps(answer)

    removed = await client.patch(f"/api/cron/{job['id']}", json={"alerts": {"secret": None}})
    assert (await removed.json())["alerts"]["hasSecret"] is False


async def test_patch_merges_into_the_alerts_and_null_brings_back_the_default(
    client: Client,
) -> None:
    job = await create(client, alerts={**ALERTS, "onRecovery": False})

    patched = await client.patch(f"/api/cron/{job['id']}", json={"alerts": {"after": 5}})
    assert (await patched.json())["alerts"] == {**ANSWERED, "after": 5, "onRecovery": False}
    reset = await client.patch(f"/api/cron/{job['id']}", json={"alerts": {"format": None}})
    assert (await reset.json())["alerts"]["format"] == "standard"
    cleared = await client.patch(f"/api/cron/{job['id']}", json={"alerts": None})
    assert (await cleared.json())["alerts"] is None


async def test_put_without_alerts_brings_back_the_default(client: Client) -> None:
    job = await create(client, alerts={**ALERTS, "secret": new_secret()})

    replaced = await client.put(f"/api/cron/{job['id']}", json=NODE_JOB)

    assert (await replaced.json())["alerts"] is None
    again = await client.put(f"/api/cron/{job['id']}", json={**NODE_JOB, "alerts": ALERTS})
    assert (await again.json())["alerts"]["hasSecret"] is False, "a removed policy keeps no secret"


async def test_a_dry_run_shows_alerts_among_the_changed_fields(client: Client) -> None:
    job = await create(client)

    response = await client.patch(f"/api/cron/{job['id']}?dryRun=true", json={"alerts": ALERTS})

    answer = await response.json()
    [change] = answer["changes"]
    assert change == {"field": "alerts", "before": None, "after": ANSWERED}
    assert answer["job"]["alerts"] == ANSWERED
    assert await read(client, job["id"]) == job


async def test_a_dry_run_shows_a_new_alert_secret_without_its_value(client: Client) -> None:
    job = await create(client, alerts={**ALERTS, "secret": new_secret()})
    secret = new_secret()

    response = await client.patch(
        f"/api/cron/{job['id']}?dryRun=true", json={"alerts": {"secret": secret}}
    )

    answer = await response.json()
    assert answer["changes"] == [{"field": "alerts.secret", "redacted": True}]
    assert secret.removeprefix("whsec_") not in json.dumps(answer)
