"""What only the MongoDB store does: its documents, indexes, TTL, retried
claims, the races its lack of transactions leaves, and an unreachable server.

The behaviour every store shares is in `test_store_contract.py`; these tests
may look at the documents and speak to the server directly.
"""

from __future__ import annotations

import dataclasses
import gc
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from cronsvc.domain import (
    ConcurrencyPolicy,
    ExecutionStatus,
    Job,
    JobSpec,
    ScheduleRevision,
    Trigger,
)
from cronsvc.errors import ConfigError, DuplicateJobName, StoreUnavailable
from cronsvc.ids import new_id
from cronsvc.store import ClaimOutcome, ClaimResult, FinishReport, JobQuery, TickClaim
from cronsvc.store.mongo import MongoStore
from cronsvc.urls import redact_url
from tests.fakes import free_port
from tests.fixtures_mongo import start_nx_27017, with_database
from tests.helpers_store import T0, at

T0_MS = 1767225600000


def make_job(name: str = "job", **spec_changes: Any) -> Job:
    return Job(
        id=new_id(),
        spec=JobSpec(
            name=name,
            cron_expression="* * * * *",
            webhook_url="https://example.com/hook",
            **spec_changes,
        ),
        created_at=T0,
        updated_at=T0,
        last_tick=T0,
    )


def tick_claim(job: Job, tick: datetime, *, execution_id: str | None = None) -> TickClaim:
    return TickClaim(
        job_id=job.id,
        expected_version=job.version,
        scheduled_at=tick,
        trigger=Trigger.SCHEDULE,
        execution_id=execution_id or new_id(),
        instance_id="instance-a",
        executed_at=tick + timedelta(milliseconds=5),
    )


@pytest.fixture
def sweep_cancelled_sockets() -> Iterator[None]:
    """Collect, quietly, the socket pymongo leaves open when closing a client
    cancels its monitor in the middle of a connect (its connect helper closes
    the socket on OSError only). Otherwise that socket's ResourceWarning
    surfaces at some later garbage collection, outside any test."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture
async def store(mongo_database_url: str) -> AsyncIterator[MongoStore]:
    opened = await MongoStore.open(mongo_database_url)
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture
async def database(mongo_database_url: str) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    """The test's database, spoken to directly."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_database_url, tz_aware=True)
    try:
        yield client.get_default_database()
    finally:
        await client.close()


async def ttl_of(database: AsyncDatabase[dict[str, Any]]) -> Any:
    """The expiry of the TTL index on executions (None if there is none)."""
    for index in await (await database["executions"].list_indexes()).to_list():
        if "expireAfterSeconds" in index:
            assert list(index["key"]) == ["finished_date"]
            return index["expireAfterSeconds"]
    return None


async def test_documents_keep_instants_as_exact_milliseconds_in_the_urls_database(
    store: MongoStore, database: AsyncDatabase[dict[str, Any]]
) -> None:
    job = await store.create_job(make_job(body="{}", headers={"a.b": "1", "$x": "2"}))
    [result] = await store.claim_ticks([tick_claim(job, at(1) + timedelta(microseconds=2500))])
    assert result.execution is not None

    stored_job = await database["jobs"].find_one({"_id": job.id})
    stored_run = await database["executions"].find_one({"_id": result.execution.id})

    assert stored_job is not None and stored_run is not None
    assert stored_job["body_json"] == '"{}"'
    assert stored_job["headers"] == [["a.b", "1"], ["$x", "2"]]
    assert stored_job["last_tick"] == T0_MS + 60_002
    assert stored_run["scheduled_at"] == T0_MS + 60_002
    assert stored_run["slot"] == "tick"
    assert stored_run["finished_date"] is None  # RUNNING: never expires


async def test_final_records_carry_a_date_for_the_ttl_index(
    store: MongoStore, database: AsyncDatabase[dict[str, Any]]
) -> None:
    job = await store.create_job(make_job())

    await store.record_missed(
        job, [at(1)], instance_id="i", now=at(9) + timedelta(microseconds=1500), reason="r"
    )

    missed = await database["executions"].find_one({"status": "MISSED"})
    assert missed is not None
    assert missed["finished_date"] == at(9) + timedelta(milliseconds=1)
    assert missed["finished_date"].utcoffset() == timedelta(0)


async def test_retention_days_keeps_a_ttl_index_and_a_new_value_changes_it(
    mongo_database_url: str, database: AsyncDatabase[dict[str, Any]]
) -> None:
    for retention_days, expected in [(None, None), (2, 2 * 86400), (0.5, 43200), (None, 43200)]:
        store = await MongoStore.open(mongo_database_url, retention_days=retention_days)
        await store.aclose()
        assert await ttl_of(database) == expected, retention_days


async def test_prune_works_beside_the_ttl_index(mongo_database_url: str) -> None:
    store = await MongoStore.open(mongo_database_url, retention_days=30)
    try:
        job = await store.create_job(make_job())
        # Finished now, so that the TTL index does not take them first.
        now = datetime.now(UTC)
        await store.record_missed(job, [at(1), at(2)], instance_id="i", now=now, reason="r")

        assert await store.prune_executions(at(2)) == 1
    finally:
        await store.aclose()


async def test_a_seeded_job_reads_back_as_the_same_job_created_one_by_one(
    store: MongoStore,
) -> None:
    jobs = [
        make_job("a", tags=("seeded",), headers={"a.b": "1"}, body={"x": [1]}),
        make_job("b", is_active=False),
        dataclasses.replace(
            make_job("c"),
            spec=dataclasses.replace(
                make_job("c").spec, cron_expression="7 * * * * *", timezone="Europe/Paris"
            ),
        ),
    ]
    for job in jobs:
        await store.create_job(job)
    expected = [(await store.get_job(job.id), await store.schedule_history(job.id)) for job in jobs]
    expected_tagged = await store.list_jobs(JobQuery(tag="seeded"))
    expected_active = await store.active_schedules()
    for job in jobs:
        await store.delete_job(job.id)

    await store.seed_jobs(jobs)

    got = [(await store.get_job(job.id), await store.schedule_history(job.id)) for job in jobs]
    assert got == expected
    assert await store.list_jobs(JobQuery(tag="seeded")) == expected_tagged
    assert await store.active_schedules() == expected_active
    assert await store.count_jobs() == 3


async def test_seeding_a_name_twice_inserts_none_and_a_stored_name_is_refused(
    store: MongoStore,
) -> None:
    with pytest.raises(DuplicateJobName) as twice:
        await store.seed_jobs([make_job("free"), make_job("twice"), make_job("twice")])
    assert twice.value.name == "twice"
    assert await store.count_jobs() == 0

    await store.create_job(make_job("taken"))
    with pytest.raises(DuplicateJobName) as taken:
        await store.seed_jobs([make_job("taken"), make_job("after")])
    assert taken.value.name == "taken"
    assert await store.count_jobs() == 1  # ordered: nothing after the clash went in


async def test_a_job_written_before_the_schedule_history_reads_as_one_revision_and_grows(
    store: MongoStore, database: AsyncDatabase[dict[str, Any]]
) -> None:
    job = await store.create_job(make_job())
    await database["jobs"].update_one({"_id": job.id}, {"$unset": {"schedule_history": ""}})

    assert await store.schedule_history(job.id) == [
        ScheduleRevision(
            version=1,
            effective_from=T0,
            cron_expression="* * * * *",
            timezone="UTC",
            is_active=True,
        )
    ]
    await store.update_job(job.id, dataclasses.replace(job.spec, is_active=False), now=at(2))
    history = await store.schedule_history(job.id)
    assert [(r.version, r.effective_from, r.is_active) for r in history] == [
        (1, T0, True),
        (2, at(2), False),
    ]


async def test_a_claim_retried_after_a_lost_answer_gets_the_same_answer(
    store: MongoStore,
) -> None:
    job = await store.create_job(make_job())
    first = tick_claim(job, at(1))
    [claimed] = await store.claim_ticks([first])

    [again] = await store.claim_ticks([first])
    [other] = await store.claim_ticks([tick_claim(job, at(1))])

    assert claimed.outcome is ClaimOutcome.CLAIMED
    assert again == claimed
    assert other == ClaimResult(outcome=ClaimOutcome.DUPLICATE)


async def test_a_skip_retried_after_a_lost_answer_is_skipped_again(store: MongoStore) -> None:
    job = await store.create_job(make_job(concurrency_policy=ConcurrencyPolicy.FORBID))
    await store.claim_ticks([tick_claim(job, at(1))])
    second = tick_claim(job, at(2))
    [skipped] = await store.claim_ticks([second])

    [again] = await store.claim_ticks([second])

    assert skipped.outcome is ClaimOutcome.SKIPPED
    assert again == skipped


async def test_a_replace_retried_after_its_insert_landed_ends_the_old_run_then(
    store: MongoStore,
) -> None:
    """The claim's insert landed but the write that ends the superseded run
    did not (the answer was lost): the retry ends it and reports it."""
    job = await store.create_job(make_job(concurrency_policy=ConcurrencyPolicy.REPLACE))
    [old] = await store.claim_ticks([tick_claim(job, at(1))])
    assert old.execution is not None
    new = tick_claim(job, at(2))
    replace_running = store._replace_running

    async def lost(*args: Any) -> None:
        return None

    store._replace_running = lost  # type: ignore[method-assign]
    [first] = await store.claim_ticks([new])
    assert first.replaced == ()
    assert (await store.get_execution(old.execution.id)).status is ExecutionStatus.RUNNING
    store._replace_running = replace_running  # type: ignore[method-assign]

    [again] = await store.claim_ticks([new])

    assert again.outcome is ClaimOutcome.CLAIMED and again.execution == first.execution
    assert again.replaced == (old.execution.id,)
    assert (await store.get_execution(old.execution.id)).status is ExecutionStatus.FAILURE


@pytest.mark.parametrize("policy", [ConcurrencyPolicy.ALLOW, ConcurrencyPolicy.REPLACE])
async def test_a_tick_taken_between_the_read_and_the_insert_is_duplicate(
    store: MongoStore, database: AsyncDatabase[dict[str, Any]], policy: ConcurrencyPolicy
) -> None:
    """Without transactions another instance can claim the tick after this
    store read the job (and, for a policy that watches running executions,
    the records): the unique tick key still turns the claim away."""
    job = await store.create_job(make_job(concurrency_policy=policy))
    rival = new_id()
    insert = store._insert_claimed

    async def lose_the_race_then_insert(*args: Any) -> Any:
        await database["executions"].insert_one(
            {"_id": rival, "job_id": job.id, "scheduled_at": T0_MS + 60_000, "slot": "tick"}
        )
        return await insert(*args)

    store._insert_claimed = lose_the_race_then_insert  # type: ignore[method-assign]
    mine = tick_claim(job, at(1))
    later = tick_claim(job, at(2))

    results = await store.claim_ticks([mine, later])

    assert [r.outcome for r in results] == [ClaimOutcome.DUPLICATE, ClaimOutcome.CLAIMED]
    assert await database["executions"].find_one({"_id": mine.execution_id}) is None
    assert (await store.get_job(job.id)).last_tick == at(2)


async def test_a_deferred_skip_retried_after_a_lost_answer_is_skipped_again(
    store: MongoStore,
) -> None:
    """Inserted unread (`allow`), the retry finds its own record by its key."""
    job = await store.create_job(make_job())
    await store.defer_job(job.id, at(5))
    claim = tick_claim(job, at(1))
    [skipped] = await store.claim_ticks([claim])

    [again] = await store.claim_ticks([claim])
    [other] = await store.claim_ticks([tick_claim(job, at(1))])

    assert skipped.outcome is ClaimOutcome.SKIPPED
    assert again == skipped
    assert other == ClaimResult(outcome=ClaimOutcome.DUPLICATE)


async def test_a_finish_batch_with_one_record_of_another_job_sets_each_stored_job(
    store: MongoStore,
) -> None:
    """The first write is fenced by each execution's job; what it leaves is
    written again unfenced and read back, and the stored job wins."""
    a, b = await store.create_job(make_job("a")), await store.create_job(make_job("b"))
    [ca] = await store.claim_ticks([tick_claim(a, at(1))])
    [cb] = await store.claim_ticks([tick_claim(b, at(1))])
    assert ca.execution is not None and cb.execution is not None
    done_a = dataclasses.replace(ca.execution, status=ExecutionStatus.SUCCESS, finished_at=at(2))
    done_b = dataclasses.replace(
        cb.execution, status=ExecutionStatus.FAILURE, finished_at=at(2), job_id=a.id
    )

    report = await store.finish_executions([done_a, done_b])

    assert report == FinishReport()
    stored_b = await store.get_execution(cb.execution.id)
    assert (stored_b.status, stored_b.job_id) == (ExecutionStatus.FAILURE, b.id)
    assert (await store.get_execution(ca.execution.id)).status is ExecutionStatus.SUCCESS
    assert (await store.get_job(a.id)).last_status is ExecutionStatus.SUCCESS
    assert (await store.get_job(b.id)).last_status is ExecutionStatus.FAILURE


async def test_documents_written_before_rotation_and_attempt_logs_read_as_none(
    store: MongoStore, database: AsyncDatabase[dict[str, Any]]
) -> None:
    job = await store.create_job(make_job())
    [result] = await store.claim_ticks([tick_claim(job, at(1))])
    assert result.execution is not None
    unset = {"$unset": {"previous_secret": "", "previous_secret_expires_at": ""}}
    await database["jobs"].update_one({"_id": job.id}, unset)
    await database["executions"].update_one(
        {"_id": result.execution.id}, {"$unset": {"attempt_log": ""}}
    )

    stored = await database["jobs"].find_one({"_id": job.id})
    assert stored is not None and "previous_secret" not in stored
    assert (await store.get_job(job.id)).previous_secret is None
    assert (await store.get_execution(result.execution.id)).attempt_log == ()


async def test_finish_sets_the_last_run_of_the_stored_records_job(store: MongoStore) -> None:
    job = await store.create_job(make_job())
    [result] = await store.claim_ticks([tick_claim(job, at(1))])
    assert result.execution is not None
    final = dataclasses.replace(
        result.execution, status=ExecutionStatus.SUCCESS, finished_at=at(2), job_id=new_id()
    )

    assert await store.finish_executions([final]) == FinishReport()

    assert (await store.get_job(job.id)).last_status is ExecutionStatus.SUCCESS


def test_repr_and_errors_never_show_a_password() -> None:
    url = "mongodb://admin:s3cr3t%40x@db-1:27017,db-2/cronsvc?tls=true&tlsCertificateKeyFilePassword=pw"

    redacted = redact_url(url)

    assert "s3cr3t" not in redacted and "=pw" not in redacted
    assert redacted == (
        "mongodb://admin:***@db-1:27017,db-2/cronsvc?tls=true&tlsCertificateKeyFilePassword=***"
    )
    assert redact_url("mongodb://127.0.0.1:27017") == "mongodb://127.0.0.1:27017"
    assert redact_url("mongodb://user@host/?authMechanism=MONGODB-X509") == (
        "mongodb://user@host/?authMechanism=MONGODB-X509"
    )


async def test_repr_names_the_url(store: MongoStore, mongo_database_url: str) -> None:
    assert repr(store) == f"MongoStore({mongo_database_url!r})"


async def test_an_unusable_url_raises_config_error_without_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        await MongoStore.open("mongodb://admin:s3cr3t@host:notaport/cronsvc")

    assert "s3cr3t" not in str(caught.value)


@pytest.mark.usefixtures("sweep_cancelled_sockets")
async def test_an_unreachable_server_raises_store_unavailable_promptly() -> None:
    url = f"mongodb://127.0.0.1:{free_port()}/cronsvc?serverSelectionTimeoutMS=300"
    started = time.monotonic()

    with pytest.raises(StoreUnavailable):
        await MongoStore.open(url)

    assert time.monotonic() - started < 5


@pytest.mark.usefixtures("sweep_cancelled_sockets")
async def test_a_server_that_goes_away_makes_every_call_raise_store_unavailable(
    tmp_path: Path,
) -> None:
    server = start_nx_27017(tmp_path / "nx")
    try:
        url = with_database(server.url, "gone") + "?serverSelectionTimeoutMS=300"
        store = await MongoStore.open(url)
        job = await store.create_job(make_job())
    finally:
        server.stop()
    try:
        with pytest.raises(StoreUnavailable):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.get_job(job.id)
        with pytest.raises(StoreUnavailable):
            await store.claim_ticks([tick_claim(job, at(1))])
    finally:
        await store.aclose()
