"""The HTTP API: every endpoint and every error, against a running service."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from cronsvc.api.context import CONTEXT
from cronsvc.domain import Job, JobSpec
from cronsvc.ids import new_id

Client = TestClient[web.Request, web.Application]

NODE_JOB = {
    "name": "every 2 min",
    "cronExpression": "*/2 * * * *",
    "webhookUrl": "https://example.org/hook",
    "isActive": True,
}


async def create(client: Client, **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/cron", json={**NODE_JOB, **fields})
    assert response.status == 201, await response.text()
    job: dict[str, Any] = await response.json()
    return job


async def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    body: dict[str, Any] = await response.json()
    assert body["status"] == status
    return body


def fields_of(body: dict[str, Any]) -> set[str]:
    return {e["field"] for e in body.get("errors", [])}


def parse(instant: str) -> datetime:
    return datetime.fromisoformat(instant.replace("Z", "+00:00"))


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
    assert next_run.minute % 2 == 0 and next_run.second == 0


async def test_created_job_can_be_read_back(client: Client) -> None:
    job = await create(client, tags=["a", "b"], headers={"X-Token": "t"}, body={"k": [1, 2]})
    response = await client.get(f"/api/cron/{job['id']}")
    assert response.status == 200
    assert await response.json() == job


async def test_secret_is_write_only(client: Client) -> None:
    job = await create(client, secret="s3cret-value")
    assert job["hasSecret"] is True
    text = await (await client.get(f"/api/cron/{job['id']}")).text()
    assert "s3cret-value" not in text


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
    job = await create(client, secret="keep-me")
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
    ],
)
async def test_bad_execution_log_query_is_400(client: Client, query: str, field: str) -> None:
    assert field in fields_of(await problem(await client.get(f"/api/execution-logs?{query}"), 400))


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


async def test_metrics_are_prometheus_text(client: Client) -> None:
    response = await client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    assert "# TYPE cronsvc_active_jobs gauge" in text


async def test_a_bad_schedule_is_reported_with_the_other_bad_fields(client: Client) -> None:
    document = {"name": "x", "cronExpression": "0 0 30 2 *", "webhookUrl": "ftp://x", "colour": 1}
    body = await problem(await client.post("/api/cron", json=document), 400)
    assert fields_of(body) == {"cronExpression", "webhookUrl", "colour"}
