"""What only the SQLite store does: its file, its schema version, its locking.

The behaviour every store shares is in `test_store_contract.py`; these tests
may look at the file and speak SQL to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest

from cronsvc.alerts import AlertStep, Outcome
from cronsvc.domain import (
    AlertPolicy,
    AttemptRecord,
    ErrorInfo,
    ExecutionStatus,
    Job,
    JobSpec,
    PreviousSecret,
    ScheduleRevision,
    Trigger,
)
from cronsvc.errors import DuplicateJobName, JobNotFound, StoreUnavailable
from cronsvc.ids import new_id
from cronsvc.store import ClaimOutcome, ExecutionQuery, JobQuery, TickClaim
from cronsvc.store.sqlite import MARK_DISPATCHED, MIGRATIONS, SCHEMA_VERSION, SQLiteStore
from tests.helpers_store import T0, at


def make_job(name: str = "job") -> Job:
    return Job(
        id=new_id(),
        spec=JobSpec(
            name=name,
            cron_expression="* * * * *",
            webhook_url="https://example.com/hook",
            secret="webhook-secret",
        ),
        created_at=T0,
        updated_at=T0,
        last_tick=T0,
    )


def tick_claim(job: Job, tick: datetime) -> TickClaim:
    return TickClaim(
        job_id=job.id,
        expected_version=job.version,
        scheduled_at=tick,
        trigger=Trigger.SCHEDULE,
        execution_id=new_id(),
        instance_id="instance-a",
        executed_at=tick,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def contents(path: Path) -> bytes:
    return path.read_bytes()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "cronsvc.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = await SQLiteStore.open(db_path)
    try:
        yield opened
    finally:
        await opened.aclose()


_UNDO = (
    (re.compile(r"ALTER TABLE (\w+) ADD COLUMN (\w+)"), "ALTER TABLE {0} DROP COLUMN {1}"),
    (re.compile(r"CREATE (?:UNIQUE )?INDEX (\w+)"), "DROP INDEX {0}"),
    (re.compile(r"CREATE TABLE (\w+)"), "DROP TABLE {0}"),
    (re.compile(r"CREATE TRIGGER (\w+)"), "DROP TRIGGER {0}"),
    # Rows a migration copies into a table it made go when the table goes.
    (re.compile(r"INSERT INTO (\w+)"), "SELECT 1"),
)


def roll_back_to(path: Path, version: int) -> None:
    """Give a closed store the layout schema `version` had, by undoing the
    migrations after it, newest first: a stand-in for a file an older cronsvc
    wrote, whatever later migrations add."""
    with sqlite3.connect(path) as db:
        for step in range(SCHEMA_VERSION - 1, version - 1, -1):
            for statement in reversed(MIGRATIONS[step]):
                for pattern, undo in _UNDO:
                    if match := pattern.match(statement):
                        db.execute(undo.format(*match.groups()))
                        break
                else:
                    raise AssertionError(f"roll_back_to cannot undo {statement!r}")
        db.execute("UPDATE schema_version SET version = ?", (version,))
    db.close()


def schema_version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        (version,) = db.execute("SELECT version FROM schema_version").fetchone()
    db.close()
    assert isinstance(version, int)
    return version


@contextmanager
def write_lock_held(path: Path) -> Iterator[None]:
    """Another connection holds the database's write lock for the block."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")
    finally:
        other.close()


# Opening


async def test_a_database_written_by_a_newer_schema_version_is_refused(db_path: Path) -> None:
    await (await SQLiteStore.open(db_path)).aclose()
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    db.close()

    with pytest.raises(StoreUnavailable, match="newer"):
        await SQLiteStore.open(db_path)


async def test_a_version_1_database_is_upgraded_and_its_running_runs_count_as_sent(
    db_path: Path,
) -> None:
    store = await SQLiteStore.open(db_path)
    job = await store.create_job(make_job())
    [result] = await store.claim_ticks([tick_claim(job, at(1))])
    assert result.execution is not None
    await store.aclose()
    roll_back_to(db_path, 1)

    store = await SQLiteStore.open(db_path)
    try:
        assert await store.adopt_unsent(live_instances=[], instance_id="new") == []
        lost = await store.mark_lost(live_instances=[], now=at(5), reason="r")
        assert [e.id for e in lost] == [result.execution.id]
        assert (await store.get_job(job.id)).spec == job.spec
    finally:
        await store.aclose()
    assert schema_version(db_path) == SCHEMA_VERSION


async def test_a_version_2_database_is_upgraded_to_keep_replaced_secrets_and_attempt_logs(
    db_path: Path,
) -> None:
    store = await SQLiteStore.open(db_path)
    job = await store.create_job(make_job())
    [result] = await store.claim_ticks([tick_claim(job, at(1))])
    assert result.execution is not None
    done = dataclasses.replace(
        result.execution,
        status=ExecutionStatus.FAILURE,
        finished_at=at(2),
        attempts=1,
        error=ErrorInfo(type="timeout", message="timed out"),
    )
    await store.finish_executions([done])
    await store.aclose()
    roll_back_to(db_path, 2)

    store = await SQLiteStore.open(db_path)
    try:
        assert schema_version(db_path) == SCHEMA_VERSION
        old_job = await store.get_job(job.id)
        assert old_job.spec == job.spec and old_job.previous_secret is None
        old_run = await store.get_execution(done.id)
        assert old_run.attempt_log == () and old_run.error == done.error
        # What the new columns hold is written and read back.
        previous = PreviousSecret(secret="whsec_old", expires_at=at(60))
        updated = await store.update_job(job.id, job.spec, now=at(3), previous_secret=previous)
        assert (await store.get_job(job.id)).previous_secret == previous == updated.previous_secret
        [second] = await store.claim_ticks([tick_claim(updated, at(4))])
        assert second.execution is not None
        attempt = AttemptRecord(attempt=1, started_at=at(4), duration_ms=12, response_status=204)
        finished = dataclasses.replace(
            second.execution,
            status=ExecutionStatus.SUCCESS,
            finished_at=at(5),
            attempts=1,
            response_status=204,
            attempt_log=(attempt,),
        )
        await store.finish_executions([finished])
        assert (await store.get_execution(finished.id)).attempt_log == (attempt,)
    finally:
        await store.aclose()


async def test_a_version_3_database_is_upgraded_to_count_its_jobs_without_a_scan(
    db_path: Path,
) -> None:
    store = await SQLiteStore.open(db_path)
    jobs = [await store.create_job(make_job(f"job {n}")) for n in range(3)]
    await store.aclose()
    roll_back_to(db_path, 3)

    store = await SQLiteStore.open(db_path)
    try:
        assert await store.count_jobs() == 3
        await store.delete_job(jobs[0].id)
        await store.create_job(make_job("another"))
        await store.create_job(make_job("and another"))
        assert await store.count_jobs() == 4
    finally:
        await store.aclose()
    assert schema_version(db_path) == SCHEMA_VERSION


async def test_a_version_4_database_is_upgraded_and_its_jobs_follow_the_default_alert_policy(
    db_path: Path,
) -> None:
    store = await SQLiteStore.open(db_path)
    job = await store.create_job(make_job())
    await store.aclose()
    roll_back_to(db_path, 4)

    store = await SQLiteStore.open(db_path)
    try:
        assert schema_version(db_path) == SCHEMA_VERSION
        old = await store.get_job(job.id)
        assert old.spec.alerts is None and old.spec == job.spec
        # What the new column holds is written and read back.
        alerts = AlertPolicy(url="https://alerts.example.com/", after=2, secret="whsec_x")
        spec = dataclasses.replace(job.spec, alerts=alerts)
        await store.update_job(job.id, spec, now=at(3))
        assert (await store.get_job(job.id)).spec.alerts == alerts
    finally:
        await store.aclose()


async def test_a_version_5_database_is_upgraded_to_keep_alert_states(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    job = await store.create_job(make_job("job"))
    await store.aclose()
    roll_back_to(db_path, 5)

    store = await SQLiteStore.open(db_path)
    try:
        policy = AlertPolicy(url="https://alerts.example/hook")
        outcome = Outcome(job_id=job.id, status=ExecutionStatus.FAILURE, scheduled_at=at(1))
        step = AlertStep(job_id=job.id, policy=policy, outcomes=(outcome,))
        (change,) = await store.apply_alert_outcomes([step], at(1))
        assert (await store.alert_states([job.id]))[job.id] == change.after
    finally:
        await store.aclose()
    assert schema_version(db_path) == SCHEMA_VERSION


async def test_a_version_2_database_is_upgraded_and_its_jobs_get_their_schedule_as_history(
    db_path: Path,
) -> None:
    store = await SQLiteStore.open(db_path)
    job = await store.create_job(make_job())
    spec = dataclasses.replace(job.spec, cron_expression="*/5 * * * *", is_active=False)
    changed = await store.update_job(job.id, spec, now=at(3))
    await store.aclose()
    roll_back_to(db_path, 2)

    store = await SQLiteStore.open(db_path)
    try:
        # Its changes before the upgrade are not known: its schedule as it
        # is now, from its creation on.
        assert await store.schedule_history(job.id) == [
            ScheduleRevision(
                version=2,
                effective_from=T0,
                cron_expression="*/5 * * * *",
                timezone="UTC",
                is_active=False,
            )
        ]
        await store.update_job(job.id, dataclasses.replace(spec, is_active=True), now=at(9))
        assert [r.version for r in await store.schedule_history(job.id)] == [2, 3]
        assert await store.get_job(job.id) == dataclasses.replace(
            changed, version=3, updated_at=at(9), spec=dataclasses.replace(spec, is_active=True)
        )
    finally:
        await store.aclose()
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchone() == (SCHEMA_VERSION,)
    db.close()


NOT_A_DATABASE = b"these are somebody's notes, not a database\n" * 100


@pytest.fixture
def not_a_database(db_path: Path) -> Path:
    db_path.write_bytes(NOT_A_DATABASE)
    db_path.chmod(0o644)
    return db_path


async def test_a_file_that_is_not_a_database_is_refused_and_left_alone(
    not_a_database: Path,
) -> None:
    with pytest.raises(StoreUnavailable):
        await SQLiteStore.open(not_a_database)

    assert contents(not_a_database) == NOT_A_DATABASE
    assert mode(not_a_database) == 0o644


async def test_a_database_of_another_application_is_refused(db_path: Path) -> None:
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY)")
    db.close()

    with pytest.raises(StoreUnavailable, match="not a cronsvc store"):
        await SQLiteStore.open(db_path)


async def test_missing_parent_directories_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "cronsvc.db"

    store = await SQLiteStore.open(path)
    await store.aclose()

    assert path.is_file()


async def test_the_journal_is_wal(store: SQLiteStore, db_path: Path) -> None:
    await store.create_job(make_job())

    with sqlite3.connect(db_path) as db:
        (journal_mode,) = db.execute("PRAGMA journal_mode").fetchone()
    db.close()

    assert journal_mode == "wal"


async def test_data_survives_close_and_reopen(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    job = await store.create_job(make_job())
    [result] = await store.claim_ticks([tick_claim(job, at(1))])
    await store.aclose()

    reopened = await SQLiteStore.open(db_path)
    try:
        got = await reopened.get_job(job.id)
        executions = (await reopened.list_executions(ExecutionQuery())).items
    finally:
        await reopened.aclose()

    assert got == dataclasses.replace(job, last_tick=at(1))
    assert got.spec.secret == "webhook-secret"
    assert executions == [result.execution]


# Seeding many jobs at once


async def test_seeded_jobs_read_back_as_created_ones(store: SQLiteStore, tmp_path: Path) -> None:
    jobs = [make_job(f"job {n}") for n in range(3)]
    jobs = [
        dataclasses.replace(j, spec=dataclasses.replace(j.spec, tags=("seeded",))) for j in jobs
    ]
    created = await SQLiteStore.open(tmp_path / "created.db")
    try:
        for job in jobs:
            await created.create_job(job)
        expected = [
            (await created.get_job(job.id), await created.schedule_history(job.id)) for job in jobs
        ]
        expected_tagged = await created.list_jobs(JobQuery(tag="seeded"))
    finally:
        await created.aclose()

    await store.seed_jobs(jobs)

    got = [(await store.get_job(job.id), await store.schedule_history(job.id)) for job in jobs]
    assert got == expected
    assert await store.list_jobs(JobQuery(tag="seeded")) == expected_tagged
    assert await store.count_jobs() == 3


@pytest.mark.parametrize("clash", ["stored", "in the batch"])
async def test_seeding_a_taken_name_inserts_none_of_the_jobs(
    store: SQLiteStore, clash: str
) -> None:
    if clash == "stored":
        await store.create_job(make_job("taken"))
        jobs = [make_job("free"), make_job("taken")]
    else:
        jobs = [make_job("free"), make_job("taken"), make_job("taken")]

    with pytest.raises(DuplicateJobName) as raised:
        await store.seed_jobs(jobs)

    assert raised.value.name == "taken"
    assert await store.count_jobs() == (1 if clash == "stored" else 0)
    with pytest.raises(JobNotFound):
        await store.get_job(jobs[0].id)


async def test_seeding_refuses_an_id_that_is_not_well_formed(store: SQLiteStore) -> None:
    with pytest.raises(ValueError, match="not well formed"):
        await store.seed_jobs([make_job("a"), dataclasses.replace(make_job("b"), id="bad")])

    assert await store.count_jobs() == 0


# File permissions


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """Under umask 022, SQLite alone would make the file world-readable."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("usual_umask")
async def test_a_new_database_file_is_readable_by_its_owner_only(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    try:
        await store.create_job(make_job())  # the secret now sits in the WAL
        wal = db_path.with_name(db_path.name + "-wal")

        assert mode(db_path) == 0o600
        assert mode(wal) == 0o600
    finally:
        await store.aclose()


@pytest.fixture
def existing_empty_file(db_path: Path) -> Path:
    db_path.touch()
    db_path.chmod(0o640)
    return db_path


@pytest.mark.usefixtures("usual_umask")
async def test_an_existing_files_mode_is_left_alone(existing_empty_file: Path) -> None:
    store = await SQLiteStore.open(existing_empty_file)
    await store.create_job(make_job())
    await store.aclose()

    assert mode(existing_empty_file) == 0o640


# Locking


async def test_a_write_waits_for_the_busy_timeout_then_raises_and_recovers(
    db_path: Path,
) -> None:
    store = await SQLiteStore.open(db_path, busy_timeout_s=0.2)
    try:
        job = await store.create_job(make_job())

        with write_lock_held(db_path):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await store.claim_ticks([tick_claim(job, at(1))])
            waited = time.monotonic() - started
            assert await store.get_job(job.id) == job  # WAL: reads still answer

        [result] = await store.claim_ticks([tick_claim(job, at(1))])
    finally:
        await store.aclose()

    assert 0.15 <= waited < 3.0
    assert result.outcome is ClaimOutcome.CLAIMED  # the failed attempt wrote nothing


# Cancellation


async def test_cancelled_claims_happen_whole_or_not_at_all(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    try:
        jobs = [await store.create_job(make_job(f"job-{i}")) for i in range(3)]
        batches = [[tick_claim(job, at(n)) for job in jobs] for n in (1, 2)]

        with write_lock_held(db_path):
            # The first batch reaches the database thread and waits for the
            # lock there; the second waits behind it in the queue.
            tasks = [asyncio.create_task(store.claim_ticks(batch)) for batch in batches]
            await asyncio.sleep(0.1)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with pytest.raises(asyncio.CancelledError):
                    await task

        await store.ping()  # queued behind whatever is still running: now settled
        executions = (await store.list_executions(ExecutionQuery(limit=100))).items
        last_ticks = {job.last_tick for job in await store.active_jobs()}
        [after] = await store.claim_ticks([tick_claim(jobs[0], at(3))])
    finally:
        await store.aclose()

    written = {e.id for e in executions}
    happened = []
    for batch in batches:
        ids = {claim.execution_id for claim in batch}
        assert written >= ids or not written & ids, "a batch was half applied"
        happened.append(written >= ids)
    assert len(executions) == 3 * sum(happened)
    assert all(e.status is ExecutionStatus.RUNNING for e in executions)
    expected_tick = at(2) if happened[1] else at(1) if happened[0] else T0
    assert last_ticks == {expected_tick}
    assert after.outcome is ClaimOutcome.CLAIMED


async def test_marking_claims_sent_looks_them_up_by_id_whatever_else_is_running(
    db_path: Path,
) -> None:
    # With results unwritten, RUNNING records pile up; a mark that walked them
    # (the planner's pick on the RUNNING-only indexes) slowed with the pile
    # until it held the store for good. It must go by id. Planned as a
    # running service plans it: before any ANALYZE (the store runs one at close).
    store = await SQLiteStore.open(db_path)
    try:
        job = make_job()
        await store.create_job(job)
        await store.claim_ticks([tick_claim(job, at(n)) for n in range(1, 50)])
        with contextlib.closing(sqlite3.connect(db_path)) as db:
            plan = [
                row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {MARK_DISPATCHED}", ("i", "[]"))
            ]
    finally:
        await store.aclose()

    executions = [step for step in plan if re.match(r"(SEARCH|SCAN) (executions|e)\b", step)]
    assert executions == [
        "SEARCH executions USING INTEGER PRIMARY KEY (rowid=?)",
        "SEARCH e USING INDEX sqlite_autoindex_executions_1 (id=?)",
    ], plan


async def log_size_after(db_path: Path, rounds: int, per_round: int, *, results: bool) -> int:
    """Bytes of the write-ahead log file after `rounds` rounds of claims and
    (with `results`) their results written; the file grows to the most the
    log ever held, since it starts over from its beginning after a copy."""
    store = await SQLiteStore.open(db_path)
    try:
        job = make_job()
        await store.create_job(job)
        for n in range(rounds):
            claims = [tick_claim(job, at(n * per_round + k)) for k in range(per_round)]
            claimed = await store.claim_ticks(claims)
            if results:
                await store.finish_executions(
                    [
                        dataclasses.replace(
                            c.execution, status=ExecutionStatus.SUCCESS, finished_at=at(1e5)
                        )
                        for c in claimed
                        if c.execution is not None
                    ]
                )
        return Path(f"{db_path}-wal").stat().st_size  # noqa: ASYNC240 - a local stat
    finally:
        await store.aclose()


async def test_the_log_is_copied_into_the_file_after_results_and_not_on_claims(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copying the write-ahead log into the file (a checkpoint, with its
    fsync) follows a result write, which no tick waits for; SQLite's own
    trigger (1000 pages by default), which could land on a claim or a
    dispatched mark just before a tick, is pushed far off."""
    monkeypatch.setattr("cronsvc.store.sqlite.CHECKPOINT_EVERY_S", 0.0)

    with_results = await log_size_after(tmp_path / "a.db", 40, 100, results=True)
    claims_only = await log_size_after(tmp_path / "b.db", 40, 100, results=False)

    page = 4096
    assert with_results < 300 * page, "copied after each round's results"
    assert claims_only > 1200 * page, "4000 claims and no copy, past SQLite's default trigger"
