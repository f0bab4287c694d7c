"""The HTTP API: every endpoint and every error, against a running service."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cronsvc.api.context import CONTEXT
from cronsvc.api.schemas import JobOut
from cronsvc.config import LimitsConfig, WebhookConfig
from cronsvc.domain import Job, JobSpec, PreviousSecret
from cronsvc.ids import new_id
from tests.helpers_api import Client, MakeClient, parse, problem
from tests.standard_webhooks import new_secret

NODE_JOB = {
    "name": "new year",
    "cronExpression": "0 0 1 1 *",  # yearly: never fires during a test (no outbound call)
    "webhookUrl": "https://example.org/hook",
    "isActive": True,
}


async def create(client: Client, **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/cron", json={**NODE_JOB, **fields})
    assert response.status == 201, await response.text()
    job: dict[str, Any] = await response.json()
    return job


def fields_of(body: dict[str, Any]) -> set[str]:
    return {e["field"] for e in body.get("errors", [])}


GRACE = timedelta(seconds=86400)  # webhook.secret_rotation_grace_s, by default


# -- create -------------------------------------------------------------------


async def test_node_request_creates_job_with_every_default_filled_in(client: Client) -> None:
    response = await client.post("/api/cron", json=NODE_JOB)
    assert response.status == 201
    job = await response.json()
    assert response.headers["Location"] == f"/api/cron/{job['id']}"
    assert len(job["id"]) == 24 and int(job["id"], 16) >= 0
    assert {k: job[k] for k in NODE_JOB} == NODE_JOB
    assert job["timezone"] == "UTC"
    assert job["httpMethod"] == "POST"
    assert job["headers"] == {} and job["body"] is None and job["tags"] == []
    assert job["timeoutSeconds"] == 10.0
    assert job["retry"] == {"maxAttempts": 1, "backoffSeconds": 1.0, "maxBackoffSeconds": 60.0}
    assert job["concurrencyPolicy"] == "allow"
    assert job["misfirePolicy"] == "fire_once" and job["misfireGraceSeconds"] == 60
    assert job["hasSecret"] is False and "secret" not in job
    assert job["version"] == 1
    assert job["createdAt"] == job["updatedAt"]
    assert job["lastRunAt"] is None and job["lastStatus"] is None
    next_run = parse(job["nextRunAt"])
    assert next_run > parse(job["createdAt"])
    assert (next_run.month, next_run.day, next_run.hour, next_run.minute) == (1, 1, 0, 0)
    assert next_run.second == 0


async def test_created_job_can_be_read_back(client: Client) -> None:
    job = await create(client, tags=["a", "b"], headers={"X-Token": "t"}, body={"k": [1, 2]})
    response = await client.get(f"/api/cron/{job['id']}")
    assert response.status == 200
    assert await response.json() == job


async def test_secret_is_write_only(client: Client) -> None:
    secret = new_secret()
    job = await create(client, secret=secret)
    assert job["hasSecret"] is True and "secret" not in job
    assert job["previousSecretExpiresAt"] is None
    text = await (await client.get(f"/api/cron/{job['id']}")).text()
    assert secret.removeprefix("whsec_") not in text


async def test_generate_answers_a_new_whsec_secret_once_and_reads_show_only_has_secret(
    client: Client,
) -> None:
    job = await create(client, secret="generate")
    secret = job["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert job["hasSecret"] is True and job["previousSecretExpiresAt"] is None
    # Sent back as it was answered, the generated secret is no change.
    put = await (await client.put(f"/api/cron/{job['id']}", json=job)).json()
    assert "secret" not in put and put["previousSecretExpiresAt"] is None

    read = await (await client.get(f"/api/cron/{job['id']}")).json()
    listed = await (await client.get("/api/cron")).json()
    paused = await (await client.post(f"/api/cron/{job['id']}/pause")).json()
    for answer in (read, *listed, paused):
        assert "secret" not in answer and answer["hasSecret"] is True
        assert secret.removeprefix("whsec_") not in json.dumps(answer)
    again = await (await client.patch(f"/api/cron/{job['id']}", json={"secret": "generate"})).json()
    assert again["secret"].startswith("whsec_") and again["secret"] != secret
    assert "secret" not in await (await client.get(f"/api/cron/{job['id']}")).json()


@pytest.mark.parametrize(
    "secret",
    [
        "s3cret-value",
        "whsec_",
        "whsec_not base64!",
        "WHSEC_" + base64.b64encode(bytes(32)).decode(),
        "whsec_" + base64.b64encode(bytes(23)).decode(),
        "whsec_" + base64.b64encode(bytes(65)).decode(),
        "Generate",
        "",
        5,
    ],
)
async def test_malformed_secret_is_400_naming_the_field_and_writes_nothing(
    client: Client, secret: Any
) -> None:
    body = await problem(await client.post("/api/cron", json={**NODE_JOB, "secret": secret}), 400)
    assert fields_of(body) == {"secret"}
    assert await (await client.get("/api/cron")).json() == []

    job = await create(client)
    for method in ("PUT", "PATCH"):
        document = {**NODE_JOB, "secret": secret} if method == "PUT" else {"secret": secret}
        response = await client.request(method, f"/api/cron/{job['id']}", json=document)
        assert fields_of(await problem(response, 400)) == {"secret"}
    assert await (await client.get(f"/api/cron/{job['id']}")).json() == job


async def test_a_malformed_secret_error_never_quotes_it(client: Client) -> None:
    secret = "whsec_" + base64.b64encode(b"sixteen byte key").decode()
    body = await problem(await client.post("/api/cron", json={**NODE_JOB, "secret": secret}), 400)
    [error] = body["errors"]
    assert "16" in error["message"] and "generate" in error["message"]
    assert secret.removeprefix("whsec_") not in json.dumps(body)


async def test_changing_the_secret_keeps_the_old_one_signing_for_the_grace(
    client: Client,
) -> None:
    job = await create(client, secret=new_secret())

    put = await client.put(f"/api/cron/{job['id']}", json={**NODE_JOB, "secret": new_secret()})
    rotated = await put.json()
    assert rotated["hasSecret"] is True
    expires = parse(rotated["previousSecretExpiresAt"])
    assert expires == parse(rotated["updatedAt"]) + GRACE
    read = await (await client.get(f"/api/cron/{job['id']}")).json()
    assert read["previousSecretExpiresAt"] == rotated["previousSecretExpiresAt"]

    # Writes that leave the secret alone leave the rotation alone.
    renamed = await (await client.patch(f"/api/cron/{job['id']}", json={"name": "n"})).json()
    paused = await (await client.post(f"/api/cron/{job['id']}/pause")).json()
    as_read = await (await client.put(f"/api/cron/{job['id']}", json=paused)).json()
    for answer in (renamed, paused, as_read):
        assert answer["previousSecretExpiresAt"] == rotated["previousSecretExpiresAt"]
        assert answer["hasSecret"] is True

    generated = await (
        await client.patch(f"/api/cron/{job['id']}", json={"secret": "generate"})
    ).json()
    assert parse(generated["previousSecretExpiresAt"]) == parse(generated["updatedAt"]) + GRACE


def test_previous_secret_expiry_is_shown_only_while_it_still_signs() -> None:
    expires = datetime(2026, 1, 2, tzinfo=UTC)
    job = Job(
        id="0" * 24,
        spec=JobSpec(name="j", cron_expression="* * * * *", webhook_url="https://e.org/"),
        created_at=expires - GRACE,
        updated_at=expires - GRACE,
        last_tick=expires - GRACE,
        previous_secret=PreviousSecret(secret=new_secret(), expires_at=expires),
    )
    just_before = expires - timedelta(milliseconds=1)

    def answered(now: datetime) -> object:
        return JobOut.from_domain(job, None, now=now).wire()["previousSecretExpiresAt"]

    assert answered(just_before) == "2026-01-02T00:00:00.000Z"
    assert answered(expires) is None


async def test_setting_the_secret_to_null_keeps_the_old_one_signing_for_the_grace(
    client: Client,
) -> None:
    job = await create(client, secret=new_secret())

    cleared = await (await client.patch(f"/api/cron/{job['id']}", json={"secret": None})).json()

    assert cleared["hasSecret"] is False
    assert parse(cleared["previousSecretExpiresAt"]) == parse(cleared["updatedAt"]) + GRACE
    # Null again is no change: the grace runs on from the first removal.
    again = await client.put(f"/api/cron/{job['id']}", json={**NODE_JOB, "secret": None})
    assert (await again.json())["previousSecretExpiresAt"] == cleared["previousSecretExpiresAt"]
    # A secret set after a removal leaves the removed one its own grace.
    restored = await (
        await client.patch(f"/api/cron/{job['id']}", json={"secret": new_secret()})
    ).json()
    assert restored["hasSecret"] is True
    assert restored["previousSecretExpiresAt"] == cleared["previousSecretExpiresAt"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": None}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": 5}, "name"),
        ({"cronExpression": "not a cron"}, "cronExpression"),
        ({"cronExpression": "61 * * * *"}, "cronExpression"),
        ({"cronExpression": "0 0 30 2 *"}, "cronExpression"),
        ({"cronExpression": "* * * * * * *"}, "cronExpression"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"webhookUrl": "ftp://example.org/x"}, "webhookUrl"),
        ({"webhookUrl": "not a url"}, "webhookUrl"),
        ({"webhookUrl": None}, "webhookUrl"),
        ({"httpMethod": "BREW"}, "httpMethod"),
        ({"headers": {"Bad Name": "x"}}, "headers"),
        ({"headers": {"X-A": "a\r\nInjected: 1"}}, "headers"),
        ({"headers": {f"X-{i}": "v" for i in range(51)}}, "headers"),
        ({"timeoutSeconds": 0}, "timeoutSeconds"),
        ({"retry": {"maxAttempts": 11}}, "retry.maxAttempts"),
        ({"retry": {"maxAttempts": 0}}, "retry.maxAttempts"),
        ({"retry": {"tries": 2}}, "retry.tries"),
        ({"misfirePolicy": "sometimes"}, "misfirePolicy"),
        ({"concurrencyPolicy": "maybe"}, "concurrencyPolicy"),
        ({"misfireGraceSeconds": -1}, "misfireGraceSeconds"),
        ({"isActive": "perhaps"}, "isActive"),
        ({"tags": ["a", "a"]}, "tags"),
        ({"colour": "blue"}, "colour"),
    ],
)
async def test_invalid_job_is_rejected_field_by_field_and_nothing_is_written(
    client: Client, change: dict[str, Any], field: str
) -> None:
    document = {**NODE_JOB, **change}
    document = {k: v for k, v in document.items() if v is not None}
    body = await problem(await client.post("/api/cron", json=document), 400)
    assert field in fields_of(body), body
    assert await (await client.get("/api/cron")).json() == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"isActive": "yes"}, "isActive"),
        ({"isActive": "true"}, "isActive"),
        ({"isActive": 1}, "isActive"),
        ({"timeoutSeconds": "5"}, "timeoutSeconds"),
        ({"timeoutSeconds": True}, "timeoutSeconds"),
        ({"misfireGraceSeconds": "60"}, "misfireGraceSeconds"),
        ({"misfireGraceSeconds": 60.0}, "misfireGraceSeconds"),
        ({"retry": {"maxAttempts": "3"}}, "retry.maxAttempts"),
        ({"retry": {"maxAttempts": True}}, "retry.maxAttempts"),
        ({"retry": {"backoffSeconds": "1"}}, "retry.backoffSeconds"),
        ({"retry": {"maxBackoffSeconds": "60"}}, "retry.maxBackoffSeconds"),
        ({"version": "1"}, "version"),
    ],
)
async def test_booleans_and_numbers_must_be_json_booleans_and_numbers(
    client: Client, change: dict[str, Any], field: str
) -> None:
    body = await problem(await client.post("/api/cron", json={**NODE_JOB, **change}), 400)
    assert fields_of(body) == {field}, body
    assert await (await client.get("/api/cron")).json() == []


async def test_whole_numbers_are_taken_where_fractions_may_be(client: Client) -> None:
    job = await create(
        client, timeoutSeconds=5, retry={"backoffSeconds": 2, "maxBackoffSeconds": 9}
    )
    assert job["timeoutSeconds"] == 5.0
    assert job["retry"] == {"maxAttempts": 1, "backoffSeconds": 2.0, "maxBackoffSeconds": 9.0}


async def test_preview_count_is_a_json_number_in_a_body_and_text_in_a_query(
    client: Client,
) -> None:
    body = await problem(
        await client.post("/api/schedule/preview", json={"cronExpression": "@daily", "count": "2"}),
        400,
    )
    assert fields_of(body) == {"count"}
    by_query = await client.get("/api/schedule/preview?cronExpression=@daily&count=2")
    assert len((await by_query.json())["instants"]) == 2
    for bad in ("two", "2.0", "0", "101"):
        response = await client.get(f"/api/schedule/preview?cronExpression=@daily&count={bad}")
        assert fields_of(await problem(response, 400)) == {"count"}, bad


@pytest.mark.parametrize("policy", ["allow", "forbid", "replace"])
async def test_every_concurrency_policy_is_accepted_and_read_back(
    client: Client, policy: str
) -> None:
    job = await create(client, concurrencyPolicy=policy)
    assert job["concurrencyPolicy"] == policy
    read = await (await client.get(f"/api/cron/{job['id']}")).json()
    assert read["concurrencyPolicy"] == policy
    body = await problem(
        await client.patch(f"/api/cron/{job['id']}", json={"concurrencyPolicy": "sometimes"}), 400
    )
    assert "replace" in next(e["message"] for e in body["errors"])


async def test_unknown_field_is_named_in_the_error(client: Client) -> None:
    body = await problem(await client.post("/api/cron", json={**NODE_JOB, "colour": "blue"}), 400)
    assert {"field": "colour", "message": "unknown field"} in body["errors"]


async def test_duplicate_name_is_a_conflict_and_writes_nothing(client: Client) -> None:
    await create(client)
    body = await problem(
        await client.post("/api/cron", json={**NODE_JOB, "webhookUrl": "https://x.org/"}), 409
    )
    assert "name" in fields_of(body)
    jobs = await (await client.get("/api/cron")).json()
    assert [j["webhookUrl"] for j in jobs] == ["https://example.org/hook"]


async def test_non_json_body_is_415(client: Client) -> None:
    response = await client.post(
        "/api/cron", data="name=x", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    await problem(response, 415)


async def test_malformed_json_is_400(client: Client) -> None:
    response = await client.post(
        "/api/cron", data="{not json", headers={"Content-Type": "application/json"}
    )
    assert "body" in fields_of(await problem(response, 400))


def test_the_readme_tells_a_body_that_is_not_json_from_malformed_json() -> None:
    """The two tests above, as the README states them."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    errors = " ".join(readme.split("Errors are RFC 9457", 1)[1].split("\n\n", 1)[0].split())
    assert re.search(r"`Content-Type` that is not JSON is 415", errors), errors
    assert re.search(r"malformed JSON [^.;]*is 400", errors), errors


async def test_json_that_is_not_an_object_is_400(client: Client) -> None:
    response = await client.post("/api/cron", json=[NODE_JOB])
    assert "body" in fields_of(await problem(response, 400))


async def test_body_over_64_kib_is_413(client: Client) -> None:
    big = json.dumps({**NODE_JOB, "body": "x" * (65 * 1024)})
    response = await client.post(
        "/api/cron", data=big, headers={"Content-Type": "application/json"}
    )
    await problem(response, 413)
    assert await (await client.get("/api/cron")).json() == []


def nested(depth: int) -> str:
    """A JSON array nested `depth` levels deep."""
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [64, 1000, 30_000])
async def test_json_nested_past_the_limit_is_400_naming_the_body_and_writes_nothing(
    client: Client, depth: int
) -> None:
    """The request object is one level; its `body` field brings the rest."""
    document = json.dumps(NODE_JOB)[:-1] + f', "body": {nested(depth)}}}'
    response = await client.post(
        "/api/cron", data=document, headers={"Content-Type": "application/json"}
    )
    failed = await problem(response, 400)
    assert failed["errors"] == [{"field": "body", "message": "is nested deeper than 64 levels"}]
    assert await (await client.get("/api/cron")).json() == []


async def test_json_nested_to_the_limit_is_accepted(client: Client) -> None:
    document = json.dumps(NODE_JOB)[:-1] + f', "body": {nested(63)}}}'
    response = await client.post(
        "/api/cron", data=document, headers={"Content-Type": "application/json"}
    )
    assert response.status == 201, await response.text()


@pytest.mark.parametrize(
    ("method", "path"),
    [("PATCH", "/api/cron/{id}"), ("PUT", "/api/cron/{id}"), ("POST", "/api/schedule/preview")],
)
async def test_every_json_body_is_held_to_the_nesting_limit(
    client: Client, method: str, path: str
) -> None:
    job = await create(client)
    response = await client.request(
        method,
        path.format(id=job["id"]),
        data='{"body": ' + nested(5000) + "}",
        headers={"Content-Type": "application/json"},
    )
    assert fields_of(await problem(response, 400)) == {"body"}
    assert await (await client.get(f"/api/cron/{job['id']}")).json() == job


async def test_an_integer_too_long_to_read_is_400_naming_the_body(client: Client) -> None:
    document = json.dumps(NODE_JOB)[:-1] + f', "body": {"9" * 5000}}}'
    response = await client.post(
        "/api/cron", data=document, headers={"Content-Type": "application/json"}
    )
    failed = await problem(response, 400)
    assert fields_of(failed) == {"body"}
    assert "4300 digits" in failed["errors"][0]["message"]
    assert await (await client.get("/api/cron")).json() == []


def list_of(numbers: int, zeros: int) -> tuple[str, int]:
    """A JSON array as a client may write it (`1E5`, 3 bytes) and the length
    of its encoding as the webhook sends it (`100000.0`, 8 bytes)."""
    text = "[" + ",".join(["1E5"] * numbers + ["0"] * zeros) + "]"
    return text, 1 + 9 * numbers + 2 * zeros


async def test_a_job_body_over_64_kib_as_sent_is_400_and_nothing_is_written(
    client: Client,
) -> None:
    body, encoded = list_of(7280, 8)
    assert encoded == 64 * 1024 + 1
    document = json.dumps(NODE_JOB)[:-1] + f', "body": {body}}}'
    assert len(document) < 64 * 1024  # under the request limit: not a 413
    response = await client.post(
        "/api/cron", data=document, headers={"Content-Type": "application/json"}
    )
    failed = await problem(response, 400)
    assert fields_of(failed) == {"body"}
    assert "65536" in failed["errors"][0]["message"]
    assert await (await client.get("/api/cron")).json() == []


async def test_a_job_body_of_exactly_64_kib_as_sent_is_accepted(client: Client) -> None:
    body, encoded = list_of(7279, 12)
    assert encoded == 64 * 1024
    document = json.dumps(NODE_JOB)[:-1] + f', "body": {body}}}'
    response = await client.post(
        "/api/cron", data=document, headers={"Content-Type": "application/json"}
    )
    assert response.status == 201, await response.text()


async def test_a_patch_that_grows_the_body_past_64_kib_is_400_and_changes_nothing(
    client: Client,
) -> None:
    job = await create(client, body={"small": True})
    body, _ = list_of(7280, 8)
    response = await client.patch(
        f"/api/cron/{job['id']}",
        data=f'{{"body": {body}}}',
        headers={"Content-Type": "application/json"},
    )
    assert fields_of(await problem(response, 400)) == {"body"}
    assert await (await client.get(f"/api/cron/{job['id']}")).json() == job


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "[1, -Infinity]", '"\\ud800"'])
async def test_a_job_body_no_webhook_could_send_is_400(client: Client, literal: str) -> None:
    document = json.dumps(NODE_JOB)[:-1] + f', "body": {literal}}}'
    response = await client.post(
        "/api/cron", data=document, headers={"Content-Type": "application/json"}
    )
    assert fields_of(await problem(response, 400)) == {"body"}
    assert await (await client.get("/api/cron")).json() == []


async def test_fifty_headers_are_accepted_and_fifty_one_are_not(client: Client) -> None:
    fifty = {f"X-{i}": "v" for i in range(50)}
    job = await create(client, headers=fifty)
    assert job["headers"] == fifty
    response = await client.patch(f"/api/cron/{job['id']}", json={"headers": {"X-50": "v"}})
    body = await problem(response, 400)
    assert body["errors"] == [{"field": "headers", "message": "at most 50 headers"}]
    assert (await (await client.get(f"/api/cron/{job['id']}")).json())["headers"] == fifty


@pytest.mark.parametrize("control", ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1f", "\x7f"])
async def test_a_header_value_with_a_control_character_is_400_naming_the_header(
    client: Client, control: str
) -> None:
    response = await client.post(
        "/api/cron", json={**NODE_JOB, "headers": {"X-Token": f"a{control}b"}}
    )
    body = await problem(response, 400)
    assert fields_of(body) == {"headers"}
    assert "X-Token" in body["errors"][0]["message"]
    assert await (await client.get("/api/cron")).json() == []


@pytest.mark.parametrize(
    "name",
    [
        "Host",
        "content-length",
        "Transfer-Encoding",
        "CONNECTION",
        "Keep-Alive",
        "Upgrade",
        "TE",
        "Expect",
        "User-Agent",
        "webhook-id",
        "Webhook-Timestamp",
        "WEBHOOK-SIGNATURE",
    ],
)
async def test_a_header_the_service_sets_itself_is_400_naming_it(client: Client, name: str) -> None:
    response = await client.post("/api/cron", json={**NODE_JOB, "headers": {name: "mine"}})
    body = await problem(response, 400)
    assert fields_of(body) == {"headers"}
    assert repr(name) in body["errors"][0]["message"]
    assert await (await client.get("/api/cron")).json() == []


async def test_tabs_and_the_headers_a_job_may_set_are_kept(client: Client) -> None:
    headers = {
        "Content-Type": "application/vnd.x+json",
        "Accept": "text/plain",
        "Authorization": "Bearer a\tb",
        "X-Note": "caf\u00e9",
    }
    job = await create(client, headers=headers)
    assert job["headers"] == headers


async def test_creating_past_max_jobs_is_409_and_writes_nothing(make_client: MakeClient) -> None:
    client = await make_client(limits=LimitsConfig(max_jobs=2, rate_limit_per_s=0))
    first = await create(client, name="one")
    await create(client, name="two", isActive=False)  # paused jobs count too
    response = await client.post("/api/cron", json={**NODE_JOB, "name": "three"})
    body = await problem(response, 409)
    assert body["type"] == "urn:cronsvc:problem:job-limit"
    assert body["title"] == "Job limit reached" and body["limit"] == 2
    assert "2 jobs" in body["detail"]
    jobs = await (await client.get("/api/cron")).json()
    assert sorted(j["name"] for j in jobs) == ["one", "two"]
    metrics = await (await client.get("/metrics")).text()
    assert 'cronsvc_api_rejected_total{reason="job_limit"} 1' in metrics

    await client.delete(f"/api/cron/{first['id']}")
    await create(client, name="three")


async def test_concurrent_creates_do_not_pass_max_jobs_together(make_client: MakeClient) -> None:
    client = await make_client(limits=LimitsConfig(max_jobs=3, rate_limit_per_s=0))
    responses = await asyncio.gather(
        *(client.post("/api/cron", json={**NODE_JOB, "name": f"job {i}"}) for i in range(8))
    )
    assert sorted(r.status for r in responses) == [201] * 3 + [409] * 5
    assert len(await (await client.get("/api/cron")).json()) == 3


# -- read, ids ------------------------------------------------------------------

UNKNOWN = "0123456789abcdef01234567"


@pytest.mark.parametrize("job_id", [UNKNOWN, "nope", "0123456789ABCDEF01234567", "' OR 1=1 --"])
@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("GET", ""),
        ("PUT", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("POST", "/pause"),
        ("POST", "/resume"),
        ("POST", "/trigger"),
        ("GET", "/next"),
    ],
)
async def test_unknown_or_malformed_job_id_is_404(
    client: Client, job_id: str, method: str, suffix: str
) -> None:
    response = await client.request(method, f"/api/cron/{job_id}{suffix}", json=NODE_JOB)
    await problem(response, 404)


@pytest.mark.parametrize("log_id", [UNKNOWN, "bad"])
@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_unknown_or_malformed_execution_id_is_404(
    client: Client, log_id: str, method: str
) -> None:
    await problem(await client.request(method, f"/api/execution-logs/{log_id}"), 404)


async def test_unknown_route_and_wrong_method_are_problems(client: Client) -> None:
    await problem(await client.get("/api/nothing-here"), 404)
    response = await client.request("PUT", "/api/cron")
    await problem(response, 405)


async def test_every_problem_is_titled_with_its_status_phrase(make_client: MakeClient) -> None:
    """RFC 9457: with type about:blank, the title is the status's phrase, the
    same whether cronsvc or aiohttp turned the request away."""
    client = await make_client(limits=LimitsConfig(max_jobs=1))
    job = await create(client)
    json_headers = {"Content-Type": "application/json"}
    answers = [
        await client.post("/api/cron", json={"name": ""}),  # a field
        await client.get("/api/cron?cursor=garbage"),  # a cursor
        await client.get("/api/cron/" + "0" * 24),  # a job
        await client.get("/api/execution-logs/" + "0" * 24),  # an execution
        await client.get("/api/nothing-here"),  # a route
        await client.request("PUT", "/api/cron"),
        await client.patch(f"/api/cron/{job['id']}", json={"version": 99}),
        await client.post("/api/cron", data="x" * (65 * 1024), headers=json_headers),
        await client.post("/api/cron", data="name=x"),
    ]
    statuses = [400, 400, 404, 404, 404, 405, 409, 413, 415]
    for response, status in zip(answers, statuses, strict=True):
        body = await problem(response, status)
        assert body["title"] == HTTPStatus(status).phrase, body
    limited = await problem(await client.post("/api/cron", json={**NODE_JOB, "name": "2"}), 409)
    assert limited["type"] != "about:blank"  # a type of its own names its own title


# -- change -------------------------------------------------------------------


async def test_put_replaces_the_whole_job_and_bumps_version(client: Client) -> None:
    job = await create(client, tags=["x"], timeoutSeconds=3)
    document = {
        "name": "renamed",
        "cronExpression": "0 * * * *",
        "webhookUrl": "https://example.net/new",
    }
    response = await client.put(f"/api/cron/{job['id']}", json=document)
    assert response.status == 200
    updated = await response.json()
    assert updated["name"] == "renamed" and updated["webhookUrl"] == "https://example.net/new"
    assert updated["tags"] == [] and updated["timeoutSeconds"] == 10.0  # omitted: defaults again
    assert updated["version"] == 2
    assert parse(updated["updatedAt"]) >= parse(job["updatedAt"])
    assert parse(updated["nextRunAt"]).minute == 0


async def test_put_accepts_a_job_as_read_back_and_keeps_the_secret(client: Client) -> None:
    job = await create(client, secret=new_secret())
    edited = {**job, "name": "edited"}
    response = await client.put(f"/api/cron/{job['id']}", json=edited)
    assert response.status == 200, await response.text()
    updated = await response.json()
    assert updated["name"] == "edited" and updated["hasSecret"] is True
    cleared = await client.put(f"/api/cron/{job['id']}", json={**NODE_JOB, "secret": None})
    assert (await cleared.json())["hasSecret"] is False


async def test_write_with_stale_version_is_a_conflict_and_writes_nothing(client: Client) -> None:
    job = await create(client)
    await client.patch(f"/api/cron/{job['id']}", json={"name": "v2"})
    response = await client.put(
        f"/api/cron/{job['id']}", json={**NODE_JOB, "name": "v3", "version": 1}
    )
    assert "version" in fields_of(await problem(response, 409))
    response = await client.patch(f"/api/cron/{job['id']}", json={"name": "v3", "version": 1})
    await problem(response, 409)
    current = await (await client.get(f"/api/cron/{job['id']}")).json()
    assert current["name"] == "v2" and current["version"] == 2


async def test_patch_changes_only_the_given_fields(client: Client) -> None:
    job = await create(client, tags=["keep"], retry={"maxAttempts": 3})
    response = await client.patch(
        f"/api/cron/{job['id']}",
        json={"webhookUrl": "https://example.com/p", "retry": {"backoffSeconds": 5}},
    )
    assert response.status == 200
    patched = await response.json()
    assert patched["webhookUrl"] == "https://example.com/p"
    assert patched["tags"] == ["keep"] and patched["name"] == job["name"]
    assert patched["retry"] == {"maxAttempts": 3, "backoffSeconds": 5.0, "maxBackoffSeconds": 60.0}
    assert patched["version"] == 2


async def test_patch_null_resets_a_field_to_its_default(client: Client) -> None:
    job = await create(client, timezone="Europe/Berlin", body="hello")
    patched = await (
        await client.patch(f"/api/cron/{job['id']}", json={"timezone": None, "body": None})
    ).json()
    assert patched["timezone"] == "UTC" and patched["body"] is None


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"cronExpression": "99 * * * *"}, "cronExpression"),
        ({"webhookUrl": "file:///etc/passwd"}, "webhookUrl"),
        ({"name": None}, "name"),
        ({"nonsense": 1}, "nonsense"),
    ],
)
async def test_invalid_patch_is_rejected_and_writes_nothing(
    client: Client, patch: dict[str, Any], field: str
) -> None:
    job = await create(client)
    assert field in fields_of(
        await problem(await client.patch(f"/api/cron/{job['id']}", json=patch), 400)
    )
    assert await (await client.get(f"/api/cron/{job['id']}")).json() == job


async def test_rename_onto_an_existing_name_is_a_conflict(client: Client) -> None:
    await create(client, name="first")
    second = await create(client, name="second")
    await problem(await client.patch(f"/api/cron/{second['id']}", json={"name": "first"}), 409)


async def test_pause_and_resume(client: Client) -> None:
    job = await create(client)
    paused = await (await client.post(f"/api/cron/{job['id']}/pause")).json()
    assert paused["isActive"] is False and paused["nextRunAt"] is None
    again = await (await client.post(f"/api/cron/{job['id']}/pause")).json()
    assert again["version"] == paused["version"]  # pausing a paused job changes nothing
    resumed = await (await client.post(f"/api/cron/{job['id']}/resume")).json()
    assert resumed["isActive"] is True and resumed["nextRunAt"] is not None


async def test_concurrent_unversioned_patches_all_apply(client: Client) -> None:
    """Without a `version`, a write that loses a race is merged again onto the
    job as it now is, until it applies: none is refused, none is lost."""
    job = await create(client)
    url = f"/api/cron/{job['id']}"
    responses = await asyncio.gather(
        *(client.patch(url, json={"headers": {f"X-{n}": str(n)}}) for n in range(20)),
        *(client.post(f"{url}/{verb}") for verb in ("pause", "resume") * 3),
    )
    assert [r.status for r in responses] == [200] * 26, [await r.text() for r in responses]
    final = await (await client.get(url)).json()
    assert final["headers"] == {f"X-{n}": str(n) for n in range(20)}
    assert final["version"] >= job["version"] + 20  # each patch a write of its own


async def test_delete_answers_with_the_job_and_then_it_is_gone(client: Client) -> None:
    job = await create(client)
    response = await client.delete(f"/api/cron/{job['id']}")
    assert response.status == 200
    assert (await response.json())["id"] == job["id"]
    await problem(await client.get(f"/api/cron/{job['id']}"), 404)
    await problem(await client.delete(f"/api/cron/{job['id']}"), 404)


# -- lists ----------------------------------------------------------------------


def next_url(response: Any) -> str | None:
    link = response.headers.get("Link")
    if link is None:
        return None
    assert link.endswith('>; rel="next"')
    return str(link[1 : link.index(">")])


async def test_job_list_pages_with_a_link_header(client: Client) -> None:
    created = [await create(client, name=f"job {i}") for i in range(7)]
    seen: list[str] = []
    url: str | None = "/api/cron?limit=3"
    pages = 0
    while url is not None and pages < 10:
        response = await client.get(url)
        assert response.status == 200
        page = await response.json()
        assert isinstance(page, list)
        seen += [j["id"] for j in page]
        url = next_url(response)
        pages += 1
    assert pages == 3
    assert seen == [j["id"] for j in reversed(created)]  # newest first, none twice


async def test_job_list_filters(client: Client) -> None:
    await create(client, name="alpha one", tags=["red"])
    await create(client, name="alpha two", tags=["blue"], isActive=False)
    await create(client, name="beta", tags=["red"])

    async def names(query: str) -> list[str]:
        return sorted(j["name"] for j in await (await client.get(f"/api/cron?{query}")).json())

    assert await names("isActive=false") == ["alpha two"]
    assert await names("isActive=true") == ["alpha one", "beta"]
    assert await names("tag=red") == ["alpha one", "beta"]
    assert await names("name=alpha") == ["alpha one", "alpha two"]
    assert await names("name=alpha&isActive=true&tag=red") == ["alpha one"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("isActive=maybe", "isActive"),
        ("cursor=garbage", "cursor"),
        ("cursor=", "cursor"),
    ],
)
async def test_bad_job_list_query_is_400(client: Client, query: str, field: str) -> None:
    assert field in fields_of(await problem(await client.get(f"/api/cron?{query}"), 400))


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=DONE", "status"),
        ("since=yesterday", "since"),
        ("until=2026-01-01T00:00:00", "until"),
        ("limit=1000", "limit"),
        ("cursor=%%%", "cursor"),
        ("cursor=", "cursor"),
        ("since=", "since"),
        ("until=", "until"),
    ],
)
async def test_bad_execution_log_query_is_400(client: Client, query: str, field: str) -> None:
    for path in ("/api/execution-logs", "/api/execution-logs/job/" + "0" * 24):
        body = await problem(await client.get(f"{path}?{query}"), 400)
        assert fields_of(body) == {field}, path


@pytest.mark.parametrize("name", ["cursor", "since", "until"])
async def test_an_empty_query_parameter_is_refused_as_empty(client: Client, name: str) -> None:
    body = await problem(await client.get(f"/api/execution-logs?{name}="), 400)
    assert body["errors"] == [
        {"field": name, "message": "must not be empty; leave it out for its default"}
    ]


# -- schedules --------------------------------------------------------------------


async def test_next_lists_the_coming_instants_in_utc_and_local(client: Client) -> None:
    job = await create(client, cronExpression="0 9 * * *", timezone="America/New_York")
    body = await (await client.get(f"/api/cron/{job['id']}/next?count=4")).json()
    instants = body["instants"]
    assert len(instants) == 4
    for item in instants:
        local = datetime.fromisoformat(item["local"])
        assert local.hour == 9 and local.minute == 0
        assert parse(item["utc"]) == local
    assert [parse(i["utc"]) for i in instants] == sorted(parse(i["utc"]) for i in instants)


@pytest.mark.parametrize("count", ["0", "101", "many"])
async def test_next_with_a_bad_count_is_400(client: Client, count: str) -> None:
    job = await create(client)
    assert "count" in fields_of(
        await problem(await client.get(f"/api/cron/{job['id']}/next?count={count}"), 400)
    )


async def test_preview_shows_a_fall_back_day_with_one_fire(client: Client) -> None:
    response = await client.post(
        "/api/schedule/preview",
        json={
            "cronExpression": "30 2 * * *",
            "timezone": "Europe/Berlin",
            "count": 3,
            "after": "2026-10-24T12:00:00Z",
        },
    )
    assert response.status == 200
    body = await response.json()
    assert [i["utc"] for i in body["instants"]] == [
        "2026-10-25T00:30:00.000Z",
        "2026-10-26T01:30:00.000Z",
        "2026-10-27T01:30:00.000Z",
    ]
    assert body["instants"][0]["local"] == "2026-10-25T02:30:00+02:00"


async def test_preview_by_query_string(client: Client) -> None:
    response = await client.get(
        "/api/schedule/preview?cronExpression=*/1 * * * * *&count=2&after=2026-01-01T00:00:00Z"
    )
    body = await response.json()
    assert [i["utc"] for i in body["instants"]] == [
        "2026-01-01T00:00:01.000Z",
        "2026-01-01T00:00:02.000Z",
    ]


async def test_instants_before_year_1000_are_written_with_four_digit_years(
    client: Client,
) -> None:
    response = await client.post(
        "/api/schedule/preview",
        json={"cronExpression": "57 52 5 * * *", "count": 1, "after": "0939-03-14T05:52:00Z"},
    )
    body = await response.json()
    assert body["after"] == "0939-03-14T05:52:00.000Z"
    assert body["instants"][0]["utc"] == "0939-03-14T05:52:57.000Z"


async def test_preview_near_the_end_of_the_calendar_lists_only_what_it_holds(
    client: Client,
) -> None:
    """No fire falls after 9999-12-31T23:59:59Z: none is listed, by either verb."""
    after = "9999-12-31T23:59:59Z"
    by_query = await client.get(
        "/api/schedule/preview", params={"cronExpression": "* * * * *", "after": after}
    )
    by_body = await client.post(
        "/api/schedule/preview", json={"cronExpression": "0 0 1 1 *", "after": after}
    )
    for response in (by_query, by_body):
        assert response.status == 200, await response.text()
        assert (await response.json())["instants"] == []
    in_a_zone_ahead = await client.post(
        "/api/schedule/preview",
        json={"cronExpression": "* * * * *", "timezone": "Asia/Tokyo", "after": after},
    )
    assert (await in_a_zone_ahead.json())["instants"] == []


@pytest.mark.parametrize(
    ("after", "timezone"),
    [
        ("9999-12-31T23:59:59-23:59", "UTC"),  # year 10000 in UTC
        ("0001-01-01T00:00:00+23:59", "UTC"),  # year 0 in UTC
        ("0001-01-01T00:00:00Z", "America/New_York"),  # year 0 on New York's clocks
    ],
)
async def test_preview_after_an_instant_outside_the_calendar_is_400_naming_after(
    client: Client, after: str, timezone: str
) -> None:
    query = {"cronExpression": "* * * * *", "timezone": timezone, "after": after}
    for response in (
        await client.get("/api/schedule/preview", params=query),
        await client.post("/api/schedule/preview", json=query),
    ):
        assert fields_of(await problem(response, 400)) == {"after"}


async def test_preview_from_the_first_day_of_the_calendar_in_utc(client: Client) -> None:
    response = await client.post(
        "/api/schedule/preview",
        json={"cronExpression": "0 0 * * *", "count": 1, "after": "0001-01-01T00:00:00Z"},
    )
    assert response.status == 200, await response.text()
    assert parse((await response.json())["instants"][0]["utc"]) == datetime(1, 1, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"cronExpression": "* * *"}, "cronExpression"),
        ({"cronExpression": "* * * * *", "count": 101}, "count"),
        ({"cronExpression": "* * * * *", "timezone": "Nowhere/Land"}, "timezone"),
        ({"cronExpression": "* * * * *", "after": "2026-01-01T00:00:00"}, "after"),
        ({"cronExpression": "* * * * *", "after": "soon"}, "after"),
        ({}, "cronExpression"),
    ],
)
async def test_bad_preview_is_400(client: Client, document: dict[str, Any], field: str) -> None:
    assert field in fields_of(
        await problem(await client.post("/api/schedule/preview", json=document), 400)
    )


# -- tick ledger ------------------------------------------------------------------


async def test_ledger_defaults_to_the_last_hour_and_lists_owed_ticks_up_to_now(
    client: Client,
) -> None:
    job = await create(client, cronExpression="* * * * *", isActive=False)
    response = await client.get(f"/api/cron/{job['id']}/ledger")
    assert response.status == 200
    ledger = await response.json()
    until = parse(ledger["until"])
    assert abs((datetime.now(UTC) - until).total_seconds()) < 5
    assert until - parse(ledger["since"]) == timedelta(hours=1)
    assert ledger["cronJobId"] == job["id"] and ledger["entries"] == []
    assert ledger["complete"] is True and ledger["knownFrom"] is None
    assert ledger["summary"]["ticks"] == 0 and ledger["summary"]["byStatus"]["SUCCESS"] == 0
    future = {"until": (datetime.now(UTC) + timedelta(days=2)).isoformat()}
    later = await (await client.get(f"/api/cron/{job['id']}/ledger", params=future)).json()
    # Ticks after now are not listed: the range answered ends at now.
    assert parse(later["since"]) <= parse(later["until"]) <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("since=yesterday", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        ("since=2026-01-01T00:00:00", "since"),  # no zone
        ("since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "since"),
        ("since=2026-01-01T00:00:00Z&until=2026-01-01T00:00:00Z", "since"),
        ("since=2026-01-01T00:00:00Z&until=2026-02-01T00:00:01Z", "since"),
        ("since=", "since"),
        ("until=", "until"),
    ],
)
async def test_ledger_rejects_bad_ranges_naming_the_parameter(
    client: Client, query: str, field: str
) -> None:
    job = await create(client)
    body = await problem(await client.get(f"/api/cron/{job['id']}/ledger?{query}"), 400)
    assert fields_of(body) == {field}


async def test_ledger_of_more_ticks_than_one_answer_holds_asks_to_narrow_the_range(
    client: Client,
) -> None:
    # An every-second job that was active from two hours ago to one hour ago.
    store = client.app[CONTEXT].store
    created = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    spec = JobSpec(name="busy", cron_expression="* * * * * *", webhook_url="https://x.org/")
    job = await store.create_job(
        Job(id=new_id(), spec=spec, created_at=created, updated_at=created, last_tick=created)
    )
    paused_at = created + timedelta(hours=1)
    await store.update_job(job.id, dataclasses.replace(spec, is_active=False), now=paused_at)
    url = f"/api/cron/{job.id}/ledger"

    body = await problem(await client.get(url, params={"until": paused_at.isoformat()}), 400)
    assert fields_of(body) == {"since"}
    assert "narrow" in body["errors"][0]["message"] and "1000" in body["errors"][0]["message"]
    end = created + timedelta(seconds=1001)
    window = {"since": created.isoformat(), "until": end.isoformat()}
    ledger = await (await client.get(url, params=window)).json()
    assert ledger["summary"]["ticks"] == ledger["summary"]["gaps"] == 1000  # nothing recorded
    assert {e["kind"] for e in ledger["entries"]} == {"gap"}
    assert ledger["entries"][0]["status"] is None and ledger["entries"][0]["executionId"] is None
    # Long after the pause nothing is owed, however long the range.
    quiet = {"since": paused_at.isoformat(), "until": datetime.now(UTC).isoformat()}
    assert (await (await client.get(url, params=quiet)).json())["entries"] == []


async def test_ledger_reaching_back_to_the_first_day_of_the_calendar_is_empty(
    client: Client,
) -> None:
    job = await create(client)
    response = await client.get(
        f"/api/cron/{job['id']}/ledger", params={"until": "0001-01-01T00:30:00Z"}
    )
    assert response.status == 200, await response.text()
    ledger = await response.json()
    assert ledger["entries"] == [] and ledger["summary"]["ticks"] == 0
    assert parse(ledger["since"]) == datetime(1, 1, 1, tzinfo=UTC)
    first_day = {"since": "0001-01-01T00:00:00Z", "until": "0001-01-02T00:00:00Z"}
    response = await client.get(f"/api/cron/{job['id']}/ledger", params=first_day)
    assert response.status == 200, await response.text()


@pytest.mark.parametrize("name", ["since", "until"])
@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
async def test_instants_past_either_end_of_the_calendar_are_400_naming_the_parameter(
    client: Client, name: str, value: str
) -> None:
    job = await create(client)
    for path in ("/api/execution-logs", f"/api/cron/{job['id']}/ledger"):
        body = await problem(await client.get(path, params={name: value}), 400)
        assert fields_of(body) == {name}, path


async def test_ledger_of_an_unknown_job_is_not_found(client: Client) -> None:
    for job_id in ("0" * 24, "nope"):
        await problem(await client.get(f"/api/cron/{job_id}/ledger"), 404)


# -- system ---------------------------------------------------------------------


async def test_health_endpoints(client: Client) -> None:
    assert (await (await client.get("/healthz")).json()) == {"status": "ok"}
    for path in ("/readyz", "/api/health-check"):
        response = await client.get(path)
        assert response.status == 200
        body = await response.json()
        assert body["status"] == "ok"
        assert body["checks"] == {"store": "ok", "coordinator": "ok", "scheduler": "ok"}


async def test_cluster_shows_this_instance_as_leader(client: Client) -> None:
    body = await (await client.get("/api/cluster")).json()
    assert len(body["instances"]) == 1
    (instance,) = body["instances"]
    assert body["leader"] == instance["id"] and instance["isLeader"] is True
    assert parse(instance["lastHeartbeat"]) <= datetime.now(UTC)


async def test_metrics_an_operator_alerts_on_read_zero_before_anything_happens(
    client: Client,
) -> None:
    response = await client.get("/metrics")
    assert response.status == 200
    families = {
        family.name: family for family in text_string_to_metric_families(await response.text())
    }
    assert families["cronsvc_active_jobs"].type == "gauge"
    assert families["cronsvc_fire_lag_seconds"].type == "histogram"
    assert families["cronsvc_webhook_duration_seconds"].type == "histogram"
    statuses = {
        sample.labels["status"]: sample.value
        for sample in families["cronsvc_executions"].samples
        if sample.name == "cronsvc_executions_total"
    }
    assert statuses == dict.fromkeys(["SUCCESS", "FAILURE", "SKIPPED", "MISSED", "LOST"], 0.0)
    for name in ("cronsvc_lease", "cronsvc_webhook_attempts", "cronsvc_log_writes_delayed"):
        assert families[name].type == "counter"


async def test_a_bad_schedule_is_reported_with_the_other_bad_fields(client: Client) -> None:
    document = {"name": "x", "cronExpression": "0 0 30 2 *", "webhookUrl": "ftp://x", "colour": 1}
    body = await problem(await client.post("/api/cron", json=document), 400)
    assert fields_of(body) == {"cronExpression", "webhookUrl", "colour"}


LONG_LABEL_URL = "http://" + "a" * 64 + ".example.com/hook"


@pytest.mark.parametrize(
    "url",
    [
        LONG_LABEL_URL,
        "http://" + "a." * 127 + "com/",  # 257 characters
        "http://127.0.0.1%20/",
        "http://%31%32%37.0.0.1/",
        "http://[v1.x]/",
        "http://exa mple.com/",
        "http://a..example.com/",
        "http://example.com:0/",
    ],
)
async def test_a_url_no_request_could_be_sent_to_is_400_and_writes_nothing(
    client: Client, url: str
) -> None:
    body = await problem(await client.post("/api/cron", json={**NODE_JOB, "webhookUrl": url}), 400)
    assert fields_of(body) == {"webhookUrl"}, body
    assert await (await client.get("/api/cron")).json() == []


@pytest.mark.parametrize(
    "url",
    [
        "http://b\u00fccher.example/",
        "http://xn--bcher-kva.example/",
        "http://example.com./",
        "http://a_b.example/",
        "http://" + "a" * 63 + ".example.com/",
        "https://[2001:db8::1]:8443/x",
        "http://192.0.2.1:8080/x?y=1",
    ],
)
async def test_urls_of_every_sendable_host_form_are_accepted(client: Client, url: str) -> None:
    assert (await create(client, webhookUrl=url))["webhookUrl"] == url


async def test_a_stored_url_no_request_can_go_to_fails_its_run_in_words(client: Client) -> None:
    """A job stored before the API refused such URLs: its runs say why, in words."""
    store = client.app[CONTEXT].store
    now = datetime.now(UTC)
    spec = JobSpec(name="old", cron_expression="0 0 1 1 *", webhook_url=LONG_LABEL_URL)
    job = await store.create_job(
        Job(id=new_id(), spec=spec, created_at=now, updated_at=now, last_tick=now)
    )
    triggered = await (await client.post(f"/api/cron/{job.id}/trigger")).json()
    async with asyncio.timeout(10):
        while True:
            run = await (await client.get(f"/api/execution-logs/{triggered['id']}")).json()
            if run["status"] != "RUNNING":
                break
            await asyncio.sleep(0.02)
    assert run["status"] == "FAILURE"
    assert run["error"]["type"] == "invalid_url"
    assert "63 characters" in run["error"]["message"]
    assert "Error" not in run["error"]["message"]


# -- SSRF guard: literal private targets are refused when a job is written ------

PRIVATE_TARGETS = [
    "http://127.0.0.1/hook",
    "http://127.0.0.1:8080/hook",
    "http://localhost:3000/hook",
    "http://app.localhost/hook",
    "http://2130706433/hook",
    "http://127.1/hook",
    "http://0x7f.0.0.1/hook",
    "http://[::1]/hook",
    "http://[::ffff:10.0.0.1]/hook",
    "http://10.0.0.5/hook",
    "http://192.168.1.10/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/hook",
    "http://0.0.0.0/hook",
]


@pytest.fixture
async def guarded(make_client: MakeClient) -> Client:
    """A service whose `webhook` settings are the defaults: the guard shut."""
    return await make_client(webhook=WebhookConfig())


@pytest.mark.parametrize("url", PRIVATE_TARGETS)
async def test_a_private_literal_target_is_refused_on_create_and_nothing_is_written(
    guarded: Client, url: str
) -> None:
    body = await problem(await guarded.post("/api/cron", json={**NODE_JOB, "webhookUrl": url}), 400)
    assert fields_of(body) == {"webhookUrl"}
    [error] = body["errors"]
    assert "not an allowed webhook target" in error["message"]
    assert "webhook.allowed_cidrs" in error["message"]  # the way to allow one that is meant
    assert await (await guarded.get("/api/cron")).json() == []


@pytest.mark.parametrize(
    "url",
    ["https://93.184.216.34/hook", "https://hooks.example.org/hook", "http://[2606:4700::1]/"],
)
async def test_public_literals_and_names_pass_on_create(guarded: Client, url: str) -> None:
    job = await create(guarded, webhookUrl=url, isActive=False)
    assert job["webhookUrl"] == url


async def test_a_private_target_is_refused_on_put_and_patch_and_nothing_is_written(
    guarded: Client,
) -> None:
    job = await create(guarded, isActive=False)
    document = {**NODE_JOB, "isActive": False, "webhookUrl": "http://127.1:8080/hook"}
    body = await problem(await guarded.put(f"/api/cron/{job['id']}", json=document), 400)
    assert fields_of(body) == {"webhookUrl"}
    patch = {"webhookUrl": "http://localhost/hook"}
    body = await problem(await guarded.patch(f"/api/cron/{job['id']}", json=patch), 400)
    assert fields_of(body) == {"webhookUrl"}
    assert await (await guarded.get(f"/api/cron/{job['id']}")).json() == job


async def test_a_private_target_is_reported_with_the_other_bad_fields(guarded: Client) -> None:
    document = {"name": "x", "cronExpression": "0 0 30 2 *", "webhookUrl": "http://127.0.0.1/"}
    body = await problem(await guarded.post("/api/cron", json=document), 400)
    assert fields_of(body) == {"cronExpression", "webhookUrl"}
    body = await problem(await guarded.post("/api/cron", json={**document, "colour": 1}), 400)
    assert fields_of(body) == {"cronExpression", "webhookUrl", "colour"}


async def test_allow_private_targets_lets_private_literals_through_but_not_metadata(
    make_client: MakeClient,
) -> None:
    client = await make_client(webhook=WebhookConfig(allow_private_targets=True))
    for n, url in enumerate(PRIVATE_TARGETS):
        document = {**NODE_JOB, "name": f"private {n}", "webhookUrl": url, "isActive": False}
        response = await client.post("/api/cron", json=document)
        if "169.254.169.254" in url:
            assert fields_of(await problem(response, 400)) == {"webhookUrl"}
        else:
            assert response.status == 201, (url, await response.text())


async def test_allowed_cidrs_let_their_range_through_on_create(
    make_client: MakeClient,
) -> None:
    client = await make_client(webhook=WebhookConfig(allowed_cidrs=["10.20.0.0/16"]))
    await create(client, webhookUrl="http://10.20.30.40/hook", isActive=False)
    body = await problem(
        await client.post(
            "/api/cron", json={**NODE_JOB, "name": "other", "webhookUrl": "http://10.21.0.1/"}
        ),
        400,
    )
    assert fields_of(body) == {"webhookUrl"}
