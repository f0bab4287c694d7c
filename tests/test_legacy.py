"""`cronsvc import-legacy`: the Node.js service's jobs and logs brought over.

The decisions are tested by table, as pure functions; the command against a
real MongoDB wire server seeded with documents shaped as Mongoose wrote them,
into each store backend, and checked through the HTTP API."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pty
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from bson import ObjectId
from pymongo import MongoClient

from cronsvc.cli import main
from cronsvc.config import Config, StoreConfig
from cronsvc.domain import (
    ErrorInfo,
    ExecutionStatus,
    HttpMethod,
    Job,
    JobSpec,
    MisfirePolicy,
    Trigger,
)
from cronsvc.ids import new_id
from cronsvc.legacy import MAX_MESSAGE_CHARS, Outcome, Settings, plan_job, plan_log
from cronsvc.netguard import TargetPolicy, parse_cidr
from cronsvc.store import ExecutionQuery, JobQuery, open_store
from tests.fakes import Receiver, Run, free_port
from tests.fixtures_mongo import with_database
from tests.helpers_api import MakeClient

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SETTINGS = Settings(now=NOW)
OLD_ID = "65a1b2c3d4e5f60718293a4b"


def legacy_job(**fields: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "_id": ObjectId(OLD_ID),
        "name": "nightly-report",
        "cronExpression": "0 2 * * *",
        "webhookUrl": "https://example.org/hooks/report",
        "isActive": True,
        "createdAt": datetime(2025, 11, 1, 8, 30, 15, 123456),  # pymongo's naive UTC
        "updatedAt": datetime(2025, 12, 24, 9, 0),
        "__v": 0,
    }
    document.update(fields)
    return document


def legacy_log(**fields: Any) -> dict[str, Any]:
    executed = NOW - timedelta(days=1)
    document: dict[str, Any] = {
        "_id": ObjectId("65a1b2c3d4e5f60718293a99"),
        "cronJobId": ObjectId(OLD_ID),
        "status": "SUCCESS",
        "responseStatus": 200,
        "responseBody": "done",
        "error": None,
        "executedAt": executed,
        "createdAt": executed + timedelta(milliseconds=350),
        "updatedAt": executed + timedelta(milliseconds=350),
        "__v": 0,
    }
    document.update(fields)
    return document


# -- decisions, by table ------------------------------------------------------------


def test_a_sound_job_keeps_its_id_fields_and_times_and_takes_the_api_defaults() -> None:
    plan = plan_job(legacy_job(), SETTINGS, last_run=(NOW, ExecutionStatus.FAILURE))

    assert plan.outcome is Outcome.IMPORTED and plan.reason is None
    job = plan.job
    assert job is not None
    assert job.id == OLD_ID
    assert (job.spec.name, job.spec.cron_expression) == ("nightly-report", "0 2 * * *")
    assert job.spec.webhook_url == "https://example.org/hooks/report"
    assert job.spec.is_active
    assert job.created_at == datetime(2025, 11, 1, 8, 30, 15, 123000, tzinfo=UTC)
    assert job.updated_at == datetime(2025, 12, 24, 9, 0, tzinfo=UTC)
    assert job.last_tick == NOW  # no backlog of ticks owed
    assert (job.last_run_at, job.last_status) == (NOW, ExecutionStatus.FAILURE)
    assert job.spec.timezone == "UTC"
    assert job.spec.http_method is HttpMethod.POST
    assert job.spec.misfire_policy is MisfirePolicy.FIRE_ONCE
    assert job.spec.timeout_seconds == SETTINGS.default_timeout_s
    assert job.paused_reason is None


@pytest.mark.parametrize(
    ("changes", "settings", "outcome", "reason"),
    [
        ({"isActive": False}, SETTINGS, Outcome.IMPORTED, None),
        ({"cronExpression": "61 * * * *"}, SETTINGS, Outcome.PAUSED, "cronExpression '61 * * * *'"),
        ({"cronExpression": "0 0 30 2 *"}, SETTINGS, Outcome.PAUSED, "cronExpression '0 0 30 2 *'"),
        (
            {"cronExpression": "* * * * * *"},
            dataclasses.replace(SETTINGS, min_interval_s=60),
            Outcome.PAUSED,
            "minimum interval is 60 s",
        ),
        ({"cronExpression": None}, SETTINGS, Outcome.PAUSED, "cronExpression None"),
        ({"isActive": "yes"}, SETTINGS, Outcome.PAUSED, "isActive was 'yes'"),
        (
            {"webhookUrl": "http://10.1.2.3/hook"},
            SETTINGS,
            Outcome.PAUSED,
            "webhookUrl: 10.1.2.3 is a private address",
        ),
        (
            {"webhookUrl": "http://10.1.2.3/hook"},
            dataclasses.replace(
                SETTINGS, target_policy=TargetPolicy(allowed_networks=(parse_cidr("10.0.0.0/8"),))
            ),
            Outcome.IMPORTED,
            None,
        ),
        ({"webhookUrl": "ftp://example.org/"}, SETTINGS, Outcome.REFUSED, "webhookUrl: must be"),
        ({"webhookUrl": "https://u:p@example.org/"}, SETTINGS, Outcome.REFUSED, "credentials"),
        ({"webhookUrl": None}, SETTINGS, Outcome.REFUSED, "webhookUrl:"),
        ({"name": "n" * 201}, SETTINGS, Outcome.REFUSED, "name: String should have at most 200"),
        ({"name": " padded"}, SETTINGS, Outcome.REFUSED, "name: must not start or end"),
        ({"name": None}, SETTINGS, Outcome.REFUSED, "name:"),
        ({"_id": "not-an-object-id"}, SETTINGS, Outcome.REFUSED, "_id is not 24 hexadecimal"),
    ],
)
def test_each_legacy_job_is_imported_paused_with_its_reason_or_refused(
    changes: dict[str, Any], settings: Settings, outcome: Outcome, reason: str | None
) -> None:
    plan = plan_job(legacy_job(**changes), settings)

    assert plan.outcome is outcome, plan.reason
    if reason is None:
        assert plan.reason is None
    else:
        assert plan.reason is not None and reason in plan.reason
    if outcome is Outcome.PAUSED:
        assert plan.job is not None and not plan.job.spec.is_active
        assert plan.job.paused_reason == f"imported paused: {plan.reason}"
    if outcome is Outcome.REFUSED:
        assert plan.job is None


def test_a_job_present_named_alike_or_past_the_limit_is_not_imported() -> None:
    assert plan_job(legacy_job(), SETTINGS, present=True).outcome is Outcome.PRESENT
    taken = plan_job(legacy_job(), SETTINGS, name_taken=True)
    assert (taken.outcome, taken.reason) == (
        Outcome.REFUSED,
        "a job named 'nightly-report' already exists",
    )
    assert plan_job(legacy_job(), SETTINGS, room=False).outcome is Outcome.REFUSED


def test_a_log_keeps_its_id_job_and_times() -> None:
    plan = plan_log(legacy_log(), SETTINGS, {OLD_ID: "nightly-report"})

    execution = plan.execution
    assert plan.outcome is Outcome.IMPORTED and execution is not None
    executed = NOW - timedelta(days=1)
    assert execution.id == "65a1b2c3d4e5f60718293a99"
    assert (execution.job_id, execution.job_name) == (OLD_ID, "nightly-report")
    assert execution.trigger is Trigger.SCHEDULE
    assert execution.scheduled_at == execution.executed_at == executed
    assert execution.finished_at == executed + timedelta(milliseconds=350)
    assert execution.duration_ms == 350
    assert execution.status is ExecutionStatus.SUCCESS
    assert (execution.response_status, execution.response_body) == (200, "done")
    assert not execution.response_truncated
    assert execution.error is None


STACK = (
    "Error: connect ECONNREFUSED 10.0.0.7:443\n"
    "    at TCPConnectWrap.afterConnect [as oncomplete] (node:net:1555:16)\n"
    "    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)"
)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (None, None),
        (STACK, "Error: connect ECONNREFUSED 10.0.0.7:443"),
        ("\n  timeout of 10000ms exceeded  \n", "timeout of 10000ms exceeded"),
        ("x" * 2000, "x" * MAX_MESSAGE_CHARS),
        ({"message": "Request failed with status code 502", "stack": "..."}, None),
        ("   ", None),
    ],
)
def test_a_log_error_keeps_its_first_line_bounded(error: Any, expected: str | None) -> None:
    plan = plan_log(legacy_log(status="FAILURE", error=error), SETTINGS, {})

    assert plan.execution is not None
    if isinstance(error, dict):
        expected = error["message"]
    assert plan.execution.error == (
        None if expected is None else ErrorInfo(type="legacy", message=expected)
    )


@pytest.mark.parametrize(
    ("body", "limit", "expected", "truncated"),
    [
        ("ok", 10, "ok", False),
        ("0123456789abc", 10, "0123456789", True),
        ("éééé", 5, "éé", True),  # never half a character
        (None, 10, None, False),
        ({"ok": True}, 100, '{"ok": true}', False),
    ],
)
def test_a_log_response_body_is_bounded_as_cronsvc_bounds_its_own(
    body: Any, limit: int, expected: str | None, truncated: bool
) -> None:
    settings = dataclasses.replace(SETTINGS, max_response_bytes=limit)

    plan = plan_log(legacy_log(responseBody=body), settings, {})

    assert plan.execution is not None
    assert (plan.execution.response_body, plan.execution.response_truncated) == (
        expected,
        truncated,
    )


@pytest.mark.parametrize(
    ("changes", "outcome", "reason"),
    [
        ({"status": "PENDING"}, Outcome.REFUSED, "status 'PENDING' is not SUCCESS or FAILURE"),
        ({"cronJobId": None}, Outcome.REFUSED, "cronJobId None is not a job id"),
        ({"_id": 17}, Outcome.REFUSED, "_id is not 24 hexadecimal digits"),
        ({"executedAt": None, "createdAt": None}, Outcome.REFUSED, "executedAt is missing"),
        ({"executedAt": NOW - timedelta(days=31)}, Outcome.EXPIRED, None),
        ({"executedAt": None}, Outcome.IMPORTED, None),
    ],
)
def test_each_legacy_log_is_imported_refused_or_left_as_expired(
    changes: dict[str, Any], outcome: Outcome, reason: str | None
) -> None:
    plan = plan_log(legacy_log(**changes), SETTINGS, {})

    assert plan.outcome is outcome
    assert plan.reason == (None if reason is None else f"its {reason}")


def test_a_log_without_its_job_or_updated_before_it_ran_still_reads_sensibly() -> None:
    executed = NOW - timedelta(hours=1)
    document = legacy_log(
        cronJobId=ObjectId(),
        executedAt=executed,
        updatedAt=executed.replace(year=2020),
        responseStatus=True,
    )

    plan = plan_log(document, SETTINGS, {OLD_ID: "nightly-report"})

    assert plan.execution is not None
    assert plan.execution.job_name == ""
    assert plan.execution.finished_at == executed
    assert plan.execution.response_status is None


# -- the command, against a real MongoDB wire server -----------------------------------


@dataclasses.dataclass
class Seeded:
    """The old service's database, as its URL, and the ids in it."""

    url: str
    good: str
    bad_expression: str
    clash: str
    private: str
    every_second: str
    ftp: str
    big_log: str
    stack_log: str
    orphan_log: str
    old_log: str
    bad_log: str


@pytest.fixture
def legacy_database(
    mongo_url: str, _mongo_admin: MongoClient[dict[str, object]], receiver: Receiver
) -> Iterator[Seeded]:
    """A database seeded as the Node.js service left it (bson ObjectIds,
    naive UTC dates, `__v`): jobs sound and not, and their logs."""
    name = f"legacy{uuid4().hex[:10]}"
    db = _mongo_admin[name]
    now = datetime.now(UTC).replace(tzinfo=None)
    ids = {key: ObjectId() for key in Seeded.__dataclass_fields__ if key != "url"}
    created = datetime(2025, 11, 1, 8, 30, 15, 123000)

    def job(key: str, name: str, expression: str, url: str, active: bool = True) -> dict[str, Any]:
        return {
            "_id": ids[key],
            "name": name,
            "cronExpression": expression,
            "webhookUrl": url,
            "isActive": active,
            "createdAt": created,
            "updatedAt": created + timedelta(days=3),
            "__v": 0,
        }

    db.cronjobs.insert_many(
        [
            job("good", "nightly-report", "0 2 * * *", "https://example.org/report"),
            job("bad_expression", "broken", "61 * * * *", "https://example.org/broken"),
            job("clash", "taken", "0 3 * * *", "https://example.org/taken", active=False),
            job("private", "internal", "*/5 * * * *", "http://10.1.2.3:8080/hook"),
            job("every_second", "heartbeat", "* * * * * *", receiver.url),
            job("ftp", "ftp-job", "0 4 * * *", "ftp://example.org/"),
        ]
    )

    def log(key: str, job_key: str, ago: timedelta, **fields: Any) -> dict[str, Any]:
        executed = now - ago
        return {
            "_id": ids[key],
            "cronJobId": ids.get(job_key, ObjectId()),
            "status": "SUCCESS",
            "responseStatus": 200,
            "responseBody": "ok",
            "error": None,
            "executedAt": executed,
            "createdAt": executed + timedelta(milliseconds=420),
            "updatedAt": executed + timedelta(milliseconds=420),
            "__v": 0,
            **fields,
        }

    db.executionlogs.insert_many(
        [
            log("big_log", "good", timedelta(hours=2), responseBody="x" * 1_000_000),
            log(
                "stack_log",
                "good",
                timedelta(hours=1),
                status="FAILURE",
                responseStatus=None,
                responseBody=None,
                error=STACK,
            ),
            log("orphan_log", "gone", timedelta(hours=3)),
            log("old_log", "good", timedelta(days=90)),
            log("bad_log", "good", timedelta(hours=4), status="RUNNING"),
        ]
    )
    yield Seeded(url=with_database(mongo_url, name), **{k: str(v) for k, v in ids.items()})
    _mongo_admin.drop_database(name)


@pytest.fixture(params=["sqlite", "mongodb"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/imported.db"
    url: str = request.getfixturevalue("mongo_database_url")
    return url


@pytest.fixture
def import_config(config: Config) -> Config:
    """The test service's configuration with the SSRF guard shut but for the
    receivers on 127.0.0.1: a private address is refused, as in production."""
    return config.model_copy(
        update={
            "webhook": config.webhook.model_copy(
                update={"allow_private_targets": False, "allowed_cidrs": ["127.0.0.1/32"]}
            )
        }
    )


def config_file(tmp_path: Path, store_url: str) -> Path:
    path = tmp_path / "import.toml"
    path.write_text(
        f'[store]\nurl = "{store_url}"\n\n[webhook]\nallowed_cidrs = ["127.0.0.1/32"]\n'
    )
    return path


async def import_legacy(capsys: pytest.CaptureFixture[str], *args: str) -> Run:
    def run() -> int:
        try:
            return main(["import-legacy", *args])
        except SystemExit as exc:  # argparse's usage errors
            return int(exc.code or 0)

    capsys.readouterr()
    code = await asyncio.to_thread(run)
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


async def seed_clashing_job(store_url: str) -> None:
    """A job the cronsvc store already holds under a name an old job has."""
    store = await open_store(store_url)
    now = datetime.now(UTC).replace(microsecond=0)
    spec = JobSpec(name="taken", cron_expression="0 0 * * *", webhook_url="https://example.org/")
    try:
        await store.create_job(
            Job(id=new_id(), spec=spec, created_at=now, updated_at=now, last_tick=now)
        )
    finally:
        await store.aclose()


async def test_import_brings_jobs_and_logs_over_under_their_old_ids(
    capsys: pytest.CaptureFixture[str],
    legacy_database: Seeded,
    store_url: str,
    tmp_path: Path,
    make_client: MakeClient,
    import_config: Config,
    receiver: Receiver,
) -> None:
    seeded = legacy_database
    await seed_clashing_job(store_url)
    started = datetime.now(UTC)

    run = await import_legacy(
        capsys, "--from", seeded.url, "--config", str(config_file(tmp_path, store_url)), "--json"
    )

    assert run.code == 0, run.err
    report = run.json()
    assert report["jobs"] == {"imported": 2, "paused": 2, "refused": 2, "present": 0}
    assert report["logs"] == {
        "imported": 3,
        "refused": 1,
        "present": 0,
        "expired": 1,
        "withoutJob": 1,
    }
    entries = {e["id"]: e for e in report["entries"]}
    assert entries[seeded.clash]["outcome"] == "refused"
    assert entries[seeded.clash]["reason"] == "a job named 'taken' already exists"
    assert entries[seeded.ftp]["reason"] == "webhookUrl: must be an http:// or https:// URL"
    assert entries[seeded.bad_expression]["outcome"] == "paused"
    assert entries[seeded.private]["outcome"] == "paused"
    assert "not SUCCESS or FAILURE" in entries[seeded.bad_log]["reason"]

    client = await make_client(store=StoreConfig(url=store_url), webhook=import_config.webhook)
    response = await client.get(f"/api/cron/{seeded.good}")
    assert response.status == 200
    good = await response.json()
    assert good["id"] == seeded.good
    assert good["name"] == "nightly-report"
    assert good["cronExpression"] == "0 2 * * *"
    assert good["webhookUrl"] == "https://example.org/report"
    assert good["isActive"] is True
    assert good["createdAt"] == "2025-11-01T08:30:15.123Z"
    assert good["updatedAt"] == "2025-11-04T08:30:15.123Z"
    assert (good["timezone"], good["httpMethod"], good["misfirePolicy"]) == (
        "UTC",
        "POST",
        "fire_once",
    )
    assert good["lastStatus"] == "FAILURE"  # its newest log
    assert good["pausedReason"] is None
    assert datetime.fromisoformat(good["nextRunAt"]) > started

    broken = await (await client.get(f"/api/cron/{seeded.bad_expression}")).json()
    assert broken["isActive"] is False
    assert broken["cronExpression"] == "61 * * * *"
    assert broken["pausedReason"].startswith("imported paused: cronExpression '61 * * * *'")
    internal = await (await client.get(f"/api/cron/{seeded.private}")).json()
    assert internal["isActive"] is False
    assert "10.1.2.3 is a private address" in internal["pausedReason"]
    for refused in (seeded.clash, seeded.ftp):
        assert (await client.get(f"/api/cron/{refused}")).status == 404

    big = await (await client.get(f"/api/execution-logs/{seeded.big_log}")).json()
    assert big["cronJobId"] == seeded.good
    assert big["jobName"] == "nightly-report"
    assert big["responseBody"] == "x" * import_config.webhook.max_response_bytes
    assert big["responseTruncated"] is True
    assert big["trigger"] == "schedule"
    assert big["scheduledAt"] == big["executedAt"]
    assert big["durationMs"] == 420
    stack = await (await client.get(f"/api/execution-logs/{seeded.stack_log}")).json()
    assert stack["status"] == "FAILURE"
    assert stack["error"] == {
        "type": "legacy",
        "message": "Error: connect ECONNREFUSED 10.0.0.7:443",
    }
    orphan = await (await client.get(f"/api/execution-logs/{seeded.orphan_log}")).json()
    assert orphan["jobName"] == ""
    for missing in (seeded.old_log, seeded.bad_log):
        assert (await client.get(f"/api/execution-logs/{missing}")).status == 404
    by_job = await (await client.get(f"/api/execution-logs/job/{seeded.good}")).json()
    assert [log["id"] for log in by_job] == [seeded.stack_log, seeded.big_log]

    # Before the import cronsvc did not hold the schedule: what it owed then is
    # not known, so no gaps are made up, and the old logs are listed as such.
    since = (started - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ledger = await (await client.get(f"/api/cron/{seeded.good}/ledger?since={since}")).json()
    assert ledger["complete"] is False
    assert datetime.fromisoformat(ledger["knownFrom"]) >= started.replace(microsecond=0)
    assert {(e["kind"], e["executionId"]) for e in ledger["entries"]} == {
        ("unknown", seeded.stack_log),
        ("unknown", seeded.big_log),
    }


async def test_a_second_import_finds_everything_present_and_changes_nothing(
    capsys: pytest.CaptureFixture[str], legacy_database: Seeded, store_url: str, tmp_path: Path
) -> None:
    args = ("--from", legacy_database.url, "--config", str(config_file(tmp_path, store_url)))
    first = await import_legacy(capsys, *args, "--json")
    assert first.code == 0, first.err
    before = await stored(store_url)

    again = await import_legacy(capsys, *args, "--json")

    assert again.code == 0, again.err
    report = again.json()
    assert report["jobs"] == {"imported": 0, "paused": 0, "refused": 1, "present": 5}
    assert report["logs"]["imported"] == 0
    assert report["logs"]["present"] == 3
    assert await stored(store_url) == before


async def test_a_dry_run_writes_nothing_and_reports_what_a_run_would_do(
    capsys: pytest.CaptureFixture[str], legacy_database: Seeded, store_url: str, tmp_path: Path
) -> None:
    args = ("--from", legacy_database.url, "--config", str(config_file(tmp_path, store_url)))

    dry = await import_legacy(capsys, *args, "--dry-run", "--json")

    assert dry.code == 0, dry.err
    assert await stored(store_url) == ([], [])
    real = await import_legacy(capsys, *args, "--json")
    assert {**dry.json(), "dryRun": False} == real.json()


async def stored(store_url: str) -> tuple[list[Any], list[Any]]:
    """Every job and execution the store holds."""
    store = await open_store(store_url)
    try:
        jobs = (await store.list_jobs(JobQuery(limit=500))).items
        executions = (await store.list_executions(ExecutionQuery(limit=500))).items
        return jobs, executions
    finally:
        await store.aclose()


async def test_an_imported_every_second_job_fires_once_the_service_runs(
    capsys: pytest.CaptureFixture[str],
    legacy_database: Seeded,
    tmp_path: Path,
    make_client: MakeClient,
    import_config: Config,
    receiver: Receiver,
) -> None:
    store_url = f"sqlite:///{tmp_path}/imported.db"
    run = await import_legacy(
        capsys, "--from", legacy_database.url, "--config", str(config_file(tmp_path, store_url))
    )
    assert run.code == 0, run.err

    await make_client(store=StoreConfig(url=store_url), webhook=import_config.webhook)
    first, second = (r.json() for r in (await receiver.wait_for(2, within_s=10))[:2])

    assert first["jobId"] == second["jobId"] == legacy_database.every_second
    assert first["scheduledAt"] < second["scheduledAt"]
    # A tick that fell between the import and the start is owed and comes as
    # a catch-up (misfirePolicy fire_once); from then on it fires on schedule.
    assert first["trigger"] in ("schedule", "catchup")
    assert second["trigger"] == "schedule"


async def test_a_job_imported_paused_resumes_only_once_what_paused_it_is_fixed(
    capsys: pytest.CaptureFixture[str],
    legacy_database: Seeded,
    tmp_path: Path,
    make_client: MakeClient,
    import_config: Config,
) -> None:
    store_url = f"sqlite:///{tmp_path}/imported.db"
    config = str(config_file(tmp_path, store_url))
    assert (
        await import_legacy(capsys, "--from", legacy_database.url, "--config", config)
    ).code == 0
    client = await make_client(store=StoreConfig(url=store_url), webhook=import_config.webhook)
    broken = f"/api/cron/{legacy_database.bad_expression}"
    internal = f"/api/cron/{legacy_database.private}"

    refused = await client.post(f"{broken}/resume")
    assert refused.status == 400
    assert [e["field"] for e in (await refused.json())["errors"]] == ["cronExpression"]
    refused = await client.post(f"{internal}/resume")
    assert refused.status == 400
    assert [e["field"] for e in (await refused.json())["errors"]] == ["webhookUrl"]

    fixed = await client.patch(broken, json={"cronExpression": "1 * * * *"})
    assert fixed.status == 200
    assert (await fixed.json())["pausedReason"] is None
    resumed = await client.post(f"{broken}/resume")
    assert resumed.status == 200
    assert (await resumed.json())["isActive"] is True


# -- api.legacy_ids ------------------------------------------------------------------


async def test_with_legacy_ids_answers_carry_id_and_writes_take_mongoose_fields(
    make_client: MakeClient, config: Config, receiver: Receiver
) -> None:
    client = await make_client(api=config.api.model_copy(update={"legacy_ids": True}))
    document = {
        "_id": "65a1b2c3d4e5f60718293a4b",
        "__v": 0,
        "name": "old-client",
        "cronExpression": "0 0 1 1 *",
        "webhookUrl": receiver.url,
        "alerts": {"url": receiver.url, "secret": "whsec_" + "QUFB" * 8},
    }

    created = await client.post("/api/cron", json=document)
    assert created.status == 201, await created.text()
    job = await created.json()
    assert job["_id"] == job["id"] != document["_id"]  # the server makes ids
    path = f"/api/cron/{job['id']}"
    edited = {**(await (await client.get(path)).json()), "__v": 3, "name": "renamed"}
    replaced = await client.put(path, json=edited)
    assert replaced.status == 200, await replaced.text()
    assert (await replaced.json())["_id"] == job["id"]
    # Sent back as answered, alerts and all: its write-only secret is kept.
    assert (await replaced.json())["alerts"]["hasSecret"] is True
    patched = await client.patch(path, json={"_id": "x", "__v": 1, "name": "again"})
    assert patched.status == 200, await patched.text()
    [listed] = await (await client.get("/api/cron")).json()
    assert listed["_id"] == listed["id"] == job["id"]

    triggered = await (await client.post(f"{path}/trigger")).json()
    assert triggered["_id"] == triggered["id"] == triggered["executionId"]
    log = await (await client.get(f"/api/execution-logs/{triggered['id']}")).json()
    assert log["_id"] == log["id"]
    [logged] = await (await client.get(f"/api/execution-logs/job/{job['id']}")).json()
    assert logged["_id"] == logged["id"]
    deleted = await (await client.delete(path)).json()
    assert deleted["_id"] == job["id"]


async def test_without_legacy_ids_answers_have_no_underscore_id_and_writes_refuse_it(
    make_client: MakeClient, receiver: Receiver
) -> None:
    client = await make_client()
    document = {"name": "new", "cronExpression": "0 0 1 1 *", "webhookUrl": receiver.url}

    refused = await client.post("/api/cron", json={**document, "_id": OLD_ID, "__v": 0})
    assert refused.status == 400
    assert {e["field"] for e in (await refused.json())["errors"]} == {"_id", "__v"}
    created = await client.post("/api/cron", json=document)
    assert "_id" not in await created.json()


# -- the command's report and exit status ----------------------------------------------


async def test_the_report_names_each_job_not_imported_as_it_was_and_sums_up(
    capsys: pytest.CaptureFixture[str], legacy_database: Seeded, tmp_path: Path
) -> None:
    store_url = f"sqlite:///{tmp_path}/imported.db"

    run = await import_legacy(
        capsys, "--from", legacy_database.url, "--config", str(config_file(tmp_path, store_url))
    )

    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert f"job {legacy_database.ftp} (ftp-job): refused: webhookUrl: must be" in run.out
    assert any(
        line.startswith(f"job {legacy_database.bad_expression} (broken): paused: cronExpression")
        for line in lines
    )
    assert lines[-2] == "jobs: 3 imported, 2 imported paused, 1 refused, 0 already present"
    assert lines[-1].startswith("logs: 3 imported (1 of jobs no longer in the old database)")
    assert run.err == ""  # no progress off a terminal


async def test_progress_shows_on_a_terminal_and_the_report_stays_on_stdout(
    legacy_database: Seeded, tmp_path: Path
) -> None:
    store_url = f"sqlite:///{tmp_path}/imported.db"
    config = str(config_file(tmp_path, store_url))
    terminal, attached = pty.openpty()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cronsvc",
            "import-legacy",
            "--from",
            legacy_database.url,
            "--config",
            config,
            stdout=asyncio.subprocess.PIPE,
            stderr=attached,
        )
        os.close(attached)
        async with asyncio.timeout(60):
            out, _ = await process.communicate()
        shown = await asyncio.to_thread(_read_all, terminal)
    finally:
        os.close(terminal)

    assert process.returncode == 0
    assert "\rreading: 6 jobs" in shown
    assert "reading" not in out.decode()
    assert out.decode().splitlines()[-2].startswith("jobs: 3 imported")


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


async def test_an_unreachable_old_database_exits_1_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"mongodb://user:hunter2@127.0.0.1:{free_port()}/old?serverSelectionTimeoutMS=300"

    run = await import_legacy(
        capsys, "--from", url, "--config", str(config_file(tmp_path, f"sqlite:///{tmp_path}/x.db"))
    )

    assert run.code == 1
    assert run.out == ""
    assert run.err.startswith("cronsvc: cannot read the old database")
    assert "hunter2" not in run.err


@pytest.mark.parametrize(
    "args",
    [
        [],  # no --from
        ["--from", "mongodb://127.0.0.1:1"],  # no database named
        ["--from", "http://example.org/old"],
        ["--from", "mongodb://127.0.0.1:1/old", "--timezone", "Mars/Olympus"],
        ["--from", "mongodb://127.0.0.1:1/old", "--url", "http://127.0.0.1:8080"],
    ],
)
async def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    run = await import_legacy(capsys, *args)

    assert run.code == 2, run
    assert run.out == ""
