"""Dry runs of job writes: the pure diff and fire comparison, and
`?dryRun=true` on create, replace and patch against a running service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cronsvc.api.context import CONTEXT
from cronsvc.api.schemas import DryRunOut
from cronsvc.config import Config, WebhookConfig
from cronsvc.cron import parse_schedule
from cronsvc.domain import Job, JobSpec
from cronsvc.dryrun import Change, Move, changes, compare, fires, plan_fires
from cronsvc.ids import new_id
from tests.fakes import FakeClock, Receiver
from tests.helpers_api import Client, MakeClient, parse, problem

JSON = {"Content-Type": "application/json"}
JOB = {
    "name": "nightly",
    "cronExpression": "0 2 * * *",
    "webhookUrl": "https://example.org/hook",
    "timezone": "UTC",
    "isActive": True,
}
T0 = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
"""A fixed instant: Europe/Berlin moves its clocks forward on 2026-03-29
and back on 2026-10-25."""


def at(day: int, hour: int, minute: int = 0, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


# -- pure: which fields change -------------------------------------------------


def test_changes_lists_only_the_fields_that_differ_in_the_order_of_the_new_job() -> None:
    before = {"name": "a", "cronExpression": "0 2 * * *", "tags": ["x"], "body": None}
    after = {"name": "a", "cronExpression": "0 14 * * *", "tags": ["x", "y"], "body": None}
    assert changes(before, after, secret_before=None, secret_after=None) == [
        Change(field="cronExpression", before="0 2 * * *", after="0 14 * * *"),
        Change(field="tags", before=["x"], after=["x", "y"]),
    ]


def test_a_value_of_another_type_is_a_change_even_when_equal() -> None:
    found = changes({"body": 1}, {"body": True}, secret_before=None, secret_after=None)
    assert found == [Change(field="body", before=1, after=True)]


def test_a_create_changes_every_field_and_has_no_before() -> None:
    found = changes(None, {"name": "a", "body": None}, secret_before=None, secret_after="s")
    assert found == [
        Change(field="name", after="a", has_before=False),
        Change(field="body", after=None, has_before=False),
        Change(field="secret", has_before=False, redacted=True),
    ]


@pytest.mark.parametrize(
    ("old", "new", "changed"),
    [
        ("whsec_a", "whsec_b", True),
        ("whsec_a", None, True),
        (None, "whsec_b", True),
        ("whsec_a", "whsec_a", False),
        (None, None, False),
    ],
)
def test_a_secret_is_shown_only_as_changed(old: str | None, new: str | None, changed: bool) -> None:
    found = changes({"name": "a"}, {"name": "a"}, secret_before=old, secret_after=new)
    assert found == ([Change(field="secret", redacted=True)] if changed else [])
    assert all(c.before is None and c.after is None for c in found)


@pytest.mark.parametrize(
    ("old", "new", "changed"),
    [("whsec_a", "whsec_b", True), ("whsec_a", None, True), ("whsec_a", "whsec_a", False)],
)
def test_an_alert_secret_is_shown_only_as_changed_after_the_secret(
    old: str | None, new: str | None, changed: bool
) -> None:
    found = changes(
        {"name": "a"},
        {"name": "a"},
        secret_before=None,
        secret_after="whsec_s",
        alert_secret_before=old,
        alert_secret_after=new,
    )
    alert = [Change(field="alerts.secret", redacted=True)] if changed else []
    assert found == [Change(field="secret", redacted=True), *alert]


# -- pure: fires and their comparison ------------------------------------------


def test_fires_mark_the_first_fire_after_each_offset_change() -> None:
    schedule = parse_schedule("0 12 * * 0", "Europe/Berlin")  # Sundays at noon
    listed = fires(schedule, T0, 3)
    assert [f.utc for f in listed] == [at(22, 11), at(29, 10), at(5, 10, month=4)]
    assert [f.dst_change for f in listed] == [False, True, False]
    assert [f.local.isoformat() for f in listed][:2] == [
        "2026-03-22T12:00:00+01:00",
        "2026-03-29T12:00:00+02:00",
    ]


def test_the_first_fire_is_compared_with_the_offset_at_the_start() -> None:
    schedule = parse_schedule("0 12 * * *", "Europe/Berlin")
    [first] = fires(schedule, at(29, 0), 1)  # 01:00 +01:00, before the change at 02:00 local
    assert first.dst_change and first.local.isoformat() == "2026-03-29T12:00:00+02:00"


def test_a_paused_job_has_no_fires() -> None:
    assert fires(None, T0, 10) == []


def test_fires_that_change_hour_move() -> None:
    before = [at(d, 2) for d in range(21, 24)]
    after = [at(d, 14) for d in range(21, 24)]
    result = compare(before, after)
    assert result.moved == [Move(before=b, after=a) for b, a in zip(before, after, strict=True)]
    assert result.appeared == result.disappeared == []
    assert result.moved[0].by == timedelta(hours=12)


def test_fires_between_kept_ones_appear_and_disappear() -> None:
    before = [at(21, h) for h in (0, 1, 2, 3)]
    after = [at(21, 0), at(21, 0, 30), at(21, 1), at(21, 1, 30), at(21, 3)]
    result = compare(before, after)
    assert result.moved == [Move(before=at(21, 2), after=at(21, 1, 30))]
    assert result.appeared == [at(21, 0, 30)]
    assert result.disappeared == []


def test_fires_past_the_reach_of_either_listing_are_not_compared() -> None:
    before = [at(21, h) for h in range(10)]
    after = [at(21, 0, 30)]
    result = compare(before, after, until=at(21, 3))
    assert result.moved == [Move(before=at(21, 0), after=at(21, 0, 30))]
    assert result.disappeared == [at(21, 1), at(21, 2), at(21, 3)]


def test_a_pause_makes_every_listed_fire_disappear() -> None:
    plan = plan_fires(parse_schedule("0 * * * *", "UTC"), T0, None, T0, 3)
    assert [f.utc for f in plan.before] == [at(20, 13), at(20, 14), at(20, 15)]
    assert plan.after == [] and plan.comparison.moved == []
    assert plan.comparison.disappeared == [at(20, 13), at(20, 14), at(20, 15)]


def test_a_plan_pairs_the_last_listed_fire_with_the_one_it_moved_to() -> None:
    plan = plan_fires(
        parse_schedule("0 2 * * *", "UTC"), T0, parse_schedule("0 14 * * *", "UTC"), T0, 3
    )
    # In order: the first fire (tomorrow 02:00) moves to the first after (today 14:00).
    assert [(m.before, m.after) for m in plan.comparison.moved] == [
        (at(d + 1, 2), at(d, 14)) for d in (20, 21, 22)
    ]
    assert plan.comparison.appeared == plan.comparison.disappeared == []


def test_a_plan_reports_the_fires_a_denser_schedule_adds_within_the_listing() -> None:
    plan = plan_fires(
        parse_schedule("0 * * * *", "UTC"), T0, parse_schedule("*/30 * * * *", "UTC"), T0, 4
    )
    assert plan.comparison.moved == [] and plan.comparison.disappeared == []
    assert plan.comparison.appeared == [at(20, 12, 30), at(20, 13, 30)]


def test_a_zone_change_moves_each_fire_by_the_offset() -> None:
    plan = plan_fires(
        parse_schedule("0 9 * * *", "UTC"), T0, parse_schedule("0 9 * * *", "Europe/Berlin"), T0, 2
    )
    assert [m.by for m in plan.comparison.moved] == [timedelta(hours=-1)] * 2


# -- against the service --------------------------------------------------------


async def create(client: Client, **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/cron", json={**JOB, **fields})
    assert response.status == 201, await response.text()
    job: dict[str, Any] = await response.json()
    return job


async def dry_run(response: Any) -> dict[str, Any]:
    """A dry run's answer, checked against its model."""
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    assert DryRunOut.model_validate(answer).wire() == answer
    assert answer["dryRun"] is True
    return answer


async def stored(client: Client) -> tuple[list[dict[str, Any]], int]:
    """Every job as the API reads it, and how many schedule revisions the store holds."""
    jobs: list[dict[str, Any]] = await (await client.get("/api/cron")).json()
    store = client.app[CONTEXT].store
    revisions = sum([len(await store.schedule_history(j["id"])) for j in jobs])
    return jobs, revisions


@pytest.fixture
async def clock() -> FakeClock:
    clock = FakeClock()
    clock.advance((T0 - clock.now()).total_seconds())
    return clock


@pytest.fixture
async def fixed(make_client: MakeClient, clock: FakeClock) -> Client:
    """A service whose clock starts at `T0`."""
    return await make_client(clock=clock)


async def test_a_dry_run_put_answers_changes_and_fires_and_writes_nothing(fixed: Client) -> None:
    job = await create(fixed, secret="generate")
    before = await stored(fixed)
    document = {**JOB, "cronExpression": "0 14 * * *", "timezone": "Europe/Berlin"}
    answer = await dry_run(await fixed.put(f"/api/cron/{job['id']}?dryRun=true", json=document))
    assert await stored(fixed) == before
    assert answer["job"]["id"] == job["id"]
    assert answer["job"]["version"] == job["version"] + 1
    assert answer["job"]["cronExpression"] == "0 14 * * *" and answer["job"]["hasSecret"]
    assert answer["changes"] == [
        {"field": "cronExpression", "before": "0 2 * * *", "after": "0 14 * * *"},
        {"field": "timezone", "before": "UTC", "after": "Europe/Berlin"},
    ]
    fired = answer["fires"]
    assert len(fired["before"]) == len(fired["after"]) == 10
    assert fired["before"][0] == {
        "utc": "2026-03-21T02:00:00.000Z",
        "local": "2026-03-21T02:00:00+00:00",
        "dstChange": False,
    }
    assert fired["after"][0]["utc"] == "2026-03-20T13:00:00.000Z"
    assert fired["after"][0]["local"] == "2026-03-20T14:00:00+01:00"
    [change] = [f for f in fired["after"] if f["dstChange"]]
    assert change == {
        "utc": "2026-03-29T12:00:00.000Z",
        "local": "2026-03-29T14:00:00+02:00",
        "dstChange": True,
    }
    assert fired["moved"][0] == {
        "before": "2026-03-21T02:00:00.000Z",
        "after": "2026-03-20T13:00:00.000Z",
        "bySeconds": -13 * 3600,
    }
    assert answer["job"]["nextRunAt"] == fired["after"][0]["utc"]


async def test_a_dry_run_patch_and_create_write_nothing(fixed: Client) -> None:
    job = await create(fixed)
    before = await stored(fixed)
    patch = {"cronExpression": "0 * * * *", "secret": "generate"}
    answer = await dry_run(await fixed.patch(f"/api/cron/{job['id']}?dryRun=1", json=patch))
    assert answer["changes"] == [
        {"field": "cronExpression", "before": "0 2 * * *", "after": "0 * * * *"},
        {"field": "secret", "redacted": True},
    ]
    assert "secret" not in answer["job"] and answer["job"]["hasSecret"]
    # Every hourly fire listed falls before the first nightly one (kept).
    assert answer["fires"]["appeared"] == [f["utc"] for f in answer["fires"]["after"]]
    new = {**JOB, "name": "hourly", "cronExpression": "0 * * * *"}
    answer = await dry_run(await fixed.post("/api/cron?dryRun=true&fires=3", json=new))
    assert "id" not in answer["job"] and answer["job"]["version"] == 1
    assert answer["fires"]["before"] == [] and len(answer["fires"]["after"]) == 3
    assert answer["fires"]["appeared"] == [f["utc"] for f in answer["fires"]["after"]]
    assert all("before" not in c for c in answer["changes"])
    assert {"field": "name", "after": "hourly"} in answer["changes"]
    assert await stored(fixed) == before


async def test_a_dry_run_pause_makes_the_fires_disappear(fixed: Client) -> None:
    job = await create(fixed)
    patch = {"isActive": False}
    answer = await dry_run(
        await fixed.patch(f"/api/cron/{job['id']}?dryRun=true&fires=2", json=patch)
    )
    assert answer["job"]["nextRunAt"] is None
    assert answer["fires"]["after"] == []
    assert answer["fires"]["disappeared"] == [
        "2026-03-21T02:00:00.000Z",
        "2026-03-22T02:00:00.000Z",
    ]


async def test_a_dry_run_does_not_change_what_the_scheduler_fires(
    client: Client, start_receiver: Any
) -> None:
    old: Receiver = await start_receiver()
    new: Receiver = await start_receiver()
    job = await create(client, cronExpression="* * * * * *", webhookUrl=old.url)
    await old.wait_for(1)
    document = {**JOB, "cronExpression": "* * * * * *", "webhookUrl": new.url}
    await dry_run(await client.put(f"/api/cron/{job['id']}?dryRun=true", json=document))
    await dry_run(
        await client.patch(f"/api/cron/{job['id']}?dryRun=true", json={"isActive": False})
    )
    seen = len(old.requests)
    await old.wait_for(seen + 2)
    assert new.requests == []
    current = await (await client.get(f"/api/cron/{job['id']}")).json()
    assert (current["version"], current["updatedAt"]) == (job["version"], job["updatedAt"])


# -- a dry run is refused as the write would be --------------------------------


async def refused_alike(client: Client, method: str, path: str, status: int, **kw: Any) -> None:
    """The write and its dry run answer the same problem (the request id aside)."""
    answers = []
    for url in (f"{path}?dryRun=true" if "?" not in path else f"{path}&dryRun=true", path):
        body = await problem(await client.request(method, url, **kw), status)
        body.pop("requestId", None)
        body.pop("instance", None)
        answers.append(body)
    assert answers[0] == answers[1]


async def test_bad_fields_are_refused_alike(fixed: Client) -> None:
    job = await create(fixed)
    bad = {**JOB, "cronExpression": "0 0 30 2 *", "timezone": "Mars/Olympus", "colour": 1}
    await refused_alike(fixed, "POST", "/api/cron", 400, json=bad)
    await refused_alike(fixed, "PUT", f"/api/cron/{job['id']}", 400, json=bad)
    await refused_alike(fixed, "PATCH", f"/api/cron/{job['id']}", 400, json={"timeoutSeconds": -1})
    await refused_alike(fixed, "PUT", f"/api/cron/{job['id']}", 400, data=b"{", headers=JSON)
    await refused_alike(fixed, "PUT", f"/api/cron/{job['id']}", 415, data=b"{}")


async def test_a_missing_job_stale_version_and_taken_name_are_refused_alike(
    fixed: Client,
) -> None:
    job = await create(fixed)
    await create(fixed, name="other")
    missing = "0" * 24
    await refused_alike(fixed, "PUT", f"/api/cron/{missing}", 404, json=JOB)
    await refused_alike(fixed, "PATCH", f"/api/cron/{missing}", 404, json={})
    stale = {"version": job["version"] + 5}
    await refused_alike(fixed, "PATCH", f"/api/cron/{job['id']}", 409, json=stale)
    await refused_alike(fixed, "PUT", f"/api/cron/{job['id']}", 409, json={**JOB, **stale})
    await refused_alike(fixed, "PATCH", f"/api/cron/{job['id']}", 409, json={"name": "other"})
    await refused_alike(fixed, "POST", "/api/cron", 409, json={**JOB, "name": "other"})
    current = await (await fixed.get(f"/api/cron/{job['id']}")).json()
    assert current == job


async def test_the_job_limit_is_refused_alike(
    make_client: MakeClient, clock: FakeClock, config: Config
) -> None:
    limits = config.limits.model_copy(update={"max_jobs": 1})
    limited = await make_client(clock=clock, limits=limits)
    await create(limited)
    await refused_alike(limited, "POST", "/api/cron", 409, json={**JOB, "name": "second"})


async def test_the_ssrf_guard_refuses_alike(make_client: MakeClient) -> None:
    guarded = await make_client(webhook=WebhookConfig())
    job = await create(guarded, isActive=False)
    private = {**JOB, "webhookUrl": "http://169.254.169.254/latest/meta-data/"}
    await refused_alike(guarded, "POST", "/api/cron", 400, json=private)
    await refused_alike(guarded, "PUT", f"/api/cron/{job['id']}", 400, json=private)
    patch = {"webhookUrl": "http://localhost/hook"}
    await refused_alike(guarded, "PATCH", f"/api/cron/{job['id']}", 400, json=patch)


@pytest.mark.parametrize("query", ["dryRun=yes", "dryRun=", "dryRun=true&fires=0"])
async def test_a_bad_dry_run_parameter_is_a_400_and_writes_nothing(
    fixed: Client, query: str
) -> None:
    job = await create(fixed)
    field = "fires" if "fires" in query else "dryRun"
    for method, path, body in [
        ("POST", "/api/cron", {**JOB, "name": "second"}),
        ("PUT", f"/api/cron/{job['id']}", {**JOB, "cronExpression": "0 3 * * *"}),
        ("PATCH", f"/api/cron/{job['id']}", {"cronExpression": "0 3 * * *"}),
    ]:
        answer = await problem(await fixed.request(method, f"{path}?{query}", json=body), 400)
        assert [e["field"] for e in answer["errors"]] == [field]
    assert await (await fixed.get("/api/cron")).json() == [job]


@pytest.mark.parametrize("fires", ["101", "ten"])
async def test_fires_is_bounded(fixed: Client, fires: str) -> None:
    job = await create(fixed)
    url = f"/api/cron/{job['id']}?dryRun=true&fires={fires}"
    answer = await problem(await fixed.patch(url, json={}), 400)
    assert answer["errors"][0] == {"field": "fires", "message": "must be an integer from 1 to 100"}


async def test_dry_run_false_writes(fixed: Client) -> None:
    job = await create(fixed)
    url = f"/api/cron/{job['id']}?dryRun=false&fires=3"
    response = await fixed.patch(url, json={"cronExpression": "0 3 * * *"})
    assert response.status == 200
    written = await response.json()
    assert written["version"] == job["version"] + 1
    assert parse(written["nextRunAt"]) == at(21, 3)


async def test_the_openapi_document_declares_the_dry_run(client: Client) -> None:
    document = await (await client.get("/openapi.json")).json()
    dry_run = {"$ref": "#/components/schemas/DryRunOut"}
    for path, method in [("/api/cron/{id}", "put"), ("/api/cron/{id}", "patch")]:
        operation = document["paths"][path][method]
        assert {"dryRun", "fires"} <= {p["name"] for p in operation["parameters"]}
        schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema == {"oneOf": [{"$ref": "#/components/schemas/JobOut"}, dry_run]}
    create = document["paths"]["/api/cron"]["post"]
    assert {"dryRun", "fires"} <= {p["name"] for p in create["parameters"]}
    assert create["responses"]["200"]["content"]["application/json"]["schema"] == dry_run
    assert create["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobOut"
    }
    schemas = document["components"]["schemas"]
    assert "id" not in schemas["DryRunJobOut"]["required"]
    assert {"dryRun", "job", "changes", "fires"} <= set(schemas["DryRunOut"]["properties"])


async def test_a_stored_schedule_that_no_longer_parses_has_no_fires_before(
    fixed: Client, clock: FakeClock
) -> None:
    """A job stored before today's rules (an import, say): its dry run shows
    the fires the write would bring, none before."""
    store = fixed.app[CONTEXT].store
    now = clock.now()
    spec = JobSpec(name="old", cron_expression="61 * * * *", webhook_url="https://e.org/")
    job = await store.create_job(
        Job(id=new_id(), spec=spec, created_at=now, updated_at=now, last_tick=now)
    )
    url = f"/api/cron/{job.id}?dryRun=true&fires=2"
    answer = await dry_run(await fixed.patch(url, json={"cronExpression": "0 2 * * *"}))
    assert answer["fires"]["before"] == []
    assert answer["fires"]["appeared"] == ["2026-03-21T02:00:00.000Z", "2026-03-22T02:00:00.000Z"]
