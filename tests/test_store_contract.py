"""The `Store` contract, run against every backend unchanged.

Each test speaks only the `Store` protocol and the domain types. To add a
backend, add an opener to `_OPENERS`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from cronsvc.alerts import AlertKind, AlertStep, Outcome
from cronsvc.domain import (
    AlertFormat,
    AlertPolicy,
    AttemptRecord,
    ConcurrencyPolicy,
    ErrorInfo,
    Execution,
    ExecutionStatus,
    HttpMethod,
    Job,
    JobSpec,
    MisfirePolicy,
    PreviousSecret,
    RetryPolicy,
    ScheduleRevision,
    Trigger,
)
from cronsvc.errors import (
    DuplicateJobName,
    ExecutionNotFound,
    InvalidCursor,
    JobNotFound,
    StoreUnavailable,
    VersionConflict,
)
from cronsvc.ids import is_valid_id, new_id
from cronsvc.store import (
    MAX_SCHEDULE_REVISIONS,
    ActiveSchedule,
    ClaimOutcome,
    ClaimResult,
    ExecutionQuery,
    FinishReport,
    JobQuery,
    SchedulePage,
    Store,
    TickClaim,
    open_store,
)
from tests.helpers_store import (
    INSTANCE,
    T0,
    at,
    claim,
    claimed,
    create,
    make_job,
    make_spec,
    schedule_of,
    tick_claim,
)


async def _open_sqlite(request: pytest.FixtureRequest) -> Store:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    return await open_store(f"sqlite:///{tmp_path / 'cronsvc.db'}")


async def _open_mongodb(request: pytest.FixtureRequest) -> Store:
    # Asked for here, not by the fixture, so that SQLite runs start no server.
    url: str = request.getfixturevalue("mongo_database_url")
    return await open_store(url)


_OPENERS: dict[str, Callable[[pytest.FixtureRequest], Awaitable[Store]]] = {
    "sqlite": _open_sqlite,
    "mongodb": _open_mongodb,
}


@pytest.fixture(params=sorted(_OPENERS))
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    opened = await _OPENERS[request.param](request)
    try:
        yield opened
    finally:
        await opened.aclose()


def finished(
    execution: Execution, status: ExecutionStatus = ExecutionStatus.SUCCESS, **changes: Any
) -> Execution:
    assert execution.executed_at is not None
    values: dict[str, Any] = {
        "status": status,
        "finished_at": execution.executed_at + timedelta(milliseconds=250),
        "duration_ms": 250,
        "attempts": 1,
        "response_status": 200 if status is ExecutionStatus.SUCCESS else 500,
    }
    values.update(changes)
    return dataclasses.replace(execution, **values)


async def finish(store: Store, execution: Execution) -> None:
    """Finish one execution that exists and is RUNNING (or holds this very
    final state already)."""
    assert await store.finish_executions([execution]) == FinishReport()


async def all_jobs(store: Store, **filters: Any) -> list[Job]:
    jobs: list[Job] = []
    cursor = None
    while True:
        page = await store.list_jobs(JobQuery(cursor=cursor, limit=2, **filters))
        jobs.extend(page.items)
        if page.next_cursor is None:
            return jobs
        cursor = page.next_cursor


async def all_executions(store: Store, **filters: Any) -> list[Execution]:
    executions: list[Execution] = []
    cursor = None
    while True:
        page = await store.list_executions(ExecutionQuery(cursor=cursor, limit=2, **filters))
        executions.extend(page.items)
        if page.next_cursor is None:
            return executions
        cursor = page.next_cursor


def names(jobs: list[Job]) -> list[str]:
    return [job.spec.name for job in jobs]


MALFORMED_IDS = ["", "nope", "G" * 24, "ABCDEF" * 4, "0" * 23, "0" * 25, "' OR 1=1 --"]
GARBAGE_CURSORS = ["", "garbage", "!!!!", "e30", "W10", "WyJqIl0", "bnVsbA", "é" * 8, "x" * 5000]


# Jobs: create and get


async def test_created_job_round_trips_every_field(store: Store) -> None:
    job = Job(
        id=new_id(),
        spec=JobSpec(
            name="nightly-report",
            cron_expression="0 30 2 * * *",
            timezone="Europe/Paris",
            webhook_url="https://example.com/report?x=1",
            http_method=HttpMethod.PUT,
            headers={"X-One": "1", "Authorization": "Bearer t", "a-lower": "é"},
            body={"nested": [1, 2.5, None, True, {"k": "v"}], "empty": {}},
            timeout_seconds=2.5,
            retry=RetryPolicy(max_attempts=4, backoff_seconds=0.5, max_backoff_seconds=7.5),
            concurrency_policy=ConcurrencyPolicy.FORBID,
            misfire_policy=MisfirePolicy.FIRE_ALL,
            misfire_grace_seconds=300,
            is_active=False,
            secret="s3cr3t",
            tags=("zeta", "alpha", "mid"),
        ),
        created_at=datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC),
        updated_at=datetime(2026, 1, 2, 12, 0, 0, 999999, tzinfo=UTC),
        version=7,
        last_tick=datetime(2026, 1, 3, 0, 0, 0, 1999, tzinfo=UTC),
        last_run_at=datetime(2026, 1, 2, 23, 59, 0, 500, tzinfo=UTC),
        last_status=ExecutionStatus.FAILURE,
        previous_secret=PreviousSecret(
            secret="old-s3cr3t", expires_at=datetime(2026, 1, 3, 12, 0, 0, 7999, tzinfo=UTC)
        ),
    )
    expected = dataclasses.replace(
        job,
        created_at=datetime(2026, 1, 1, 12, 0, 0, 123000, tzinfo=UTC),
        updated_at=datetime(2026, 1, 2, 12, 0, 0, 999000, tzinfo=UTC),
        last_tick=datetime(2026, 1, 3, 0, 0, 0, 1000, tzinfo=UTC),
        last_run_at=datetime(2026, 1, 2, 23, 59, tzinfo=UTC),
        previous_secret=PreviousSecret(
            secret="old-s3cr3t", expires_at=datetime(2026, 1, 3, 12, 0, 0, 7000, tzinfo=UTC)
        ),
    )

    created = await store.create_job(job)
    got = await store.get_job(job.id)

    assert created == expected
    assert got == expected
    assert got.spec.secret == "s3cr3t"
    assert list(got.spec.headers.items()) == list(job.spec.headers.items())
    assert isinstance(got.spec.tags, tuple)
    assert type(got.spec.http_method) is HttpMethod
    assert type(got.spec.concurrency_policy) is ConcurrencyPolicy
    assert type(got.spec.misfire_policy) is MisfirePolicy
    assert type(got.last_status) is ExecutionStatus


async def test_job_with_defaults_round_trips(store: Store) -> None:
    job = make_job("plain")

    await store.create_job(job)

    got = await store.get_job(job.id)
    assert got == job
    assert got.spec.body is None
    assert got.spec.secret is None
    assert got.spec.tags == ()
    assert got.spec.headers == {}
    assert got.last_run_at is None
    assert got.last_status is None
    assert got.previous_secret is None


ALERTS = AlertPolicy(
    url="https://alerts.example.com/hook?team=ops",
    after=3,
    on_recovery=False,
    format=AlertFormat.SLACK,
    secret="whsec_" + "A" * 32,
)


@pytest.mark.parametrize(
    "alerts", [ALERTS, AlertPolicy(enabled=False)], ids=["own-policy", "turned-off"]
)
async def test_a_jobs_alert_policy_round_trips_through_create_update_and_every_read(
    store: Store, alerts: AlertPolicy
) -> None:
    job = await store.create_job(make_job("alerting", alerts=alerts))
    plain = await store.create_job(make_job("plain"))

    got = await store.get_job(job.id)
    listed = {j.id: j for j in await all_jobs(store)}
    active = {j.id: j for j in await store.active_jobs()}
    assert got.spec.alerts == listed[job.id].spec.alerts == active[job.id].spec.alerts == alerts
    assert got.spec.alerts is not None and got.spec.alerts.secret == alerts.secret
    assert type(got.spec.alerts.format) is AlertFormat
    assert listed[plain.id].spec.alerts is None

    changed = dataclasses.replace(alerts, after=alerts.after + 1)
    updated = await store.update_job(job.id, make_spec("alerting", alerts=changed), now=at(1))
    assert updated.spec.alerts == (await store.get_job(job.id)).spec.alerts == changed
    removed = await store.update_job(job.id, make_spec("alerting"), now=at(2))
    assert removed.spec.alerts is None
    assert (await store.get_job(job.id)).spec.alerts is None


@pytest.mark.parametrize(
    "body",
    ["{}", {}, "", "null", "[1, 2]", [1, 2], [], 0, 0.5, False, True, "plain text", {"a": None}],
    ids=repr,
)
async def test_body_keeps_string_apart_from_json(store: Store, body: Any) -> None:
    job = make_job("bodied", body=body)

    created = await store.create_job(job)
    got = await store.get_job(job.id)

    for returned in (created, got):
        assert returned.spec.body == body
        assert type(returned.spec.body) is type(body)


async def test_instants_come_back_as_utc_whatever_zone_they_were_given_in(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    job = dataclasses.replace(
        make_job("zoned"),
        created_at=datetime(2026, 3, 1, 14, 0, tzinfo=plus_two),
        updated_at=datetime(2026, 3, 1, 14, 0, tzinfo=plus_two),
    )

    await store.create_job(job)

    got = await store.get_job(job.id)
    for instant in (got.created_at, got.updated_at, got.last_tick):
        assert instant.utcoffset() == timedelta(0)
    assert got.created_at == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert got.created_at.hour == 12


async def test_create_with_duplicate_name_raises_and_writes_nothing(store: Store) -> None:
    first = await create(store, "same", tags=("one",))
    second = make_job("same", tags=("two",))

    with pytest.raises(DuplicateJobName) as caught:
        await store.create_job(second)

    assert caught.value.name == "same"
    with pytest.raises(JobNotFound):
        await store.get_job(second.id)
    assert [job.id for job in await all_jobs(store)] == [first.id]
    assert await all_jobs(store, tag="two") == []
    third = await create(store, "different")
    assert await store.get_job(third.id) == third


async def test_names_are_case_sensitive(store: Store) -> None:
    await create(store, "Report")

    await create(store, "report")

    assert sorted(names(await all_jobs(store))) == ["Report", "report"]


async def test_get_unknown_job_raises_job_not_found(store: Store) -> None:
    await create(store)
    unknown = new_id()

    with pytest.raises(JobNotFound) as caught:
        await store.get_job(unknown)

    assert caught.value.job_id == unknown


@pytest.mark.parametrize("job_id", MALFORMED_IDS)
async def test_malformed_job_ids_are_not_found(store: Store, job_id: str) -> None:
    await create(store)

    with pytest.raises(JobNotFound):
        await store.get_job(job_id)
    with pytest.raises(JobNotFound):
        await store.delete_job(job_id)
    with pytest.raises(JobNotFound):
        await store.update_job(job_id, make_spec(), now=at(1))


# Jobs: delete


async def test_deleted_job_is_gone(store: Store) -> None:
    job = await create(store)
    kept = await create(store, "kept")

    await store.delete_job(job.id)

    with pytest.raises(JobNotFound):
        await store.get_job(job.id)
    assert await store.get_job(kept.id) == kept


async def test_deleting_a_job_twice_raises_job_not_found(store: Store) -> None:
    job = await create(store)
    await store.delete_job(job.id)

    with pytest.raises(JobNotFound):
        await store.delete_job(job.id)


async def test_deleted_job_frees_its_name_and_tags(store: Store) -> None:
    job = await create(store, "reused", tags=("t",))
    await store.delete_job(job.id)

    again = await create(store, "reused")

    assert await store.get_job(again.id) == again
    assert await all_jobs(store, tag="t") == []


# Jobs: update


async def test_update_replaces_spec_and_bumps_version_and_updated_at(store: Store) -> None:
    job = await store.create_job(
        dataclasses.replace(
            make_job("before", tags=("a",)),
            last_tick=at(5),
            last_run_at=at(4),
            last_status=ExecutionStatus.SUCCESS,
        )
    )
    spec = make_spec(
        "after",
        webhook_url="https://example.org/new",
        body="raw",
        tags=("b", "a"),
        secret="new-secret",
    )

    updated = await store.update_job(job.id, spec, now=at(10) + timedelta(microseconds=1500))

    assert updated.spec == spec
    assert updated.version == job.version + 1
    assert updated.updated_at == at(10) + timedelta(milliseconds=1)
    assert updated.created_at == job.created_at
    assert updated.last_tick == at(5)
    assert updated.last_run_at == at(4)
    assert updated.last_status is ExecutionStatus.SUCCESS
    assert await store.get_job(job.id) == updated


async def test_update_keeps_replaces_or_removes_the_previous_secret_as_told(
    store: Store,
) -> None:
    job = await create(store, secret="first")
    retired = PreviousSecret(secret="first", expires_at=at(60))

    rotated = await store.update_job(
        job.id, make_spec(secret="second"), now=at(1), previous_secret=retired
    )
    kept = await store.update_job(job.id, make_spec(secret="second", tags=("t",)), now=at(2))
    listed = {j.id: j for j in await all_jobs(store)}
    active = {j.id: j for j in await store.active_jobs()}
    again = PreviousSecret(secret="second", expires_at=at(90))
    replaced = await store.update_job(
        job.id, make_spec(secret="third"), now=at(3), previous_secret=again
    )
    replaced_read = await store.get_job(job.id)
    removed = await store.update_job(job.id, make_spec(), now=at(4), previous_secret=None)

    assert rotated.previous_secret == retired
    assert kept.previous_secret == retired, "a write that does not say keeps it"
    assert listed[job.id].previous_secret == active[job.id].previous_secret == retired
    assert replaced.previous_secret == replaced_read.previous_secret == again
    assert removed.previous_secret is None
    assert (await store.get_job(job.id)).previous_secret is None


async def test_a_failed_update_leaves_the_previous_secret_alone(store: Store) -> None:
    job = await create(store, secret="first")

    with pytest.raises(VersionConflict):
        await store.update_job(
            job.id,
            make_spec(secret="second"),
            now=at(1),
            expected_version=job.version + 1,
            previous_secret=PreviousSecret(secret="first", expires_at=at(60)),
        )

    assert await store.get_job(job.id) == job


async def test_update_with_restart_schedule_sets_last_tick_to_now(store: Store) -> None:
    job = await create(store)

    updated = await store.update_job(job.id, make_spec(), now=at(30), restart_schedule=True)

    assert updated.last_tick == at(30)
    assert (await store.get_job(job.id)).last_tick == at(30)


async def test_update_with_expected_version_that_matches_succeeds(store: Store) -> None:
    job = await create(store)
    first = await store.update_job(job.id, make_spec("v2"), now=at(1), expected_version=1)

    second = await store.update_job(job.id, make_spec("v3"), now=at(2), expected_version=2)

    assert (first.version, second.version) == (2, 3)
    assert (await store.get_job(job.id)).spec.name == "v3"


async def test_update_with_stale_expected_version_raises_and_writes_nothing(store: Store) -> None:
    job = await create(store, "original", tags=("old",))
    await store.update_job(job.id, make_spec("original", tags=("old",)), now=at(1))
    before = await store.get_job(job.id)

    with pytest.raises(VersionConflict) as caught:
        await store.update_job(
            job.id,
            make_spec("renamed", tags=("new",)),
            now=at(2),
            expected_version=1,
            restart_schedule=True,
        )

    assert (caught.value.expected, caught.value.actual) == (1, 2)
    assert await store.get_job(job.id) == before
    assert await all_jobs(store, tag="new") == []
    retried = await store.update_job(job.id, make_spec("renamed"), now=at(3), expected_version=2)
    assert retried.version == 3


async def test_update_renaming_to_a_taken_name_raises_and_writes_nothing(store: Store) -> None:
    await create(store, "taken")
    job = await create(store, "mine", tags=("old",))

    with pytest.raises(DuplicateJobName):
        await store.update_job(job.id, make_spec("taken", tags=("new",)), now=at(1))

    assert await store.get_job(job.id) == job
    assert [j.id for j in await all_jobs(store, tag="old")] == [job.id]
    assert await all_jobs(store, tag="new") == []
    renamed = await store.update_job(job.id, make_spec("free", tags=("new",)), now=at(2))
    assert renamed.version == 2


async def test_renamed_job_frees_its_old_name(store: Store) -> None:
    job = await create(store, "old-name")
    await store.update_job(job.id, make_spec("new-name"), now=at(1))

    other = await create(store, "old-name")

    assert (await store.get_job(other.id)).spec.name == "old-name"
    assert (await store.get_job(job.id)).spec.name == "new-name"


async def test_update_keeping_the_name_succeeds(store: Store) -> None:
    job = await create(store, "steady")

    updated = await store.update_job(job.id, make_spec("steady", is_active=False), now=at(1))

    assert updated.spec.name == "steady"
    assert updated.spec.is_active is False


async def test_update_of_unknown_job_raises_job_not_found(store: Store) -> None:
    with pytest.raises(JobNotFound):
        await store.update_job(new_id(), make_spec(), now=at(1))


async def test_update_moves_the_job_between_tag_filters(store: Store) -> None:
    job = await create(store, tags=("a", "shared"))

    await store.update_job(job.id, make_spec(tags=("b", "shared")), now=at(1))

    assert await all_jobs(store, tag="a") == []
    assert [j.id for j in await all_jobs(store, tag="b")] == [job.id]
    assert [j.id for j in await all_jobs(store, tag="shared")] == [job.id]


# Jobs: schedule history


def revision(
    version: int, effective_from: datetime, expression: str = "* * * * *", **changes: Any
) -> ScheduleRevision:
    values: dict[str, Any] = {"timezone": "UTC", "is_active": True, **changes}
    return ScheduleRevision(
        version=version, effective_from=effective_from, cron_expression=expression, **values
    )


async def test_a_new_job_has_one_revision_from_its_creation(store: Store) -> None:
    active = await create(store, "active", cron_expression="0 9 * * 1", timezone="Europe/Berlin")
    paused = await create(store, "paused", is_active=False)

    assert await store.schedule_history(active.id) == [
        revision(1, T0, "0 9 * * 1", timezone="Europe/Berlin")
    ]
    assert await store.schedule_history(paused.id) == [revision(1, T0, is_active=False)]


async def test_a_job_whose_schedule_starts_after_its_creation_owes_from_that_start(
    store: Store,
) -> None:
    imported = await store.create_job(make_job("imported", last_tick=at(60)))

    assert await store.schedule_history(imported.id) == [revision(1, at(60))]


async def test_updates_that_change_schedule_zone_or_activity_add_revisions_in_order(
    store: Store,
) -> None:
    job = await create(store)
    name = job.spec.name
    await store.update_job(job.id, make_spec(cron_expression="*/5 * * * *"), now=at(1))
    await store.update_job(
        job.id,
        make_spec(cron_expression="*/5 * * * *", webhook_url="https://example.org/other"),
        now=at(2),
    )
    paused = make_spec(cron_expression="*/5 * * * *", is_active=False)
    await store.update_job(job.id, paused, now=at(3))
    await store.update_job(job.id, dataclasses.replace(paused, headers={"X-A": "1"}), now=at(4))
    await store.update_job(job.id, make_spec(cron_expression="*/5 * * * *"), now=at(5))
    await store.update_job(
        job.id,
        make_spec(cron_expression="*/5 * * * *", timezone="Asia/Tokyo"),
        now=at(6) + timedelta(microseconds=1500),
    )

    assert (await store.get_job(job.id)).spec.name == name
    assert await store.schedule_history(job.id) == [
        revision(1, T0),
        revision(2, at(1), "*/5 * * * *"),
        revision(4, at(3), "*/5 * * * *", is_active=False),
        revision(6, at(5), "*/5 * * * *"),
        revision(7, at(6) + timedelta(milliseconds=1), "*/5 * * * *", timezone="Asia/Tokyo"),
    ]


async def test_a_failed_update_adds_no_revision(store: Store) -> None:
    job = await create(store, "first")
    await create(store, "second")

    with pytest.raises(VersionConflict):
        await store.update_job(
            job.id, make_spec("first", is_active=False), now=at(1), expected_version=7
        )
    with pytest.raises(DuplicateJobName):
        await store.update_job(job.id, make_spec("second", is_active=False), now=at(2))

    assert await store.schedule_history(job.id) == [revision(1, T0)]


async def test_history_keeps_only_the_latest_revisions(store: Store) -> None:
    job = await create(store)
    updates = MAX_SCHEDULE_REVISIONS + 4
    for n in range(1, updates + 1):
        await store.update_job(job.id, make_spec(is_active=n % 2 == 0), now=at(n))

    history = await store.schedule_history(job.id)

    assert len(history) == MAX_SCHEDULE_REVISIONS
    assert history[-1] == revision(updates + 1, at(updates), is_active=updates % 2 == 0)
    assert [r.version for r in history] == list(range(updates + 2 - len(history), updates + 2))
    assert history[0].effective_from > job.created_at  # older ones are gone


@pytest.mark.parametrize("job_id", [*MALFORMED_IDS, "0" * 24])
async def test_history_of_an_unknown_job_raises_job_not_found(store: Store, job_id: str) -> None:
    with pytest.raises(JobNotFound):
        await store.schedule_history(job_id)


async def test_history_goes_with_its_deleted_job(store: Store) -> None:
    job = await create(store)
    await store.update_job(job.id, make_spec(is_active=False), now=at(1))
    await store.delete_job(job.id)

    with pytest.raises(JobNotFound):
        await store.schedule_history(job.id)
    again = await store.create_job(dataclasses.replace(make_job(), id=job.id))
    assert await store.schedule_history(again.id) == [revision(1, T0)]


# Jobs: list and active


async def test_list_jobs_pages_newest_first_without_gaps_or_repeats(store: Store) -> None:
    jobs = [await create(store, f"job-{i}") for i in range(7)]

    pages = []
    cursor = None
    while True:
        page = await store.list_jobs(JobQuery(cursor=cursor, limit=3))
        pages.append(page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor

    assert [len(items) for items in pages] == [3, 3, 1]
    assert [job.id for items in pages for job in items] == [job.id for job in reversed(jobs)]
    assert pages[0][0] == jobs[-1]


async def test_list_jobs_has_no_next_cursor_when_the_last_page_is_full(store: Store) -> None:
    for i in range(4):
        await create(store, f"job-{i}")

    first = await store.list_jobs(JobQuery(limit=2))
    assert first.next_cursor is not None
    second = await store.list_jobs(JobQuery(limit=2, cursor=first.next_cursor))

    assert len(second.items) == 2
    assert second.next_cursor is None


async def test_list_jobs_on_an_empty_store_is_one_empty_page(store: Store) -> None:
    page = await store.list_jobs(JobQuery())

    assert page.items == []
    assert page.next_cursor is None


async def test_list_jobs_filters_by_active(store: Store) -> None:
    on = [await create(store, f"on-{i}") for i in range(3)]
    off = [await create(store, f"off-{i}", is_active=False) for i in range(3)]

    active = await all_jobs(store, is_active=True)
    paused = await all_jobs(store, is_active=False)

    assert [job.id for job in active] == [job.id for job in reversed(on)]
    assert [job.id for job in paused] == [job.id for job in reversed(off)]


async def test_list_jobs_filters_by_exact_tag(store: Store) -> None:
    prod = await create(store, "prod", tags=("team-a", "prod"))
    await create(store, "production", tags=("production",))
    await create(store, "upper", tags=("Prod",))
    also = await create(store, "also", tags=("prod",))
    await create(store, "untagged")

    tagged = await all_jobs(store, tag="prod")

    assert [job.id for job in tagged] == [also.id, prod.id]


async def test_list_jobs_filters_by_case_sensitive_literal_name_prefix(store: Store) -> None:
    for name in ["a%b", "axb", "a_c", "abc", "ab", "Abc", "b", "a", "ä", "a\U0010ffff"]:
        await create(store, name)

    async def matching(prefix: str) -> list[str]:
        return sorted(names(await all_jobs(store, name_prefix=prefix)))

    assert await matching("a%") == ["a%b"]
    assert await matching("a_") == ["a_c"]
    assert await matching("ab") == ["ab", "abc"]
    assert await matching("A") == ["Abc"]
    assert await matching("a") == sorted(["a%b", "axb", "a_c", "abc", "ab", "a", "a\U0010ffff"])
    assert await matching("a\U0010ffff") == ["a\U0010ffff"]
    assert await matching("zz") == []


async def test_list_jobs_combines_filters_across_pages(store: Store) -> None:
    wanted = []
    for i in range(5):
        wanted.append(await create(store, f"svc-{i}", tags=("x",)))
        await create(store, f"svc-off-{i}", tags=("x",), is_active=False)
        await create(store, f"other-{i}", tags=("x",))
        await create(store, f"svc-untagged-{i}")

    found = await all_jobs(store, name_prefix="svc-", tag="x", is_active=True)

    assert [job.id for job in found] == [job.id for job in reversed(wanted)]


@pytest.mark.parametrize("cursor", GARBAGE_CURSORS)
async def test_list_jobs_rejects_a_cursor_it_did_not_make(store: Store, cursor: str) -> None:
    await create(store)

    with pytest.raises(InvalidCursor):
        await store.list_jobs(JobQuery(cursor=cursor))


async def test_active_jobs_lists_exactly_the_active_ones(store: Store) -> None:
    on = [await create(store, f"on-{i}") for i in range(3)]
    await create(store, "off", is_active=False)
    paused = on[0]
    await store.update_job(paused.id, make_spec(paused.spec.name, is_active=False), now=at(1))

    active = await store.active_jobs()

    assert sorted(job.id for job in active) == sorted(job.id for job in on[1:])
    assert all(isinstance(job, Job) and job.spec.is_active for job in active)


async def test_active_jobs_of_given_ids_are_those_of_them_that_are_active(
    store: Store,
) -> None:
    on = [await create(store, f"on-{i}") for i in range(3)]
    off = await create(store, "off", is_active=False)

    chosen = await store.active_jobs([on[0].id, on[2].id, off.id, new_id(), "not-an-id"])

    assert sorted(chosen, key=lambda job: job.id) == sorted([on[0], on[2]], key=lambda j: j.id)
    assert await store.active_jobs([]) == []


async def test_active_versions_are_those_of_every_active_job(store: Store) -> None:
    on = [await create(store, f"on-{i}") for i in range(3)]
    await create(store, "off", is_active=False)
    changed = await store.update_job(on[1].id, make_spec("on-1", tags=("x",)), now=at(1))

    assert await store.active_versions() == {on[0].id: 1, changed.id: 2, on[2].id: 1}


async def test_active_versions_page_in_id_order(store: Store) -> None:
    on = [await create(store, f"on-{i}") for i in range(5)]
    await create(store, "off", is_active=False)
    changed = await store.update_job(on[3].id, make_spec("on-3", tags=("x",)), now=at(1))
    await store.delete_job(on[1].id)
    expected = {job.id: job.version for job in (on[0], on[2], changed, on[4])}

    first = await store.active_versions(None, 3)
    rest = await store.active_versions(list(first)[-1], 3)

    assert list(first) == sorted(expected)[:3] and list(rest) == sorted(expected)[3:]
    assert {**first, **rest} == expected
    assert await store.active_versions(max(expected), 3) == {}
    with pytest.raises(ValueError):
        await store.active_versions(None, 0)


async def all_schedules(
    store: Store, limit: int, keep: Callable[[str], bool] | None = None
) -> list[ActiveSchedule]:
    rows: list[ActiveSchedule] = []
    after = None
    while True:
        page = await store.active_schedules(after, limit, keep=keep)
        assert len(page.rows) <= limit
        rows += page.rows
        if page.next_after is None:
            return rows
        assert after is None or page.next_after > after
        after = page.next_after


async def test_active_schedules_page_through_the_active_jobs_in_id_order(store: Store) -> None:
    on = [
        await create(store, "every-minute"),
        await create(store, "daily-berlin", cron_expression="30 2 * * *", timezone="Europe/Berlin"),
        await create(
            store,
            "forbid",
            cron_expression="*/5 * * * * *",
            concurrency_policy=ConcurrencyPolicy.FORBID,
            misfire_policy=MisfirePolicy.FIRE_ALL,
            misfire_grace_seconds=5,
        ),
        await create(store, "replace", concurrency_policy=ConcurrencyPolicy.REPLACE),
        await create(store, "skip", misfire_policy=MisfirePolicy.SKIP),
    ]
    await create(store, "off", is_active=False)
    paused = await store.update_job(on[3].id, make_spec("replace", is_active=False), now=at(1))
    changed = await store.update_job(
        on[0].id, make_spec("every-minute", cron_expression="0 * * * *"), now=at(2)
    )
    await store.claim_ticks([tick_claim(on[1], at(90))])
    ticked = await store.get_job(on[1].id)
    expected = [schedule_of(job) for job in (changed, ticked, on[2], on[4])]

    for limit in (1, 2, 4, 100):
        assert await all_schedules(store, limit) == sorted(expected, key=lambda s: s.id)
    assert paused.id not in {s.id for s in (await store.active_schedules()).rows}
    assert await store.active_schedules(max(s.id for s in expected)) == SchedulePage(
        rows=[], next_after=None
    )


async def test_active_schedules_answer_only_the_kept_jobs_and_page_past_the_others(
    store: Store,
) -> None:
    jobs = sorted([await create(store, f"job-{i}") for i in range(7)], key=lambda j: j.id)
    kept = {j.id for j in jobs[1::3]}  # the 2nd and the 5th
    for limit in (1, 2, 3, 7, 100):
        assert await all_schedules(store, limit, keep=kept.__contains__) == [
            schedule_of(j) for j in jobs if j.id in kept
        ]
    # A page whose rows were all refused still says where the next begins.
    first = await store.active_schedules(None, 3, keep=lambda _: False)
    assert first == SchedulePage(rows=[], next_after=jobs[2].id)
    assert await all_schedules(store, 2, keep=lambda _: False) == []


async def test_active_schedules_pages_see_jobs_made_and_removed_between_them(
    store: Store,
) -> None:
    jobs = [await create(store, f"job-{i}") for i in range(4)]
    first = await store.active_schedules(None, 2)
    await store.delete_job(jobs[2].id)
    late = await create(store, "created between pages")

    assert first.next_after is not None
    rest = await store.active_schedules(first.next_after, 10)

    assert [s.id for s in first.rows] == [jobs[0].id, jobs[1].id]
    assert [s.id for s in rest.rows] == [jobs[3].id, late.id]
    assert rest.next_after is None


async def test_active_schedules_refuse_a_limit_below_one(store: Store) -> None:
    with pytest.raises(ValueError):
        await store.active_schedules(None, 0)


async def test_count_jobs_counts_every_job_active_or_paused(store: Store) -> None:
    assert await store.count_jobs() == 0
    jobs = [await create(store, f"job-{i}") for i in range(3)]
    await create(store, "paused", is_active=False)
    assert await store.count_jobs() == 4

    await store.delete_job(jobs[0].id)
    await store.update_job(jobs[1].id, make_spec("renamed"), now=at(1))

    assert await store.count_jobs() == 3


# Tick claims


async def test_claim_inserts_a_running_record_and_advances_last_tick(store: Store) -> None:
    job = await create(store, "claimed")
    execution_id = new_id()
    tick = at(1) + timedelta(microseconds=2500)

    [result] = await store.claim_ticks(
        [
            TickClaim(
                job_id=job.id,
                expected_version=1,
                scheduled_at=tick,
                trigger=Trigger.SCHEDULE,
                execution_id=execution_id,
                instance_id="instance-7",
                executed_at=at(1) + timedelta(milliseconds=40),
            )
        ]
    )

    expected = Execution(
        id=execution_id,
        job_id=job.id,
        job_name="claimed",
        trigger=Trigger.SCHEDULE,
        scheduled_at=at(1) + timedelta(milliseconds=2),
        status=ExecutionStatus.RUNNING,
        instance_id="instance-7",
        executed_at=at(1) + timedelta(milliseconds=40),
        attempts=0,
    )
    assert result == ClaimResult(outcome=ClaimOutcome.CLAIMED, execution=expected)
    assert await store.get_execution(execution_id) == expected
    assert (await store.get_job(job.id)).last_tick == at(1) + timedelta(milliseconds=2)


async def test_catchup_claim_advances_last_tick(store: Store) -> None:
    job = await create(store)

    await claimed(store, job, at(3), trigger=Trigger.CATCHUP)

    assert (await store.get_job(job.id)).last_tick == at(3)


async def test_claim_of_an_earlier_tick_does_not_move_last_tick_back(store: Store) -> None:
    job = await create(store)
    await claimed(store, job, at(5))

    await claimed(store, job, at(2), trigger=Trigger.CATCHUP)

    assert (await store.get_job(job.id)).last_tick == at(5)


@pytest.mark.parametrize("first", [Trigger.SCHEDULE, Trigger.CATCHUP])
@pytest.mark.parametrize("second", [Trigger.SCHEDULE, Trigger.CATCHUP])
async def test_second_claim_of_a_tick_is_duplicate_and_writes_nothing(
    store: Store, first: Trigger, second: Trigger
) -> None:
    job = await create(store)
    original = await claimed(store, job, at(1), trigger=first)
    second_id = new_id()

    result = await claim(
        store, job, at(1), trigger=second, execution_id=second_id, instance_id="instance-b"
    )

    assert result == ClaimResult(outcome=ClaimOutcome.DUPLICATE)
    with pytest.raises(ExecutionNotFound):
        await store.get_execution(second_id)
    assert await all_executions(store) == [original]


async def test_ticks_are_keyed_by_millisecond(store: Store) -> None:
    job = await create(store)
    await claimed(store, job, at(1) + timedelta(microseconds=999))

    result = await claim(store, job, at(1))

    assert result.outcome is ClaimOutcome.DUPLICATE


async def test_claim_of_a_tick_already_finished_is_duplicate(store: Store) -> None:
    job = await create(store)
    execution = await claimed(store, job, at(1))
    await finish(store, finished(execution))

    result = await claim(store, job, at(1))

    assert result.outcome is ClaimOutcome.DUPLICATE


async def test_claim_at_another_version_is_stale_and_writes_nothing(store: Store) -> None:
    job = await create(store)
    await store.update_job(job.id, make_spec(), now=at(0))

    for version in (1, 3):
        result = await claim(store, job, at(1), version=version)
        assert result == ClaimResult(outcome=ClaimOutcome.STALE)

    assert await all_executions(store) == []
    assert (await store.get_job(job.id)).last_tick == T0


@pytest.mark.parametrize("trigger", [Trigger.SCHEDULE, Trigger.CATCHUP])
async def test_claim_for_a_paused_job_is_stale(store: Store, trigger: Trigger) -> None:
    job = await create(store, is_active=False)

    result = await claim(store, job, at(1), trigger=trigger)

    assert result == ClaimResult(outcome=ClaimOutcome.STALE)
    assert await all_executions(store) == []
    assert (await store.get_job(job.id)).last_tick == T0


async def test_manual_claim_for_a_paused_job_is_claimed(store: Store) -> None:
    job = await create(store, is_active=False)

    execution = await claimed(store, job, at(1), trigger=Trigger.MANUAL)

    assert execution.trigger is Trigger.MANUAL
    assert execution.status is ExecutionStatus.RUNNING
    assert await store.get_execution(execution.id) == execution


async def test_manual_claim_does_not_advance_last_tick(store: Store) -> None:
    job = await create(store)

    await claimed(store, job, at(10), trigger=Trigger.MANUAL)

    assert (await store.get_job(job.id)).last_tick == T0


async def test_manual_claim_at_another_version_is_stale(store: Store) -> None:
    job = await create(store)

    result = await claim(store, job, at(1), trigger=Trigger.MANUAL, version=2)

    assert result.outcome is ClaimOutcome.STALE


async def test_claim_for_a_deleted_job_is_stale(store: Store) -> None:
    job = await create(store)
    await store.delete_job(job.id)

    for trigger in Trigger:
        result = await claim(store, job, at(1), trigger=trigger)
        assert result == ClaimResult(outcome=ClaimOutcome.STALE)

    assert await all_executions(store) == []


async def test_claim_for_a_malformed_job_id_is_stale(store: Store) -> None:
    job = dataclasses.replace(make_job(), id="not-an-id")

    result = await claim(store, job, at(1))

    assert result.outcome is ClaimOutcome.STALE


async def test_two_manual_claims_at_the_same_instant_are_both_claimed(store: Store) -> None:
    job = await create(store)

    first = await claimed(store, job, at(1), trigger=Trigger.MANUAL)
    second = await claimed(store, job, at(1), trigger=Trigger.MANUAL)

    assert first.id != second.id
    assert {e.id for e in await all_executions(store)} == {first.id, second.id}


async def test_manual_claim_and_scheduled_tick_at_the_same_instant_are_both_claimed(
    store: Store,
) -> None:
    job = await create(store)

    manual = await claimed(store, job, at(1), trigger=Trigger.MANUAL)
    scheduled = await claimed(store, job, at(1))

    assert {e.id for e in await all_executions(store)} == {manual.id, scheduled.id}


async def test_forbid_with_a_running_execution_records_skipped(store: Store) -> None:
    job = await create(store, "forbidding", concurrency_policy=ConcurrencyPolicy.FORBID)
    running = await claimed(store, job, at(1))
    skipped_id = new_id()

    result = await claim(
        store,
        job,
        at(2),
        execution_id=skipped_id,
        instance_id="instance-b",
    )

    assert result.outcome is ClaimOutcome.SKIPPED
    skipped = result.execution
    assert skipped is not None
    assert skipped.id == skipped_id
    assert skipped.status is ExecutionStatus.SKIPPED
    assert (skipped.job_id, skipped.job_name) == (job.id, "forbidding")
    assert skipped.scheduled_at == at(2)
    assert skipped.trigger is Trigger.SCHEDULE
    assert skipped.instance_id == "instance-b"
    assert await store.get_execution(skipped_id) == skipped
    assert await store.get_execution(running.id) == running
    assert (await store.get_job(job.id)).last_tick == at(2)


async def test_skipped_tick_cannot_be_claimed_again(store: Store) -> None:
    job = await create(store, concurrency_policy=ConcurrencyPolicy.FORBID)
    await claimed(store, job, at(1))
    skipped = await claim(store, job, at(2))
    assert skipped.outcome is ClaimOutcome.SKIPPED

    again = await claim(store, job, at(2))

    assert again.outcome is ClaimOutcome.DUPLICATE


async def test_forbid_claims_once_the_running_execution_finished(store: Store) -> None:
    job = await create(store, concurrency_policy=ConcurrencyPolicy.FORBID)
    first = await claimed(store, job, at(1))
    await finish(store, finished(first))

    result = await claim(store, job, at(2))

    assert result.outcome is ClaimOutcome.CLAIMED


async def test_forbid_ignores_running_executions_of_other_jobs(store: Store) -> None:
    busy = await create(store, "busy")
    job = await create(store, "idle", concurrency_policy=ConcurrencyPolicy.FORBID)
    await claimed(store, busy, at(1))

    result = await claim(store, job, at(1))

    assert result.outcome is ClaimOutcome.CLAIMED


async def test_allow_claims_while_another_execution_runs(store: Store) -> None:
    job = await create(store)
    await claimed(store, job, at(1))

    result = await claim(store, job, at(2))

    assert result.outcome is ClaimOutcome.CLAIMED
    assert [e.status for e in await all_executions(store)] == [ExecutionStatus.RUNNING] * 2


async def test_concurrent_claims_of_one_tick_yield_exactly_one_claim(store: Store) -> None:
    job = await create(store)

    results = await asyncio.gather(
        *(claim(store, job, at(1), instance_id=f"instance-{i}") for i in range(12))
    )

    outcomes = [result.outcome for result in results]
    assert outcomes.count(ClaimOutcome.CLAIMED) == 1
    assert outcomes.count(ClaimOutcome.DUPLICATE) == 11
    winner = next(r.execution for r in results if r.outcome is ClaimOutcome.CLAIMED)
    assert await all_executions(store) == [winner]


async def test_batch_answers_every_claim_in_order_and_later_claims_see_earlier_ones(
    store: Store,
) -> None:
    plain = await create(store, "plain")
    forbidding = await create(store, "forbidding", concurrency_policy=ConcurrencyPolicy.FORBID)
    changed = await create(store, "changed")
    await store.update_job(changed.id, make_spec("changed"), now=at(0))
    batch = [
        tick_claim(plain, at(1)),
        tick_claim(plain, at(1), instance_id="instance-b"),
        tick_claim(changed, at(1)),
        tick_claim(forbidding, at(1)),
        tick_claim(forbidding, at(2)),
        tick_claim(plain, at(1), trigger=Trigger.MANUAL),
        tick_claim(plain, at(2)),
    ]

    results = await store.claim_ticks(batch)

    assert [r.outcome for r in results] == [
        ClaimOutcome.CLAIMED,
        ClaimOutcome.DUPLICATE,
        ClaimOutcome.STALE,
        ClaimOutcome.CLAIMED,
        ClaimOutcome.SKIPPED,
        ClaimOutcome.CLAIMED,
        ClaimOutcome.CLAIMED,
    ]
    for claim_, result in zip(batch, results, strict=True):
        if result.outcome in (ClaimOutcome.CLAIMED, ClaimOutcome.SKIPPED):
            assert result.execution is not None
            assert result.execution.id == claim_.execution_id
            assert await store.get_execution(claim_.execution_id) == result.execution
        else:
            assert result.execution is None
            with pytest.raises(ExecutionNotFound):
                await store.get_execution(claim_.execution_id)
    skipped = results[4].execution
    assert skipped is not None
    assert skipped.status is ExecutionStatus.SKIPPED
    assert skipped.error is not None
    assert skipped.error.type == "skipped"
    assert batch[3].execution_id in skipped.error.message
    assert len(await all_executions(store)) == 5
    assert (await store.get_job(plain.id)).last_tick == at(2)
    assert (await store.get_job(forbidding.id)).last_tick == at(2)
    assert (await store.get_job(changed.id)).last_tick == T0


async def test_batch_with_an_earlier_tick_after_a_later_one_keeps_last_tick_at_the_later(
    store: Store,
) -> None:
    job = await create(store)

    results = await store.claim_ticks(
        [
            tick_claim(job, at(5), trigger=Trigger.CATCHUP),
            tick_claim(job, at(2), trigger=Trigger.CATCHUP),
            tick_claim(job, at(9), trigger=Trigger.MANUAL),
        ]
    )

    assert [r.outcome for r in results] == [ClaimOutcome.CLAIMED] * 3
    assert (await store.get_job(job.id)).last_tick == at(5)


async def test_empty_batch_answers_an_empty_list(store: Store) -> None:
    await create(store)

    assert await store.claim_ticks([]) == []

    assert await all_executions(store) == []


async def test_batch_of_many_jobs_due_at_once_claims_each(store: Store) -> None:
    jobs = [await create(store, f"job-{i}") for i in range(50)]

    results = await store.claim_ticks([tick_claim(job, at(1)) for job in jobs])

    assert [r.outcome for r in results] == [ClaimOutcome.CLAIMED] * 50
    assert [r.execution.job_id for r in results if r.execution] == [job.id for job in jobs]
    assert len(await all_executions(store, status=ExecutionStatus.RUNNING)) == 50
    assert {job.last_tick for job in await store.active_jobs()} == {at(1)}


async def test_concurrent_batches_over_the_same_ticks_claim_each_tick_once(store: Store) -> None:
    jobs = [await create(store, f"job-{i}") for i in range(5)]

    batches = await asyncio.gather(
        *(
            store.claim_ticks([tick_claim(job, at(1), instance_id=f"i-{n}") for job in jobs])
            for n in range(6)
        )
    )

    outcomes = [result.outcome for batch in batches for result in batch]
    assert outcomes.count(ClaimOutcome.CLAIMED) == 5
    assert outcomes.count(ClaimOutcome.DUPLICATE) == 25
    assert len(await all_executions(store)) == 5


async def test_forbid_comes_from_the_stored_spec_as_it_is_now(store: Store) -> None:
    job = await create(store)
    running = await claimed(store, job, at(1))
    forbidding = await store.update_job(
        job.id, make_spec(concurrency_policy=ConcurrencyPolicy.FORBID), now=at(1)
    )

    skipped = await claim(store, forbidding, at(2))
    allowing = await store.update_job(job.id, make_spec(), now=at(2))
    allowed = await claim(store, allowing, at(3))

    assert skipped.outcome is ClaimOutcome.SKIPPED
    assert skipped.execution is not None and skipped.execution.error is not None
    assert running.id in skipped.execution.error.message
    assert allowed.outcome is ClaimOutcome.CLAIMED


async def test_forbid_skips_a_tick_while_a_manual_run_is_running(store: Store) -> None:
    job = await create(store, concurrency_policy=ConcurrencyPolicy.FORBID)
    await claimed(store, job, at(1), trigger=Trigger.MANUAL)

    result = await claim(store, job, at(2))

    assert result.outcome is ClaimOutcome.SKIPPED


async def test_replace_claims_and_ends_every_running_execution_as_replaced(store: Store) -> None:
    allowing = await create(store, "replacing")
    scheduled = await claimed(store, allowing, at(1))
    manual = await claimed(store, allowing, at(1) + timedelta(seconds=30), trigger=Trigger.MANUAL)
    job = await store.update_job(
        allowing.id, make_spec("replacing", concurrency_policy=ConcurrencyPolicy.REPLACE), now=at(1)
    )
    new = tick_claim(job, at(2), instance_id="instance-b")

    [result] = await store.claim_ticks([new])

    assert result.outcome is ClaimOutcome.CLAIMED
    assert result.execution is not None and result.execution.id == new.execution_id
    assert result.execution.status is ExecutionStatus.RUNNING
    assert await store.get_execution(new.execution_id) == result.execution
    assert sorted(result.replaced) == sorted([scheduled.id, manual.id])
    for old in (scheduled, manual):
        ended = await store.get_execution(old.id)
        assert old.executed_at is not None and ended.error is not None
        assert ended == dataclasses.replace(
            old,
            status=ExecutionStatus.FAILURE,
            finished_at=new.executed_at,
            duration_ms=int((new.executed_at - old.executed_at).total_seconds() * 1000),
            error=ended.error,
        )
        assert ended.error.type == "replaced"
        assert new.execution_id in ended.error.message
    after = await store.get_job(job.id)
    assert (after.last_run_at, after.last_status) == (None, None)
    assert after.last_tick == at(2)


async def test_replace_with_nothing_running_claims_and_replaces_nothing(store: Store) -> None:
    job = await create(store, concurrency_policy=ConcurrencyPolicy.REPLACE)
    done = await claimed(store, job, at(1))
    await finish(store, finished(done))
    await claimed(store, await create(store, "busy"), at(1))

    result = await claim(store, job, at(2))

    assert result.outcome is ClaimOutcome.CLAIMED
    assert result.replaced == ()
    assert await store.get_execution(done.id) == finished(done)


async def test_a_replaced_execution_is_not_overwritten_by_its_runners_finish(
    store: Store,
) -> None:
    job = await create(store, concurrency_policy=ConcurrencyPolicy.REPLACE)
    old = await claimed(store, job, at(1))
    await claimed(store, job, at(2))
    replaced = await store.get_execution(old.id)

    report = await store.finish_executions([finished(old)])

    assert report == FinishReport(already_final=((old.id, ExecutionStatus.FAILURE),))
    assert await store.get_execution(old.id) == replaced
    assert replaced.status is ExecutionStatus.FAILURE
    assert (await store.get_job(job.id)).last_status is None


async def test_a_replace_claim_that_loses_its_tick_replaces_nothing(store: Store) -> None:
    job = await create(store, concurrency_policy=ConcurrencyPolicy.REPLACE)
    running = await claimed(store, job, at(1))

    duplicate = await claim(store, job, at(1), instance_id="instance-b")
    stale = await claim(store, job, at(2), version=job.version + 1)

    assert duplicate == ClaimResult(outcome=ClaimOutcome.DUPLICATE)
    assert stale == ClaimResult(outcome=ClaimOutcome.STALE)
    assert await store.get_execution(running.id) == running


async def test_replace_within_one_batch_ends_the_run_claimed_earlier_in_it(store: Store) -> None:
    job = await create(store, concurrency_policy=ConcurrencyPolicy.REPLACE)
    batch = [tick_claim(job, at(1)), tick_claim(job, at(1), trigger=Trigger.MANUAL)]

    first, second = await store.claim_ticks(batch)

    assert (first.outcome, second.outcome) == (ClaimOutcome.CLAIMED, ClaimOutcome.CLAIMED)
    assert (first.replaced, second.replaced) == ((), (batch[0].execution_id,))
    ended = await store.get_execution(batch[0].execution_id)
    assert ended.status is ExecutionStatus.FAILURE
    assert ended.error is not None and ended.error.type == "replaced"
    assert (await store.get_execution(batch[1].execution_id)).status is ExecutionStatus.RUNNING


async def test_replace_comes_from_the_stored_spec_as_it_is_now(store: Store) -> None:
    job = await create(store)
    running = await claimed(store, job, at(1))
    replacing = await store.update_job(
        job.id, make_spec(concurrency_policy=ConcurrencyPolicy.REPLACE), now=at(1)
    )

    result = await claim(store, replacing, at(2))

    assert result.replaced == (running.id,)
    assert (await store.get_execution(running.id)).status is ExecutionStatus.FAILURE


# Missed ticks


async def test_record_missed_inserts_records_for_unrecorded_ticks_only(store: Store) -> None:
    job = await create(store, "sleepy")
    fired = await claimed(store, job, at(2))

    inserted = await store.record_missed(
        job, [at(1), at(2), at(3)], instance_id="instance-b", now=at(10), reason="outage"
    )

    assert inserted == 2
    executions = await all_executions(store, job_id=job.id)
    assert [e.scheduled_at for e in executions] == [at(3), at(2), at(1)]
    assert executions[1] == fired
    for missed in (executions[0], executions[2]):
        assert is_valid_id(missed.id)
        assert missed.status is ExecutionStatus.MISSED
        assert (missed.job_id, missed.job_name) == (job.id, "sleepy")
        assert missed.instance_id == "instance-b"
        assert missed.error == ErrorInfo(type="missed", message="outage")
        assert missed.trigger is Trigger.SCHEDULE
        assert missed.finished_at == at(10)
        assert await store.get_execution(missed.id) == missed
    assert executions[0].id != executions[2].id


async def test_record_missed_advances_last_tick_to_the_latest_tick(store: Store) -> None:
    job = await create(store)

    await store.record_missed(
        job, [at(3), at(1), at(2)], instance_id=INSTANCE, now=at(10), reason="r"
    )

    assert (await store.get_job(job.id)).last_tick == at(3)


async def test_record_missed_does_not_move_last_tick_back(store: Store) -> None:
    job = await create(store)
    await claimed(store, job, at(5))

    await store.record_missed(job, [at(1)], instance_id=INSTANCE, now=at(10), reason="r")

    assert (await store.get_job(job.id)).last_tick == at(5)


async def test_record_missed_twice_inserts_nothing_the_second_time(store: Store) -> None:
    job = await create(store)
    ticks = [at(1), at(2)]
    assert await store.record_missed(job, ticks, instance_id=INSTANCE, now=at(9), reason="r") == 2

    again = await store.record_missed(job, ticks, instance_id="other", now=at(10), reason="r2")

    assert again == 0
    assert len(await all_executions(store)) == 2


async def test_record_missed_with_no_ticks_writes_nothing(store: Store) -> None:
    job = await create(store)

    assert await store.record_missed(job, [], instance_id=INSTANCE, now=at(9), reason="r") == 0

    assert await all_executions(store) == []
    assert (await store.get_job(job.id)).last_tick == T0


async def test_record_missed_for_a_deleted_job_writes_nothing(store: Store) -> None:
    job = await create(store)
    await store.delete_job(job.id)

    inserted = await store.record_missed(job, [at(1)], instance_id=INSTANCE, now=at(9), reason="r")

    assert inserted == 0
    assert await all_executions(store) == []


async def test_record_missed_for_a_paused_job_writes_nothing(store: Store) -> None:
    job = await create(store, is_active=False)

    inserted = await store.record_missed(job, [at(1)], instance_id=INSTANCE, now=at(9), reason="r")

    assert inserted == 0
    assert await all_executions(store) == []
    assert (await store.get_job(job.id)).last_tick == T0


async def test_record_missed_for_another_version_writes_nothing(store: Store) -> None:
    job = await create(store)
    await store.update_job(job.id, make_spec(), now=at(0))

    inserted = await store.record_missed(job, [at(1)], instance_id=INSTANCE, now=at(9), reason="r")

    assert inserted == 0
    assert await all_executions(store) == []
    assert (await store.get_job(job.id)).last_tick == T0


# Imported history


def historical(
    job: Job, tick: datetime, *, status: ExecutionStatus = ExecutionStatus.SUCCESS, **changes: Any
) -> Execution:
    values: dict[str, Any] = {
        "id": new_id(),
        "job_id": job.id,
        "job_name": job.spec.name,
        "trigger": Trigger.SCHEDULE,
        "scheduled_at": tick,
        "status": status,
        "instance_id": "legacy",
        "executed_at": tick,
        "finished_at": tick + timedelta(seconds=1),
        "response_status": 200,
        "response_body": "ok",
    }
    values.update(changes)
    return Execution(**values)


async def test_imported_executions_read_back_as_given(store: Store) -> None:
    job = await create(store, "old")
    records = [
        historical(job, at(1)),
        historical(
            job,
            at(2),
            status=ExecutionStatus.FAILURE,
            response_status=None,
            response_body="x" * 100,
            response_truncated=True,
            error=ErrorInfo(type="legacy", message="connect ECONNREFUSED"),
        ),
    ]

    left_out = await store.import_executions(records)

    assert left_out == []
    for record in records:
        assert await store.get_execution(record.id) == record
    assert await all_executions(store, job_id=job.id) == records[::-1]


async def test_importing_executions_leaves_the_job_alone(store: Store) -> None:
    job = await create(store)

    await store.import_executions([historical(job, at(5))])

    assert await store.get_job(job.id) == job


async def test_importing_executions_twice_leaves_the_first_records_and_names_the_rest(
    store: Store,
) -> None:
    job = await create(store)
    first = historical(job, at(1))
    await store.import_executions([first])
    changed = dataclasses.replace(first, status=ExecutionStatus.FAILURE, scheduled_at=at(3))
    new = historical(job, at(2))

    left_out = await store.import_executions([changed, new])

    assert left_out == [first.id]
    assert await store.get_execution(first.id) == first
    assert await store.get_execution(new.id) == new


async def test_an_imported_execution_whose_tick_is_taken_is_left_out(store: Store) -> None:
    job = await create(store)
    fired = await claimed(store, job, at(1))
    clash = historical(job, at(1))
    manual = historical(job, at(1), trigger=Trigger.MANUAL)

    left_out = await store.import_executions([clash, manual])

    assert left_out == [clash.id]
    assert {e.id for e in await all_executions(store)} == {fired.id, manual.id}


async def test_executions_of_a_job_that_is_gone_are_imported(store: Store) -> None:
    job = await create(store)
    await store.delete_job(job.id)
    record = historical(job, at(1))

    assert await store.import_executions([record]) == []

    assert await store.get_execution(record.id) == record


@pytest.mark.parametrize(
    "bad",
    [
        {"status": ExecutionStatus.RUNNING},
        {"id": "not-an-id"},
        {"job_id": "not-an-id"},
    ],
)
async def test_importing_an_unfinished_or_ill_named_execution_writes_nothing(
    store: Store, bad: dict[str, Any]
) -> None:
    job = await create(store)
    good = historical(job, at(1))

    with pytest.raises(ValueError):
        await store.import_executions([good, historical(job, at(2), **bad)])

    assert await all_executions(store) == []


async def test_importing_no_executions_writes_nothing(store: Store) -> None:
    assert await store.import_executions([]) == []


async def test_missed_tick_cannot_be_claimed_afterwards(store: Store) -> None:
    job = await create(store)
    await store.record_missed(job, [at(1)], instance_id=INSTANCE, now=at(9), reason="r")

    result = await claim(store, job, at(1), trigger=Trigger.CATCHUP)

    assert result.outcome is ClaimOutcome.DUPLICATE


async def test_missed_tick_does_not_block_a_manual_run_at_that_instant(store: Store) -> None:
    job = await create(store)
    await store.record_missed(job, [at(1)], instance_id=INSTANCE, now=at(9), reason="r")

    result = await claim(store, job, at(1), trigger=Trigger.MANUAL)

    assert result.outcome is ClaimOutcome.CLAIMED


# Finishing executions


async def test_finish_overwrites_the_record_and_sets_the_jobs_last_run(store: Store) -> None:
    job = await create(store)
    execution = await claimed(store, job, at(1))
    final = finished(
        execution,
        ExecutionStatus.FAILURE,
        attempts=3,
        response_status=503,
        response_body="unavailable",
        response_truncated=True,
        error=ErrorInfo(type="http_status", message="503 Service Unavailable"),
        instance_id="instance-z",
    )

    await finish(store, final)

    assert await store.get_execution(execution.id) == final
    after = await store.get_job(job.id)
    assert after.last_run_at == execution.executed_at
    assert after.last_status is ExecutionStatus.FAILURE
    assert after.version == job.version


async def test_finish_of_several_jobs_runs_in_one_batch_sets_each_jobs_own_last_run(
    store: Store,
) -> None:
    first, second = await create(store, "first"), await create(store, "second")
    ok = await claimed(store, first, at(1))
    failed = await claimed(store, second, at(1))

    report = await store.finish_executions(
        [finished(ok), finished(failed, ExecutionStatus.FAILURE)]
    )

    assert report == FinishReport()
    assert (await store.get_job(first.id)).last_status is ExecutionStatus.SUCCESS
    assert (await store.get_job(second.id)).last_status is ExecutionStatus.FAILURE


async def test_finish_records_the_attempt_log_and_reads_give_it_back(store: Store) -> None:
    job = await create(store)
    execution = await claimed(store, job, at(1))
    attempts = (
        AttemptRecord(
            attempt=1,
            started_at=at(1) + timedelta(microseconds=5999),
            duration_ms=30_000,
            error=ErrorInfo(type="timeout", message="timed out after 30 s without a response"),
            retry_after_ms=1_250,
        ),
        AttemptRecord(
            attempt=2,
            started_at=at(2),
            duration_ms=12,
            response_status=503,
            error=ErrorInfo(type="http_status", message="HTTP 503 Service Unavailable"),
            retry_after_ms=7_000,
        ),
        AttemptRecord(attempt=3, started_at=at(3), duration_ms=8, response_status=200),
    )
    final = finished(execution, attempts=3, attempt_log=attempts)

    await finish(store, final)

    expected = dataclasses.replace(
        final,
        attempt_log=(
            dataclasses.replace(attempts[0], started_at=at(1) + timedelta(milliseconds=5)),
            *attempts[1:],
        ),
    )
    assert execution.attempt_log == ()
    assert await store.get_execution(execution.id) == expected
    assert await all_executions(store, job_id=job.id) == [expected]
    await finish(store, final)  # idempotent with a log too
    assert await store.get_execution(execution.id) == expected


async def test_finish_keeps_microseconds_out(store: Store) -> None:
    job = await create(store)
    execution = await claimed(store, job, at(1))
    final = finished(execution, finished_at=at(2) + timedelta(microseconds=1999))

    await finish(store, final)

    got = await store.get_execution(execution.id)
    assert got.finished_at == at(2) + timedelta(milliseconds=1)
    assert got.finished_at.utcoffset() == timedelta(0)


async def test_finish_is_idempotent(store: Store) -> None:
    job = await create(store)
    execution = await claimed(store, job, at(1))
    final = finished(execution)
    await finish(store, final)

    await finish(store, final)

    assert await store.get_execution(execution.id) == final
    assert (await store.get_job(job.id)).last_status is ExecutionStatus.SUCCESS


async def test_finish_leaves_a_final_record_unchanged(store: Store) -> None:
    job = await create(store)
    execution = await claimed(store, job, at(1))
    first = finished(execution, ExecutionStatus.SUCCESS)
    await finish(store, first)

    report = await store.finish_executions(
        [finished(execution, ExecutionStatus.FAILURE, attempts=9)]
    )

    assert report == FinishReport(already_final=((execution.id, ExecutionStatus.SUCCESS),))
    assert await store.get_execution(execution.id) == first
    assert (await store.get_job(job.id)).last_status is ExecutionStatus.SUCCESS


async def test_finish_leaves_missed_records_unchanged(store: Store) -> None:
    job = await create(store)
    await store.record_missed(job, [at(1)], instance_id=INSTANCE, now=at(9), reason="r")
    [missed] = await all_executions(store)

    report = await store.finish_executions(
        [dataclasses.replace(missed, status=ExecutionStatus.SUCCESS, executed_at=at(9))]
    )

    assert report == FinishReport(already_final=((missed.id, ExecutionStatus.MISSED),))
    assert await store.get_execution(missed.id) == missed
    assert (await store.get_job(job.id)).last_status is None


async def test_finish_of_unknown_execution_reports_its_id(store: Store) -> None:
    job = await create(store)
    execution = await claimed(store, job, at(1))
    ghost = finished(dataclasses.replace(execution, id=new_id()))

    assert await store.finish_executions([ghost]) == FinishReport(missing=(ghost.id,))
    assert (await store.get_job(job.id)).last_status is None


async def test_finish_after_the_job_was_deleted_still_records_the_result(store: Store) -> None:
    job = await create(store)
    execution = await claimed(store, job, at(1))
    await store.delete_job(job.id)

    await finish(store, finished(execution))

    assert (await store.get_execution(execution.id)).status is ExecutionStatus.SUCCESS
    with pytest.raises(JobNotFound):
        await store.get_job(job.id)


async def test_finish_with_a_status_that_is_not_final_raises_value_error(store: Store) -> None:
    job = await create(store)
    execution = await claimed(store, job, at(1))

    with pytest.raises(ValueError):
        await finish(store, finished(execution, ExecutionStatus.RUNNING))

    assert await store.get_execution(execution.id) == execution
    assert (await store.get_job(job.id)).last_status is None


async def test_finish_of_a_batch_records_each_and_reports_only_the_missing(store: Store) -> None:
    job = await create(store)
    first = await claimed(store, job, at(1))
    second = await claimed(store, job, at(2))
    ghost = finished(dataclasses.replace(first, id=new_id()))

    report = await store.finish_executions(
        [finished(first), ghost, finished(second, ExecutionStatus.FAILURE)]
    )

    assert report == FinishReport(missing=(ghost.id,))
    assert (await store.get_execution(first.id)).status is ExecutionStatus.SUCCESS
    assert (await store.get_execution(second.id)).status is ExecutionStatus.FAILURE
    assert (await store.get_job(job.id)).last_status is ExecutionStatus.FAILURE


async def test_finish_reports_lost_replaced_and_missing_records_and_writes_the_running(
    store: Store,
) -> None:
    plain = await create(store)
    lost = await claimed(store, plain, at(1), instance_id="instance-dead")
    running = await claimed(store, plain, at(2))
    assert [
        e.id for e in await store.mark_lost(live_instances=[INSTANCE], now=at(3), reason="r")
    ] == [lost.id]
    replacing = await create(store, "replacing", concurrency_policy=ConcurrencyPolicy.REPLACE)
    old = await claimed(store, replacing, at(1))
    await claimed(store, replacing, at(2))
    ghost = finished(dataclasses.replace(running, id=new_id()))
    stored_lost = await store.get_execution(lost.id)
    stored_old = await store.get_execution(old.id)

    report = await store.finish_executions(
        [finished(lost), finished(old), ghost, finished(running, ExecutionStatus.FAILURE)]
    )

    assert report == FinishReport(
        missing=(ghost.id,),
        already_final=((lost.id, ExecutionStatus.LOST), (old.id, ExecutionStatus.FAILURE)),
    )
    assert await store.get_execution(lost.id) == stored_lost
    assert await store.get_execution(old.id) == stored_old
    assert await store.get_execution(running.id) == finished(running, ExecutionStatus.FAILURE)
    after = await store.get_job(plain.id)
    assert (after.last_run_at, after.last_status) == (running.executed_at, ExecutionStatus.FAILURE)
    assert (await store.get_job(replacing.id)).last_status is None


async def test_a_second_result_for_one_id_in_a_batch_is_reported_already_final(
    store: Store,
) -> None:
    job = await create(store)
    execution = await claimed(store, job, at(1))
    first = finished(execution, ExecutionStatus.SUCCESS)

    report = await store.finish_executions([first, finished(execution, ExecutionStatus.FAILURE)])

    assert report == FinishReport(already_final=((execution.id, ExecutionStatus.SUCCESS),))
    assert await store.get_execution(execution.id) == first


async def test_finish_of_a_batch_with_one_unfinished_status_writes_nothing(store: Store) -> None:
    job = await create(store)
    first = await claimed(store, job, at(1))
    second = await claimed(store, job, at(2))

    with pytest.raises(ValueError):
        await store.finish_executions([finished(first), finished(second, ExecutionStatus.RUNNING)])

    assert await store.get_execution(first.id) == first


async def test_finish_out_of_order_keeps_the_latest_run_on_the_job(store: Store) -> None:
    job = await create(store)
    earlier = await claimed(store, job, at(1))
    later = await claimed(store, job, at(2))
    await finish(store, finished(later, ExecutionStatus.SUCCESS))

    await finish(store, finished(earlier, ExecutionStatus.FAILURE))

    after = await store.get_job(job.id)
    assert after.last_run_at == later.executed_at
    assert after.last_status is ExecutionStatus.SUCCESS
    assert (await store.get_execution(earlier.id)).status is ExecutionStatus.FAILURE


# Execution logs


@pytest.mark.parametrize("execution_id", [*MALFORMED_IDS, "0" * 24])
async def test_unknown_or_malformed_execution_ids_are_not_found(
    store: Store, execution_id: str
) -> None:
    job = await create(store)
    await claimed(store, job, at(1))

    with pytest.raises(ExecutionNotFound):
        await store.get_execution(execution_id)
    with pytest.raises(ExecutionNotFound):
        await store.delete_execution(execution_id)


async def test_deleted_execution_is_gone(store: Store) -> None:
    job = await create(store)
    gone = await claimed(store, job, at(1))
    kept = await claimed(store, job, at(2))

    await store.delete_execution(gone.id)

    with pytest.raises(ExecutionNotFound):
        await store.get_execution(gone.id)
    with pytest.raises(ExecutionNotFound):
        await store.delete_execution(gone.id)
    assert await all_executions(store) == [kept]


async def test_execution_logs_outlive_their_job(store: Store) -> None:
    job = await create(store)
    execution = await claimed(store, job, at(1))

    await store.delete_job(job.id)

    assert await store.get_execution(execution.id) == execution
    assert await all_executions(store, job_id=job.id) == [execution]


async def test_list_executions_pages_newest_first_by_tick_then_id(store: Store) -> None:
    jobs = [await create(store, f"job-{i}") for i in range(3)]
    # Several jobs share ticks, so ordering within one tick falls to the id.
    for job in jobs:
        await store.record_missed(
            job, [at(3), at(1), at(2)], instance_id=INSTANCE, now=at(9), reason="r"
        )
    manual = await claimed(store, jobs[0], at(2), trigger=Trigger.MANUAL)
    later = await claimed(store, jobs[1], at(4))

    pages = []
    cursor = None
    while True:
        page = await store.list_executions(ExecutionQuery(cursor=cursor, limit=4))
        pages.append(page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor

    listed = [e for items in pages for e in items]
    assert [len(items) for items in pages] == [4, 4, 3]
    assert len({e.id for e in listed}) == 11
    assert listed == sorted(listed, key=lambda e: (e.scheduled_at, e.id), reverse=True)
    assert listed[0] == later
    assert manual in listed


async def test_list_executions_filters_by_job_and_status(store: Store) -> None:
    job = await create(store, "one")
    other = await create(store, "two")
    ok = await claimed(store, job, at(1))
    await finish(store, finished(ok))
    running = await claimed(store, job, at(2))
    await claimed(store, other, at(1))
    await store.record_missed(job, [at(0)], instance_id=INSTANCE, now=at(9), reason="r")

    by_job = await all_executions(store, job_id=job.id)
    by_status = await all_executions(store, status=ExecutionStatus.RUNNING)
    both = await all_executions(store, job_id=job.id, status=ExecutionStatus.RUNNING)

    assert [e.scheduled_at for e in by_job] == [at(2), at(1), at(0)]
    assert {e.job_id for e in by_job} == {job.id}
    assert {(e.job_id, e.scheduled_at) for e in by_status} == {(job.id, at(2)), (other.id, at(1))}
    assert both == [running]
    assert await all_executions(store, job_id=new_id()) == []


async def test_list_executions_of_one_job_pages_past_another_jobs_records_of_the_same_ticks(
    store: Store,
) -> None:
    """The other job's records are claimed first (their ids sort lower), so a
    cursor at a shared tick must still exclude them."""
    job, other = await create(store, "one"), await create(store, "two")
    for tick in (at(1), at(2), at(3)):
        await claimed(store, other, tick)
    mine = [await claimed(store, job, tick) for tick in (at(1), at(2), at(3))]

    listed = await all_executions(store, job_id=job.id)

    assert [e.id for e in listed] == [e.id for e in reversed(mine)]


async def test_list_executions_since_is_inclusive_and_until_exclusive(store: Store) -> None:
    job = await create(store)
    ticks = [at(i) for i in range(6)]
    await store.record_missed(job, ticks, instance_id=INSTANCE, now=at(9), reason="r")

    window = await all_executions(store, since=at(1), until=at(4))
    since_only = await all_executions(store, since=at(4))
    until_only = await all_executions(store, until=at(1))
    empty = await all_executions(store, since=at(3), until=at(3))

    assert [e.scheduled_at for e in window] == [at(3), at(2), at(1)]
    assert [e.scheduled_at for e in since_only] == [at(5), at(4)]
    assert [e.scheduled_at for e in until_only] == [at(0)]
    assert empty == []


@pytest.mark.parametrize("cursor", GARBAGE_CURSORS)
async def test_list_executions_rejects_a_cursor_it_did_not_make(store: Store, cursor: str) -> None:
    job = await create(store)
    await claimed(store, job, at(1))

    with pytest.raises(InvalidCursor):
        await store.list_executions(ExecutionQuery(cursor=cursor))


# Lost runs and retention


async def test_mark_lost_marks_running_records_of_dead_instances_only(store: Store) -> None:
    job = await create(store)
    dead = await claimed(store, job, at(1), instance_id="dead")
    also_dead = await claimed(store, job, at(2), instance_id="gone")
    alive = await claimed(store, job, at(3), instance_id="alive")
    done = await claimed(store, job, at(4), instance_id="dead")
    await finish(store, finished(done))

    lost = await store.mark_lost(
        live_instances={"alive", "other"}, now=at(20), reason="instance stopped heartbeating"
    )

    expected = [
        dataclasses.replace(
            execution,
            status=ExecutionStatus.LOST,
            finished_at=at(20),
            error=ErrorInfo(type="lost", message="instance stopped heartbeating"),
        )
        for execution in (dead, also_dead)
    ]
    assert sorted(lost, key=lambda e: e.scheduled_at) == expected
    for execution in expected:
        assert await store.get_execution(execution.id) == execution
    assert await store.get_execution(alive.id) == alive
    assert (await store.get_execution(done.id)).status is ExecutionStatus.SUCCESS


async def test_mark_lost_twice_returns_nothing_the_second_time(store: Store) -> None:
    job = await create(store)
    await claimed(store, job, at(1), instance_id="dead")
    assert len(await store.mark_lost(live_instances=[], now=at(9), reason="r")) == 1

    again = await store.mark_lost(live_instances=[], now=at(10), reason="r")

    assert again == []


async def test_mark_lost_with_no_live_instances_marks_every_running_record(store: Store) -> None:
    job = await create(store)
    for i in range(3):
        await claimed(store, job, at(i), instance_id=f"instance-{i}")

    lost = await store.mark_lost(live_instances=(), now=at(9), reason="r")

    assert len(lost) == 3
    assert await all_executions(store, status=ExecutionStatus.RUNNING) == []


# What a job's target asks for: pause (410 Gone), wait (Retry-After)


async def test_pause_job_pauses_an_active_job_at_the_expected_version(store: Store) -> None:
    job = await create(store)

    paused = await store.pause_job(job.id, expected_version=1, reason="410 Gone", now=at(5))

    assert paused is not None
    assert paused.spec.is_active is False and paused.paused_reason == "410 Gone"
    assert paused.version == 2 and paused.updated_at == at(5)
    assert await store.get_job(job.id) == paused
    # A pause is a change of schedule: the ledger owes no ticks after it.
    assert (await store.schedule_history(job.id))[-1] == ScheduleRevision(
        version=2,
        effective_from=at(5),
        cron_expression=job.spec.cron_expression,
        timezone=job.spec.timezone,
        is_active=False,
    )
    [result] = await store.claim_ticks([tick_claim(job, at(6), version=2)])
    assert result.outcome is ClaimOutcome.STALE  # paused: nothing fires


async def test_pause_job_writes_nothing_for_another_version_a_paused_or_a_missing_job(
    store: Store,
) -> None:
    job = await create(store)
    changed = await store.update_job(job.id, job.spec, now=at(1))

    assert await store.pause_job(job.id, expected_version=1, reason="r", now=at(2)) is None
    assert await store.get_job(job.id) == changed
    assert await store.pause_job(new_id(), expected_version=1, reason="r", now=at(2)) is None
    assert await store.pause_job("nope", expected_version=1, reason="r", now=at(2)) is None
    paused = await store.pause_job(job.id, expected_version=2, reason="r", now=at(3))
    assert paused is not None
    assert await store.pause_job(job.id, expected_version=3, reason="r", now=at(4)) is None


async def test_a_users_update_clears_what_the_target_asked_for(store: Store) -> None:
    job = await create(store)
    await store.defer_job(job.id, at(30))
    paused = await store.pause_job(job.id, expected_version=1, reason="410 Gone", now=at(5))
    assert paused is not None

    resumed = await store.update_job(
        job.id, dataclasses.replace(job.spec, is_active=True), now=at(6)
    )

    assert resumed.paused_reason is None and resumed.deferred_until is None
    assert await store.get_job(job.id) == resumed


async def test_defer_job_only_ever_moves_the_hold_later(store: Store) -> None:
    job = await create(store)

    await store.defer_job(job.id, at(10))
    await store.defer_job(job.id, at(5))

    held = await store.get_job(job.id)
    assert held.deferred_until == at(10)
    assert held.version == job.version  # not a change of the job's definition
    await store.defer_job(new_id(), at(10))  # a missing job is ignored


async def test_ticks_before_the_hold_are_skipped_and_later_ones_claimed(store: Store) -> None:
    job = await create(store)
    await store.defer_job(job.id, at(3))

    held, due, manual = await store.claim_ticks(
        [
            tick_claim(job, at(2)),
            tick_claim(job, at(3)),
            tick_claim(job, at(2.5), trigger=Trigger.MANUAL),
        ]
    )

    assert held.outcome is ClaimOutcome.SKIPPED
    assert held.execution is not None and held.execution.error is not None
    assert held.execution.error.type == "deferred"
    assert "Retry-After" in held.execution.error.message
    assert await store.get_execution(held.execution.id) == held.execution
    assert due.outcome is ClaimOutcome.CLAIMED
    assert manual.outcome is ClaimOutcome.CLAIMED  # a person asked for it: not held back
    assert (await store.get_job(job.id)).last_tick == at(3)


async def test_mark_lost_leaves_ticks_claimed_but_never_sent(store: Store) -> None:
    job = await create(store)
    unsent = await claimed(store, job, at(1), instance_id="dead", dispatched=False)
    sent = await claimed(store, job, at(2), instance_id="dead", dispatched=True)

    lost = await store.mark_lost(live_instances=[], now=at(9), reason="r")

    assert [e.id for e in lost] == [sent.id]
    assert await store.get_execution(unsent.id) == unsent


async def test_adopt_unsent_hands_unsent_claims_of_dead_instances_over(store: Store) -> None:
    job = await create(store)
    dead_unsent = await claimed(store, job, at(1), instance_id="dead", dispatched=False)
    await claimed(store, job, at(2), instance_id="dead", dispatched=True)
    await claimed(store, job, at(3), instance_id="alive", dispatched=False)
    manual = await claimed(store, job, at(4), instance_id="dead", trigger=Trigger.MANUAL)

    adopted = await store.adopt_unsent(live_instances={"alive", "me"}, instance_id="me")

    expected = dataclasses.replace(dead_unsent, instance_id="me")
    assert adopted == [expected]
    assert await store.get_execution(dead_unsent.id) == expected
    assert await store.adopt_unsent(live_instances={"alive", "me"}, instance_id="me") == []
    assert (await store.get_execution(manual.id)).instance_id == "dead"


async def test_unsent_claims_are_adopted_by_one_of_two_concurrent_callers(store: Store) -> None:
    job = await create(store)
    for minute in range(6):
        await claimed(store, job, at(minute), instance_id="dead", dispatched=False)

    first, second = await asyncio.gather(
        store.adopt_unsent(live_instances={"a", "b"}, instance_id="a"),
        store.adopt_unsent(live_instances={"a", "b"}, instance_id="b"),
    )

    ids = [e.id for e in first] + [e.id for e in second]
    assert len(ids) == 6
    assert len(set(ids)) == 6


async def test_mark_dispatched_marks_only_running_records_the_caller_holds(store: Store) -> None:
    job = await create(store)
    mine = await claimed(store, job, at(1), instance_id="me", dispatched=False)
    theirs = await claimed(store, job, at(2), instance_id="other", dispatched=False)
    done = await claimed(store, job, at(3), instance_id="me", dispatched=False)
    await finish(store, finished(done))

    marked = await store.mark_dispatched("me", [mine.id, theirs.id, done.id, new_id()])

    assert marked == {mine.id}
    assert await store.mark_dispatched("me", [mine.id]) == {mine.id}  # idempotent
    assert await store.mark_dispatched("me", []) == set()
    # Marked means sent: a reaper now marks it LOST and never hands it over.
    assert await store.adopt_unsent(live_instances=["x"], instance_id="x") == [
        dataclasses.replace(theirs, instance_id="x")
    ]
    assert [e.id for e in await store.mark_lost(live_instances=["x"], now=at(9), reason="r")] == [
        mine.id
    ]


async def test_a_claim_adopted_elsewhere_is_not_marked_for_its_first_holder(
    store: Store,
) -> None:
    job = await create(store)
    execution = await claimed(store, job, at(1), instance_id="slow", dispatched=False)
    await store.adopt_unsent(live_instances=["leader"], instance_id="leader")

    assert await store.mark_dispatched("slow", [execution.id]) == set()
    assert await store.mark_dispatched("leader", [execution.id]) == {execution.id}


async def test_prune_deletes_only_final_records_older_than_the_bound(store: Store) -> None:
    job = await create(store)
    old_running = await claimed(store, job, at(1))
    old_done = await claimed(store, job, at(2))
    await finish(store, finished(old_done))
    await store.record_missed(
        job, [at(3), at(5), at(6)], instance_id=INSTANCE, now=at(9), reason="r"
    )
    at_bound = await claimed(store, job, at(5), trigger=Trigger.MANUAL)
    await finish(store, finished(at_bound))

    deleted = await store.prune_executions(older_than=at(5))

    assert deleted == 2
    remaining = await all_executions(store)
    assert [(e.scheduled_at, e.status) for e in remaining if e.id != at_bound.id] == [
        (at(6), ExecutionStatus.MISSED),
        (at(5), ExecutionStatus.MISSED),
        (at(1), ExecutionStatus.RUNNING),
    ]
    assert old_running in remaining
    assert await store.get_execution(at_bound.id) == finished(at_bound)
    assert await store.prune_executions(older_than=at(5)) == 0


# Health


async def test_ping_answers_on_an_open_store(store: Store) -> None:
    await store.ping()


async def test_ping_raises_store_unavailable_once_closed(store: Store) -> None:
    await store.aclose()

    with pytest.raises(StoreUnavailable):
        await store.ping()


async def test_answered_counts_the_calls_answered_and_not_those_refused(store: Store) -> None:
    before = store.answered
    await store.ping()
    await store.count_jobs()
    assert store.answered == before + 2

    await store.aclose()
    with pytest.raises(StoreUnavailable):
        await store.count_jobs()

    assert store.answered == before + 2


async def test_aclose_twice_is_safe(store: Store) -> None:
    await store.aclose()

    await store.aclose()

    with pytest.raises(StoreUnavailable):
        await store.ping()


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda s, job: s.get_job(job.id), id="get_job"),
        pytest.param(lambda s, job: s.create_job(make_job("other")), id="create_job"),
        pytest.param(lambda s, job: s.claim_ticks([tick_claim(job, at(1))]), id="claim_ticks"),
        pytest.param(lambda s, job: s.claim_ticks([]), id="claim_ticks_empty"),
        pytest.param(
            lambda s, job: s.record_missed(job, [], instance_id=INSTANCE, now=at(1), reason="r"),
            id="record_missed_empty",
        ),
        pytest.param(lambda s, job: s.list_jobs(JobQuery()), id="list_jobs"),
        pytest.param(lambda s, job: s.count_jobs(), id="count_jobs"),
        pytest.param(lambda s, job: s.prune_executions(at(1)), id="prune_executions"),
    ],
)
async def test_every_call_after_aclose_raises_store_unavailable(
    store: Store, call: Callable[[Store, Job], Awaitable[Any]]
) -> None:
    job = await create(store)
    await store.aclose()

    with pytest.raises(StoreUnavailable):
        await call(store, job)


async def test_current_versions_lists_only_jobs_that_exist_and_are_active(store: Store) -> None:
    active = await create(store, "active")
    paused = await create(store, "paused", is_active=False)
    gone = await create(store, "gone")
    await store.delete_job(gone.id)
    updated = await store.update_job(active.id, active.spec, now=at(5))

    versions = await store.current_versions([active.id, paused.id, gone.id, "not-an-id"])

    assert versions == {active.id: updated.version}
    assert updated.version == active.version + 1
    assert await store.current_versions([]) == {}


# Alert states


def _failure(
    job: Job, minutes: float, status: ExecutionStatus = ExecutionStatus.FAILURE
) -> Outcome:
    return Outcome(
        job_id=job.id,
        status=status,
        scheduled_at=at(minutes),
        finished_at=at(minutes),
        execution_id=new_id(),
        error=ErrorInfo(type="http_status", message="HTTP 500"),
    )


def _success(job: Job, minutes: float) -> Outcome:
    return Outcome(
        job_id=job.id,
        status=ExecutionStatus.SUCCESS,
        scheduled_at=at(minutes),
        finished_at=at(minutes),
        execution_id=new_id(),
    )


def _step(job: Job, *outcomes: Outcome, after: int = 1) -> AlertStep:
    policy = AlertPolicy(url="https://alerts.example/hook", after=after)
    return AlertStep(job_id=job.id, policy=policy, outcomes=outcomes)


async def test_alert_outcomes_effect_failing_once_and_recovered_once(store: Store) -> None:
    job = await create(store)
    first = await store.apply_alert_outcomes([_step(job, _failure(job, 1), after=2)], at(1))
    assert first == []
    changes = await store.apply_alert_outcomes(
        [_step(job, _failure(job, 2), _failure(job, 3), after=2)], at(3)
    )
    assert [change.kind for change in changes] == [AlertKind.FAILING]
    assert changes[0].after.streak == 2
    assert await store.apply_alert_outcomes([_step(job, _failure(job, 4), after=2)], at(4)) == []
    recovered = await store.apply_alert_outcomes([_step(job, _success(job, 5), after=2)], at(5))
    assert [change.kind for change in recovered] == [AlertKind.RECOVERED]

    state = (await store.alert_states([job.id]))[job.id]
    assert not state.alerting
    assert state.streak == 0
    assert state.changed_at == at(5)
    assert state.last_status is ExecutionStatus.SUCCESS
    assert state.version == recovered[0].after.version


async def test_alert_state_round_trips_its_last_run(store: Store) -> None:
    job = await create(store)
    outcome = _failure(job, 7, ExecutionStatus.LOST)
    (change,) = await store.apply_alert_outcomes([_step(job, outcome)], at(8))

    state = (await store.alert_states([job.id, new_id()]))[job.id]
    assert state == change.after
    assert state.alerting
    assert state.last_status is ExecutionStatus.LOST
    assert state.last_error == outcome.error
    assert state.last_at == outcome.scheduled_at
    assert state.last_execution_id == outcome.execution_id
    assert state.changed_at == at(8)


async def test_an_outcome_applied_again_changes_nothing(store: Store) -> None:
    job = await create(store)
    outcome = _failure(job, 1)
    await store.apply_alert_outcomes([_step(job, outcome, after=3)], at(1))
    await store.apply_alert_outcomes([_step(job, outcome, after=3)], at(1))
    assert (await store.alert_states([job.id]))[job.id].streak == 1


async def test_a_step_applied_again_after_a_lost_answer_counts_once_and_tells_again(
    store: Store,
) -> None:
    job = await create(store)
    step = _step(job, _failure(job, 1), _failure(job, 2), after=2)
    (sent,) = await store.apply_alert_outcomes([step], at(2))
    stored = (await store.alert_states([job.id]))[job.id]

    # The write above landed; say its answer was lost and the batch, grown
    # by one outcome, is applied again.
    retried = _step(job, *step.outcomes, _failure(job, 3), after=2)
    (told,) = await store.apply_alert_outcomes([retried], at(3))
    assert told.alert_id == sent.alert_id and told.kind is AlertKind.FAILING
    state = (await store.alert_states([job.id]))[job.id]
    assert state.streak == 3 and state.version == stored.version + 1


async def test_alert_outcomes_of_a_job_that_is_gone_are_left_out(store: Store) -> None:
    job = await create(store)
    await store.delete_job(job.id)
    assert await store.apply_alert_outcomes([_step(job, _failure(job, 1))], at(1)) == []
    assert await store.alert_states([job.id]) == {}


async def test_deleting_a_job_deletes_its_alert_state(store: Store) -> None:
    job = await create(store)
    await store.apply_alert_outcomes([_step(job, _failure(job, 1))], at(1))
    await store.delete_job(job.id)
    assert await store.alert_states([job.id]) == {}
    again = await create(store, "another")
    assert await store.alert_states([again.id]) == {}


async def test_concurrent_alert_outcomes_effect_each_change_exactly_once(store: Store) -> None:
    jobs = [await create(store, f"job {n}") for n in range(5)]
    # Two instances record failing runs of the same jobs at once: each
    # job turns failing once, told by one of them.
    rounds = await asyncio.gather(
        *(
            store.apply_alert_outcomes(
                [_step(job, _failure(job, minute), after=1) for job in jobs], at(minute)
            )
            for minute in (1, 2, 3, 4)
        )
    )
    changes = [change for changed in rounds for change in changed]
    assert sorted(change.job_id for change in changes) == sorted(job.id for job in jobs)
    assert {change.kind for change in changes} == {AlertKind.FAILING}


async def test_conflicting_alert_outcomes_report_exactly_one_change(store: Store) -> None:
    job = await create(store)
    await store.apply_alert_outcomes([_step(job, _failure(job, 1))], at(1))
    # One caller recovers the job, the other brings a later failure: the
    # stored state is the fold of both in some order, and each change is
    # reported by the caller that effected it, once.
    success, failure = _success(job, 2), _failure(job, 3)
    rounds = await asyncio.gather(
        store.apply_alert_outcomes([_step(job, success)], at(2)),
        store.apply_alert_outcomes([_step(job, failure)], at(3)),
    )
    kinds = sorted(change.kind for changed in rounds for change in changed)
    state = (await store.alert_states([job.id]))[job.id]
    assert state.last_at == at(3)
    assert state.alerting
    # Success first: recovered, then failing again; failure first: the
    # older success is left out, and nothing changes.
    assert kinds in ([], [AlertKind.FAILING, AlertKind.RECOVERED])
    assert len({change.after.version for changed in rounds for change in changed}) == len(kinds)


async def test_steps_of_one_job_in_one_call_are_applied_in_order(store: Store) -> None:
    job, other = await create(store), await create(store, "other")
    changes = await store.apply_alert_outcomes(
        [
            _step(job, _failure(job, 1)),
            _step(other, _failure(other, 1)),
            _step(job, _success(job, 2)),
        ],
        at(2),
    )
    assert [(c.job_id, c.kind) for c in changes] == [
        (job.id, AlertKind.FAILING),
        (other.id, AlertKind.FAILING),
        (job.id, AlertKind.RECOVERED),
    ]
    assert len({c.alert_id for c in changes}) == 3
    assert not (await store.alert_states([job.id]))[job.id].alerting
