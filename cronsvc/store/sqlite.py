"""The SQLite backend of `Store`: one file, one connection, WAL journal.

Instants are integer Unix milliseconds; `headers`, `body`, `tags`,
`attempt_log` and `alerts` are JSON text (a JSON `body` keeps the string
`"{}"` apart from the object `{}`). Tags are also in `job_tags`, indexed.

The connection lives on one worker thread; each public method is one hop to
it, a `_do_*` function whose writes are one BEGIN IMMEDIATE transaction. The
single worker serialises the calls, so no lock is needed. Cancelling a caller
never cancels SQL half way: a started call runs to completion, a queued one is
dropped. `prune_executions` hops once per batch, so claims are not held up.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

from cronsvc.alerts import NO_STATE, AlertChange, AlertState, AlertStep, apply_outcomes
from cronsvc.domain import (
    ConcurrencyPolicy,
    ErrorInfo,
    Execution,
    ExecutionStatus,
    HttpMethod,
    Job,
    JobSpec,
    MisfirePolicy,
    PreviousSecret,
    ScheduleRevision,
    Trigger,
)
from cronsvc.errors import (
    DuplicateJobName,
    ExecutionNotFound,
    JobNotFound,
    StoreUnavailable,
    VersionConflict,
)
from cronsvc.ids import is_valid_id
from cronsvc.store import (
    KEEP,
    MAX_SCHEDULE_REVISIONS,
    ActiveSchedule,
    ClaimResult,
    ExecutionQuery,
    FinishReport,
    JobQuery,
    Keep,
    Page,
    SchedulePage,
    TickClaim,
)
from cronsvc.store.common import (
    STALE,
    TICK_SLOT,
    CheckedClaim,
    ClaimDecision,
    ClaimJob,
    StoredClaims,
    alerts_document,
    alerts_from_document,
    attempt_documents,
    attempts_from_documents,
    cached_instant,
    check_claims,
    check_importable,
    check_limit,
    check_seeded,
    decide_claims,
    decode_execution_cursor,
    decode_job_cursor,
    encode_cursor,
    from_unix_ms,
    inserted_dispatched,
    json_text,
    missed_tick_record,
    opt_from_unix_ms,
    opt_unix_ms,
    prefix_upper_bound,
    replaced_message,
    shared_headers,
    shared_retry,
    shared_text,
    state_document,
    state_from_document,
    tick_slot,
    unix_ms,
    watched_jobs,
)

SCHEMA_VERSION = 6
_MIN_SQLITE = (3, 35, 0)  # RETURNING
_BUSY_TIMEOUT_S = 5.0
_PRUNE_BATCH = 5000

_CREATE_SCHEDULE_REVISIONS = """CREATE TABLE schedule_revisions (
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        effective_from INTEGER NOT NULL,
        cron_expression TEXT NOT NULL,
        timezone TEXT NOT NULL,
        is_active INTEGER NOT NULL,
        PRIMARY KEY (job_id, version)
    ) WITHOUT ROWID"""

# A job without a row has never alerted.
_CREATE_ALERT_STATES = """CREATE TABLE alert_states (
        job_id TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        state TEXT NOT NULL
    ) WITHOUT ROWID"""

_JOB_COUNT = (
    "CREATE TABLE job_count (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL)",
    """CREATE TRIGGER jobs_counted_in AFTER INSERT ON jobs
        BEGIN UPDATE job_count SET n = n + 1 WHERE id = 1; END""",
    """CREATE TRIGGER jobs_counted_out AFTER DELETE ON jobs
        BEGIN UPDATE job_count SET n = n - 1 WHERE id = 1; END""",
)

# A fresh store's columns; every statement takes their names from here.
_JOBS_TABLE = (
    "id TEXT PRIMARY KEY",
    "name TEXT NOT NULL UNIQUE",
    "cron_expression TEXT NOT NULL",
    "timezone TEXT NOT NULL",
    "webhook_url TEXT NOT NULL",
    "http_method TEXT NOT NULL",
    "headers TEXT NOT NULL",
    "body TEXT",
    "timeout_seconds REAL NOT NULL",
    "retry_max_attempts INTEGER NOT NULL",
    "retry_backoff_seconds REAL NOT NULL",
    "retry_max_backoff_seconds REAL NOT NULL",
    "concurrency_policy TEXT NOT NULL",
    "misfire_policy TEXT NOT NULL",
    "misfire_grace_seconds INTEGER NOT NULL",
    "is_active INTEGER NOT NULL",
    "secret TEXT",
    "tags TEXT NOT NULL",
    "version INTEGER NOT NULL",
    "created_at INTEGER NOT NULL",
    "updated_at INTEGER NOT NULL",
    "last_tick INTEGER NOT NULL",
    "last_run_at INTEGER",
    "last_status TEXT",
    "paused_reason TEXT",
    "deferred_until INTEGER",
    "previous_secret TEXT",
    "previous_secret_expires_at INTEGER",
    "alerts TEXT",
)
_EXECUTIONS_TABLE = (
    "id TEXT PRIMARY KEY",
    "job_id TEXT NOT NULL",
    "job_name TEXT NOT NULL",
    "trigger TEXT NOT NULL",
    "scheduled_at INTEGER NOT NULL",
    "status TEXT NOT NULL",
    "instance_id TEXT NOT NULL",
    "executed_at INTEGER",
    "finished_at INTEGER",
    "duration_ms INTEGER",
    "attempts INTEGER NOT NULL",
    "response_status INTEGER",
    "response_body TEXT",
    "response_truncated INTEGER NOT NULL",
    "error_type TEXT",
    "error_message TEXT",
    "slot TEXT NOT NULL",
    "dispatched INTEGER NOT NULL DEFAULT 1",
    "attempt_log TEXT",
)

_SCHEMA = (
    """CREATE TABLE schema_version (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL
    )""",
    f"CREATE TABLE jobs ({', '.join(_JOBS_TABLE)})",
    "CREATE INDEX jobs_by_active ON jobs (is_active, id)",
    """CREATE TABLE job_tags (
        tag TEXT NOT NULL,
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        PRIMARY KEY (tag, job_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX job_tags_by_job ON job_tags (job_id)",
    # No foreign key to jobs: execution logs outlive their job.
    f"""CREATE TABLE executions ({", ".join(_EXECUTIONS_TABLE)},
        UNIQUE (job_id, scheduled_at, slot))""",
    "CREATE INDEX executions_newest ON executions (scheduled_at DESC, id DESC)",
    "CREATE INDEX executions_by_job ON executions (job_id, scheduled_at DESC, id DESC)",
    "CREATE INDEX executions_by_status ON executions (status, scheduled_at DESC, id DESC)",
    # Partial indexes: only used by statements that spell `status = 'RUNNING'` literally.
    "CREATE INDEX executions_running_by_job ON executions (job_id) WHERE status = 'RUNNING'",
    """CREATE INDEX executions_running_by_instance ON executions (instance_id)
        WHERE status = 'RUNNING'""",
    _CREATE_SCHEDULE_REVISIONS,
    *_JOB_COUNT,
    "INSERT INTO job_count (id, n) VALUES (1, 0)",
    _CREATE_ALERT_STATES,
)

MIGRATIONS: dict[int, tuple[str, ...]] = {
    # Runs recorded before `dispatched` existed count as sent: a reaper marks
    # them LOST, never re-sends.
    1: ("ALTER TABLE executions ADD COLUMN dispatched INTEGER NOT NULL DEFAULT 1",),
    2: (
        "ALTER TABLE jobs ADD COLUMN paused_reason TEXT",
        "ALTER TABLE jobs ADD COLUMN deferred_until INTEGER",
        "ALTER TABLE jobs ADD COLUMN previous_secret TEXT",
        "ALTER TABLE jobs ADD COLUMN previous_secret_expires_at INTEGER",
        "ALTER TABLE executions ADD COLUMN attempt_log TEXT",
        # Earlier changes of schedule are not known: the ledger takes the
        # schedule as it is now, since the job was created, as the whole story.
        _CREATE_SCHEDULE_REVISIONS,
        """INSERT INTO schedule_revisions
            (job_id, version, effective_from, cron_expression, timezone, is_active)
            SELECT id, version, created_at, cron_expression, timezone, is_active FROM jobs""",
    ),
    # Kept by triggers: every create checks the count, and COUNT(*) costs O(N).
    3: (*_JOB_COUNT, "INSERT INTO job_count (id, n) SELECT 1, COUNT(*) FROM jobs"),
    4: ("ALTER TABLE jobs ADD COLUMN alerts TEXT",),
    5: (_CREATE_ALERT_STATES,),
}
"""The entry at key n takes an older store's schema version n to n + 1; a
fresh store is made from `_SCHEMA`, which holds them all. Public so that a
test can give a file the layout an older version wrote."""

_TABLES = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
_JOB_COLUMNS = tuple(column.split()[0] for column in _JOBS_TABLE)
_SELECT_JOBS = f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs"
_GET_JOB = f"{_SELECT_JOBS} WHERE id = ?"
_ACTIVE_JOBS = f"{_SELECT_JOBS} WHERE is_active = 1"
_ACTIVE_JOBS_IN = f"{_ACTIVE_JOBS} AND id IN (SELECT value FROM json_each(?))"
_ACTIVE_VERSIONS = "SELECT id, version FROM jobs WHERE is_active = 1"
_ACTIVE_VERSIONS_PAGE = f"{_ACTIVE_VERSIONS} AND id > ? ORDER BY id LIMIT ?"
# A keyset page on the (is_active, id) index; '' sorts before every id.
_ACTIVE_SCHEDULES = f"""SELECT {", ".join(ActiveSchedule._fields)}
    FROM jobs WHERE is_active = 1 AND id > ? ORDER BY id LIMIT ?"""
_CURRENT_VERSIONS = f"{_ACTIVE_VERSIONS} AND id IN (SELECT value FROM json_each(?))"
_INSERT_JOB = (
    f"INSERT INTO jobs ({', '.join(_JOB_COLUMNS)}) VALUES ({', '.join('?' * len(_JOB_COLUMNS))})"
)
_UPDATE_JOB = f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in _JOB_COLUMNS[1:])} WHERE id = ?"
_DELETE_JOB = "DELETE FROM jobs WHERE id = ?"
_NAME_TAKEN = "SELECT name FROM jobs WHERE name IN (SELECT value FROM json_each(?)) LIMIT 1"
_PAUSE_JOB = """UPDATE jobs SET is_active = 0, paused_reason = ?, version = version + 1,
    updated_at = ? WHERE id = ? AND version = ? AND is_active = 1"""
_DEFER_JOB = """UPDATE jobs SET deferred_until = MAX(COALESCE(deferred_until, ?1), ?1)
    WHERE id = ?2"""
_COUNT_JOBS = "SELECT n FROM job_count WHERE id = 1"
_INSERT_REVISION = """INSERT INTO schedule_revisions
    (job_id, version, effective_from, cron_expression, timezone, is_active)
    VALUES (?, ?, ?, ?, ?, ?)"""
# ?1 = job id, ?2 = how many revisions to keep.
_TRIM_REVISIONS = """DELETE FROM schedule_revisions WHERE job_id = ?1 AND version <= (
    SELECT version FROM schedule_revisions WHERE job_id = ?1
    ORDER BY version DESC LIMIT 1 OFFSET ?2)"""
_SELECT_REVISIONS = """SELECT version, effective_from, cron_expression, timezone, is_active
    FROM schedule_revisions WHERE job_id = ? ORDER BY version"""
_INSERT_TAG = "INSERT OR IGNORE INTO job_tags (tag, job_id) VALUES (?, ?)"
_DELETE_TAGS = "DELETE FROM job_tags WHERE job_id = ?"
_ADVANCE_LAST_TICK = "UPDATE jobs SET last_tick = ?1 WHERE id = ?2 AND last_tick < ?1"
_SET_LAST_RUN = """UPDATE jobs SET last_run_at = COALESCE(?1, last_run_at), last_status = ?2
    WHERE id = (SELECT job_id FROM executions WHERE id = ?3)
    AND (last_run_at IS NULL OR ?1 IS NULL OR last_run_at <= ?1)"""

# An `Execution`'s columns; `slot` and `dispatched` are the store's own.
_EXECUTION_COLUMNS = tuple(
    name
    for name in (column.split()[0] for column in _EXECUTIONS_TABLE)
    if name not in ("slot", "dispatched")
)
_RETURNED_EXECUTION = ", ".join(_EXECUTION_COLUMNS)
_SELECT_EXECUTIONS = f"SELECT {_RETURNED_EXECUTION} FROM executions"
_GET_EXECUTION = f"{_SELECT_EXECUTIONS} WHERE id = ?"
_INSERT_EXECUTION = (
    f"INSERT INTO executions ({_RETURNED_EXECUTION}, slot, dispatched) "
    f"VALUES ({', '.join('?' * (len(_EXECUTION_COLUMNS) + 2))})"
)
_INSERT_EXECUTION_IF_NEW = (
    f"{_INSERT_EXECUTION} ON CONFLICT (job_id, scheduled_at, slot) DO NOTHING"
)
# Any unique key taken (the id, the tick key) leaves the record out.
_IMPORT_EXECUTION = f"{_INSERT_EXECUTION} ON CONFLICT DO NOTHING"
_CLAIM_JOBS = """SELECT j.id, j.version, j.is_active, j.name, j.concurrency_policy,
    j.deferred_until FROM json_each(?) AS k CROSS JOIN jobs AS j WHERE j.id = k.value"""
_RUNNING_OF_JOBS = """SELECT e.job_id, e.id FROM json_each(?) AS k
    CROSS JOIN executions AS e WHERE e.job_id = k.value AND e.status = 'RUNNING'"""
# Ends a RUNNING execution that a `replace` claim supersedes.
# ?1 = finished_at (ms), ?2 = message, ?3 = execution id.
_REPLACE_EXECUTION = """UPDATE executions SET status = 'FAILURE', finished_at = ?1,
    duration_ms = CASE WHEN executed_at IS NULL THEN NULL ELSE MAX(0, ?1 - executed_at) END,
    error_type = 'replaced', error_message = ?2
    WHERE id = ?3 AND status = 'RUNNING'"""
# Argument: [[job_id, scheduled_at, slot], ...]; answers the keys that exist.
_TAKEN_KEYS = """SELECT e.job_id, e.scheduled_at, e.slot FROM json_each(?) AS k
    CROSS JOIN executions AS e
    WHERE e.job_id = json_extract(k.value, '$[0]')
    AND e.scheduled_at = json_extract(k.value, '$[1]')
    AND e.slot = json_extract(k.value, '$[2]')"""
_MISSED_JOB = "SELECT version, is_active FROM jobs WHERE id = ?"
_FINAL_STATE = slice(5, len(_EXECUTION_COLUMNS))
"""The columns a result writes, from `status` on."""
_FINISH_EXECUTION = (
    f"UPDATE executions SET {', '.join(f'{c} = ?' for c in _EXECUTION_COLUMNS[_FINAL_STATE])} "
    "WHERE id = ? AND status = 'RUNNING'"
)
_FINISHED_STATE = (
    f"SELECT {', '.join(_EXECUTION_COLUMNS[_FINAL_STATE])} FROM executions WHERE id = ?"
)
_DELETE_EXECUTION = "DELETE FROM executions WHERE id = ?"
_MARK_LOST = f"""UPDATE executions SET status = 'LOST', finished_at = ?, error_type = 'lost',
    error_message = ?
    WHERE status = 'RUNNING' AND dispatched = 1
    AND instance_id NOT IN (SELECT value FROM json_each(?))
    RETURNING {_RETURNED_EXECUTION}"""
MARK_DISPATCHED = """UPDATE executions SET dispatched = 1
    WHERE rowid IN (SELECT e.rowid FROM json_each(?2) AS k CROSS JOIN executions AS e
        WHERE e.id = k.value AND e.instance_id = ?1 AND e.status = 'RUNNING')
    RETURNING id"""
"""Public so that a test can check how SQLite plans it. Driven from the ids
(CROSS JOIN fixes the order), so a mark costs the same at any backlog: left
to itself the planner walked every RUNNING record of the instance, which
grew with unwritten results until marks held the worker for good."""
_ADOPT_UNSENT = f"""UPDATE executions SET instance_id = ?1
    WHERE status = 'RUNNING' AND dispatched = 0
    AND instance_id NOT IN (SELECT value FROM json_each(?2))
    RETURNING {_RETURNED_EXECUTION}"""
# In batches, so a large prune never holds the write lock for long.
_PRUNE = """DELETE FROM executions WHERE rowid IN (
    SELECT rowid FROM executions WHERE scheduled_at < ? AND status != 'RUNNING' LIMIT ?)"""

_JOB_EXISTS = "SELECT 1 FROM jobs WHERE id = ?"
_GET_ALERT_STATE = "SELECT version, state FROM alert_states WHERE job_id = ?"
_PUT_ALERT_STATE = """INSERT INTO alert_states (job_id, version, state) VALUES (?1, ?2, ?3)
    ON CONFLICT (job_id) DO UPDATE SET version = ?2, state = ?3"""
_ALERT_STATES_IN = """SELECT job_id, version, state FROM alert_states
    WHERE job_id IN (SELECT value FROM json_each(?))"""

# Primary result codes that mean the database cannot serve us right now.
_UNAVAILABLE_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_NOTADB,
    }
)

CHECKPOINT_EVERY_S = 2.0
"""The write-ahead log is copied into the file at most this often, after a
write of results, which no tick waits for; left to SQLite, the copy fell on
whichever write crossed the line, at times a tick's mark (BENCHMARKS.md)."""
WAL_AUTOCHECKPOINT_PAGES = 20_000
"""SQLite's own trigger, a backstop should results stop being written."""

_Row = Sequence[Any]
_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")
_CONCURRENCY_POLICIES = {policy.value: policy for policy in ConcurrencyPolicy}
_MISFIRE_POLICIES = {policy.value: policy for policy in MisfirePolicy}


class SQLiteStore:
    """`Store` on one SQLite file; open with `await SQLiteStore.open(path)`."""

    def __init__(self, db: sqlite3.Connection, path: Path, executor: ThreadPoolExecutor) -> None:
        self._db: sqlite3.Connection | None = db
        """Touched only on the worker thread (None once closed)."""
        self._path = path
        self._executor = executor
        self._closed = False
        self._checkpointed = time.monotonic()
        self._answered = 0

    @classmethod
    async def open(cls, path: Path, *, busy_timeout_s: float = _BUSY_TIMEOUT_S) -> SQLiteStore:
        """Open (creating file, directories and schema as needed). A write that
        waits longer than `busy_timeout_s` for another connection's lock raises
        `StoreUnavailable`."""
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise StoreUnavailable(
                f"SQLite {sqlite3.sqlite_version} is too old for the store; "
                f"{'.'.join(map(str, _MIN_SQLITE))} or newer is needed"
            )
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cronsvc-sqlite")
        opening = executor.submit(_connect, path, busy_timeout_s)
        try:
            db = await asyncio.wrap_future(opening)
        except BaseException:
            # Failed, or cancelled while connecting: close the connection if it is made.
            opening.add_done_callback(_close_opened)
            executor.shutdown(wait=False)
            raise
        return cls(db, path, executor)

    async def _run(self, fn: Callable[[sqlite3.Connection, *_Ts], _T], *args: *_Ts) -> _T:
        """Run `fn(db, *args)` on the worker thread: the one hop of a call."""
        self._check_open()
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(self._executor, self._on_worker, fn, *args)
        self._answered += 1
        return answer

    @property
    def answered(self) -> int:
        return self._answered

    def _on_worker(self, fn: Callable[[sqlite3.Connection, *_Ts], _T], *args: *_Ts) -> _T:
        db = self._db
        if db is None:
            raise StoreUnavailable(f"the store on {self._path} is closed")
        with _unavailable_on_db_errors(self._path):
            return fn(db, *args)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable(f"the store on {self._path} is closed")

    async def create_job(self, job: Job) -> Job:
        return await self._run(_do_create_job, job)

    async def seed_jobs(self, jobs: Sequence[Job]) -> None:
        """`create_job` for many jobs in one transaction, to fill a store
        (benchmarks, tests); not part of `Store`. Raises `ValueError` for an id
        not well formed and `DuplicateJobName` for a name taken (by a stored
        job or another of `jobs`), inserting none of them."""
        await self._run(_do_seed_jobs, list(jobs))

    async def get_job(self, job_id: str) -> Job:
        return await self._run(_do_get_job, job_id)

    async def update_job(
        self,
        job_id: str,
        spec: JobSpec,
        *,
        now: datetime,
        expected_version: int | None = None,
        restart_schedule: bool = False,
        previous_secret: PreviousSecret | Keep | None = KEEP,
    ) -> Job:
        return await self._run(
            _do_update_job, job_id, spec, now, expected_version, restart_schedule, previous_secret
        )

    async def pause_job(
        self, job_id: str, *, expected_version: int, reason: str, now: datetime
    ) -> Job | None:
        if not is_valid_id(job_id):
            return None
        return await self._run(_do_pause_job, job_id, expected_version, reason, now)

    async def defer_job(self, job_id: str, until: datetime) -> None:
        await self._run(_write, _DEFER_JOB, (unix_ms(until), job_id))

    async def delete_job(self, job_id: str) -> None:
        if not await self._run(_delete, _DELETE_JOB, job_id):  # tags go by cascade
            raise JobNotFound(job_id)

    async def schedule_history(self, job_id: str) -> list[ScheduleRevision]:
        return await self._run(_do_schedule_history, job_id)

    async def list_jobs(self, query: JobQuery) -> Page[Job]:
        return await self._run(_do_list_jobs, query)

    async def active_jobs(self, job_ids: Collection[str] | None = None) -> list[Job]:
        if job_ids is None:
            return await self._run(_fetch_jobs, _ACTIVE_JOBS, ())
        ids = json_text([i for i in job_ids if is_valid_id(i)])
        return await self._run(_fetch_jobs, _ACTIVE_JOBS_IN, (ids,))

    async def active_versions(
        self, after: str | None = None, limit: int | None = None
    ) -> dict[str, int]:
        if limit is None:
            return await self._run(_fetch_dict, _ACTIVE_VERSIONS, ())
        check_limit(limit)
        return await self._run(_fetch_dict, _ACTIVE_VERSIONS_PAGE, (after or "", limit))

    async def active_schedules(
        self,
        after: str | None = None,
        limit: int = 20_000,
        *,
        keep: Callable[[str], bool] | None = None,
    ) -> SchedulePage:
        check_limit(limit)
        return await self._run(_do_active_schedules, after or "", limit, keep)

    async def count_jobs(self) -> int:
        count: int = (await self._run(_fetch_all, _COUNT_JOBS, ()))[0][0]
        return count

    async def current_versions(self, job_ids: Collection[str]) -> dict[str, int]:
        if not job_ids:
            self._check_open()
            return {}
        ids = json_text([i for i in job_ids if is_valid_id(i)])
        return await self._run(_fetch_dict, _CURRENT_VERSIONS, (ids,))

    async def claim_ticks(self, claims: Sequence[TickClaim]) -> list[ClaimResult]:
        if not claims:
            self._check_open()
            return []
        return await self._run(_do_claim_ticks, list(claims))

    async def record_missed(
        self,
        job: Job,
        ticks: Sequence[datetime],
        *,
        instance_id: str,
        now: datetime,
        reason: str,
    ) -> int:
        if not ticks:
            self._check_open()
            return 0
        return await self._run(_do_record_missed, job, list(ticks), instance_id, now, reason)

    async def finish_executions(self, executions: Sequence[Execution]) -> FinishReport:
        if not executions:
            return FinishReport()
        report = await self._run(_do_finish_executions, list(executions))
        if time.monotonic() - self._checkpointed >= CHECKPOINT_EVERY_S:
            self._checkpointed = time.monotonic()
            # As far as no reader holds it back; the log starts over at the next write.
            await self._run(_fetch_all, "PRAGMA wal_checkpoint(PASSIVE)", ())
        return report

    async def import_executions(self, executions: Sequence[Execution]) -> list[str]:
        check_importable(executions)
        return await self._run(_do_import_executions, list(executions))

    async def get_execution(self, execution_id: str) -> Execution:
        return await self._run(_do_get_execution, execution_id)

    async def delete_execution(self, execution_id: str) -> None:
        if not await self._run(_delete, _DELETE_EXECUTION, execution_id):
            raise ExecutionNotFound(execution_id)

    async def list_executions(self, query: ExecutionQuery) -> Page[Execution]:
        return await self._run(_do_list_executions, query)

    async def mark_dispatched(self, instance_id: str, execution_ids: Collection[str]) -> set[str]:
        if not execution_ids:
            return set()
        ids = json.dumps(list(execution_ids))
        rows = await self._run(_write_returning, MARK_DISPATCHED, (instance_id, ids))
        return {row[0] for row in rows}

    async def adopt_unsent(
        self, *, live_instances: Collection[str], instance_id: str
    ) -> list[Execution]:
        live = json.dumps(list(live_instances))
        rows = await self._run(_write_returning, _ADOPT_UNSENT, (instance_id, live))
        executions = [_execution_from_row(row) for row in rows]
        return sorted(executions, key=lambda execution: (execution.scheduled_at, execution.id))

    async def mark_lost(
        self, *, live_instances: Collection[str], now: datetime, reason: str
    ) -> list[Execution]:
        params = (unix_ms(now), reason, json.dumps(list(live_instances)))
        rows = await self._run(_write_returning, _MARK_LOST, params)
        return [_execution_from_row(row) for row in rows]

    async def prune_executions(self, older_than: datetime) -> int:
        # One hop per batch (not one for the lot), so other calls get in between.
        bound = unix_ms(older_than)
        deleted = 0
        while True:
            count = await self._run(_write, _PRUNE, (bound, _PRUNE_BATCH))
            deleted += count
            if count < _PRUNE_BATCH:
                return deleted

    async def apply_alert_outcomes(
        self, steps: Sequence[AlertStep], now: datetime
    ) -> list[AlertChange]:
        return await self._run(_do_apply_alert_outcomes, list(steps), now)

    async def alert_states(self, job_ids: Collection[str]) -> dict[str, AlertState]:
        ids = list(job_ids)
        return await self._run(_do_alert_states, ids) if ids else {}

    async def ping(self) -> None:
        await self._run(_fetch_all, "SELECT 1", ())

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True  # from here on no call reaches the worker
        closing = asyncio.wrap_future(self._executor.submit(self._close_on_worker))
        # The worker finishes what is queued, the close last, then exits.
        self._executor.shutdown(wait=False)
        await asyncio.shield(closing)  # a cancelled aclose still closes

    def _close_on_worker(self) -> None:
        db, self._db = self._db, None
        if db is None:
            return
        try:
            with _unavailable_on_db_errors(self._path):
                db.execute("PRAGMA optimize")
        finally:
            db.close()


# Everything below runs on the worker thread.


def _connect(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreUnavailable(f"cannot create the directory for {path}: {e}") from e
    if str(path) != ":memory:":
        _create_private(path)
    with _unavailable_on_db_errors(path):
        db = sqlite3.connect(
            path,
            timeout=busy_timeout_s,
            isolation_level=None,  # no implicit transactions: BEGIN and COMMIT are ours
            check_same_thread=False,  # made here, used by this worker thread only
            cached_statements=256,
        )
        try:
            _prepare(db, path)
        except BaseException:
            db.close()
            raise
    return db


def _create_private(path: Path) -> None:
    """A new database file is readable by its owner only: it holds webhook
    secrets (SQLite gives the -wal and -shm files the same mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as e:
        raise StoreUnavailable(f"cannot create {path}: {e}") from e
    os.close(fd)


def _close_opened(opening: Future[sqlite3.Connection]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def _prepare(db: sqlite3.Connection, path: Path) -> None:
    # Pragmas cannot change inside a transaction.
    db.execute("PRAGMA journal_mode = WAL").fetchall()
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
    db.execute("PRAGMA foreign_keys = ON")
    with _transaction(db):
        tables = {row[0] for row in db.execute(_TABLES)}
        if "schema_version" not in tables:
            if tables:
                raise StoreUnavailable(
                    f"{path} holds tables but no schema_version: it is not a cronsvc store"
                )
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute("INSERT INTO schema_version (id, version) VALUES (1, ?)", (SCHEMA_VERSION,))
            return
        row = db.execute("SELECT version FROM schema_version WHERE id = 1").fetchone()
        if row is None:
            raise StoreUnavailable(f"{path}: schema_version is empty")
        version = row[0]
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"{path} has store schema version {version}, written by a newer "
                f"cronsvc; this one knows versions up to {SCHEMA_VERSION}: upgrade cronsvc"
            )
        if not isinstance(version, int) or version not in MIGRATIONS:
            if version == SCHEMA_VERSION:
                return
            raise StoreUnavailable(f"{path} has unknown store schema version {version!r}")
        for step in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[step]:
                db.execute(statement)
        db.execute("UPDATE schema_version SET version = ? WHERE id = 1", (SCHEMA_VERSION,))


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # some errors (SQLITE_FULL, IOERR) already rolled it back
            db.execute("ROLLBACK")
        raise


def _do_create_job(db: sqlite3.Connection, job: Job) -> Job:
    _do_seed_jobs(db, [job])
    return _job_from_row(_job_row(job))


def _do_seed_jobs(db: sqlite3.Connection, jobs: list[Job]) -> None:
    check_seeded(jobs)
    try:
        with _transaction(db):
            db.executemany(_INSERT_JOB, [_job_row(job) for job in jobs])
            db.executemany(_INSERT_TAG, [row for job in jobs for row in _tag_rows(job)])
            db.executemany(_INSERT_REVISION, [_revision_row(job, job.last_tick) for job in jobs])
    except sqlite3.IntegrityError as e:
        if "jobs.name" not in str(e):
            raise
        # Rolled back: the name is a stored job's (the batch's own are distinct).
        taken = db.execute(_NAME_TAKEN, (json_text([job.spec.name for job in jobs]),)).fetchone()
        if taken is None:
            raise
        raise DuplicateJobName(taken[0]) from None


def _do_apply_alert_outcomes(
    db: sqlite3.Connection, steps: list[AlertStep], now: datetime
) -> list[AlertChange]:
    # The write transaction makes this the only writer: no other caller can
    # change a state between its read and its write.
    changes: list[AlertChange] = []
    with _transaction(db):
        for step in steps:
            if db.execute(_JOB_EXISTS, (step.job_id,)).fetchone() is None:
                continue
            row = db.execute(_GET_ALERT_STATE, (step.job_id,)).fetchone()
            state = NO_STATE if row is None else state_from_document(json.loads(row[1]), row[0])
            new, effected = apply_outcomes(state, step, now)
            if new is not state:
                document = json_text(state_document(new))
                db.execute(_PUT_ALERT_STATE, (step.job_id, new.version, document))
            changes.extend(effected)  # with no write: a lost write's alerts, told again
    return changes


def _do_alert_states(db: sqlite3.Connection, job_ids: list[str]) -> dict[str, AlertState]:
    return {
        job_id: state_from_document(json.loads(text), version)
        for job_id, version, text in db.execute(_ALERT_STATES_IN, (json_text(job_ids),))
    }


def _do_get_job(db: sqlite3.Connection, job_id: str) -> Job:
    row = db.execute(_GET_JOB, (job_id,)).fetchone() if is_valid_id(job_id) else None
    if row is None:
        raise JobNotFound(job_id)
    return _job_from_row(row)


def _do_update_job(
    db: sqlite3.Connection,
    job_id: str,
    spec: JobSpec,
    now: datetime,
    expected_version: int | None,
    restart_schedule: bool,
    previous_secret: PreviousSecret | Keep | None,
) -> Job:
    if not is_valid_id(job_id):
        raise JobNotFound(job_id)
    with _transaction(db):
        current = _do_get_job(db, job_id)
        if expected_version is not None and expected_version != current.version:
            raise VersionConflict(job_id, expected_version, current.version)
        updated = replace(
            current,
            spec=spec,
            version=current.version + 1,
            updated_at=now,
            last_tick=now if restart_schedule else current.last_tick,
            paused_reason=None,
            deferred_until=None,
            previous_secret=(
                current.previous_secret if isinstance(previous_secret, Keep) else previous_secret
            ),
        )
        row = _job_row(updated)
        try:
            db.execute(_UPDATE_JOB, (*row[1:], row[0]))
        except sqlite3.IntegrityError as e:
            if "jobs.name" in str(e):
                raise DuplicateJobName(spec.name) from None
            raise
        if tuple(spec.tags) != current.spec.tags:
            db.execute(_DELETE_TAGS, (job_id,))
            db.executemany(_INSERT_TAG, _tag_rows(updated))
        if _schedule(current.spec) != _schedule(spec):
            db.execute(_INSERT_REVISION, _revision_row(updated, now))
            db.execute(_TRIM_REVISIONS, (job_id, MAX_SCHEDULE_REVISIONS))
    return _job_from_row(row)


def _do_schedule_history(db: sqlite3.Connection, job_id: str) -> list[ScheduleRevision]:
    job = _do_get_job(db, job_id)
    # A job stored before the history has one revision: its schedule now, since it was created.
    rows = db.execute(_SELECT_REVISIONS, (job_id,)).fetchall()
    return [
        ScheduleRevision(
            version=row[0],
            effective_from=from_unix_ms(row[1]),
            cron_expression=row[2],
            timezone=row[3],
            is_active=bool(row[4]),
        )
        for row in rows or [_revision_row(job, job.created_at)[1:]]
    ]


def _do_list_jobs(db: sqlite3.Connection, query: JobQuery) -> Page[Job]:
    check_limit(query.limit)
    prefix = query.name_prefix or None
    filters = {
        "is_active = ?": None if query.is_active is None else int(query.is_active),
        "id IN (SELECT job_id FROM job_tags WHERE tag = ?)": query.tag,
        # A range on the name index: case-sensitive, and no LIKE wildcards to escape.
        "name >= ?": prefix,
        "name < ?": None if prefix is None else prefix_upper_bound(prefix),
        "id < ?": None if query.cursor is None else decode_job_cursor(query.cursor),
    }
    rows = _page_rows(db, _SELECT_JOBS, filters, "id DESC", query.limit)
    items = [_job_from_row(row) for row in rows[: query.limit]]
    next_cursor = encode_cursor(["j", items[-1].id]) if len(rows) > query.limit else None
    return Page(items=items, next_cursor=next_cursor)


def _page_rows(
    db: sqlite3.Connection, select: str, filters: dict[str, Any], order: str, limit: int
) -> list[Any]:
    """The rows that match every filter whose value is not None (a tuple
    gives several parameters), and one more than `limit` if there are: a
    next page follows."""
    kept = {clause: value for clause, value in filters.items() if value is not None}
    where = f" WHERE {' AND '.join(kept)}" if kept else ""
    params = [
        p for value in kept.values() for p in (value if isinstance(value, tuple) else [value])
    ]
    sql = f"{select}{where} ORDER BY {order} LIMIT ?"
    return db.execute(sql, [*params, limit + 1]).fetchall()


def _do_pause_job(
    db: sqlite3.Connection, job_id: str, expected_version: int, reason: str, now: datetime
) -> Job | None:
    with _transaction(db):
        paused = db.execute(_PAUSE_JOB, (reason, unix_ms(now), job_id, expected_version)).rowcount
        if not paused:
            return None
        job = _job_from_row(db.execute(_GET_JOB, (job_id,)).fetchone())
        # Paused is a change of schedule: the ledger owes no ticks from now on.
        db.execute(_INSERT_REVISION, _revision_row(job, now))
        db.execute(_TRIM_REVISIONS, (job_id, MAX_SCHEDULE_REVISIONS))
    return job


def _fetch_all(db: sqlite3.Connection, sql: str, params: _Row) -> list[Any]:
    return db.execute(sql, params).fetchall()


def _fetch_dict(db: sqlite3.Connection, sql: str, params: _Row) -> dict[Any, Any]:
    return dict(db.execute(sql, params).fetchall())


def _fetch_jobs(db: sqlite3.Connection, sql: str, params: _Row) -> list[Job]:
    return [_job_from_row(row) for row in db.execute(sql, params)]


def _write(db: sqlite3.Connection, sql: str, params: _Row) -> int:
    with _transaction(db):
        count: int = db.execute(sql, params).rowcount
    return count


def _write_returning(db: sqlite3.Connection, sql: str, params: _Row) -> list[Any]:
    with _transaction(db):
        return db.execute(sql, params).fetchall()


def _delete(db: sqlite3.Connection, sql: str, row_id: str) -> bool:
    return is_valid_id(row_id) and _write(db, sql, (row_id,)) > 0


def _do_active_schedules(
    db: sqlite3.Connection, after: str, limit: int, keep: Callable[[str], bool] | None
) -> SchedulePage:
    # A million rows go through here at start-up: values are looked up, not
    # built (an Enum() per row was a large share of the read's CPU).
    instants: dict[int, datetime] = {}
    concurrency, misfire, make = _CONCURRENCY_POLICIES, _MISFIRE_POLICIES, ActiveSchedule
    read = db.execute(_ACTIVE_SCHEDULES, (after, limit)).fetchall()
    return SchedulePage(
        rows=[
            make(
                row[0],
                row[1],
                row[2],
                row[3],
                instants.get(row[4]) or cached_instant(instants, row[4]),
                concurrency[row[5]],
                misfire[row[6]],
                row[7],
            )
            for row in read
            if keep is None or keep(row[0])
        ],
        next_after=read[-1][0] if len(read) == limit else None,
    )


def _do_claim_ticks(db: sqlite3.Connection, claims: list[TickClaim]) -> list[ClaimResult]:
    """The whole batch in one transaction and at most six statements,
    whatever its size: what the claims depend on is read under the write
    lock, `decide_claims` decides them all, and what it decided is written."""
    with _transaction(db):
        wanted = {claim.job_id for claim in claims if is_valid_id(claim.job_id)}
        jobs = {
            row[0]: ClaimJob(row[1], bool(row[2]), row[3], _CONCURRENCY_POLICIES[row[4]], row[5])
            for row in db.execute(_CLAIM_JOBS, (json.dumps(list(wanted)),))
        }
        checked = check_claims(claims, jobs)
        keys = [entry.key() for entry in checked if entry is not None]
        if not keys:
            return [STALE] * len(claims)
        taken = set(db.execute(_TAKEN_KEYS, (json.dumps(keys),)).fetchall())
        running: dict[str, list[str]] = {}
        if watched := watched_jobs(checked):
            for job_id, execution_id in db.execute(_RUNNING_OF_JOBS, (json.dumps(list(watched)),)):
                running.setdefault(job_id, []).append(execution_id)
        decision = decide_claims(checked, StoredClaims(taken=taken, running=running))
        _write_claims(db, claims, checked, decision)
    return decision.results


def _write_claims(
    db: sqlite3.Connection,
    claims: list[TickClaim],
    checked: list[CheckedClaim | None],
    decision: ClaimDecision,
) -> None:
    results = decision.results
    inserts = []
    for position in decision.inserts:
        result, entry = results[position], checked[position]
        assert result.execution is not None and entry is not None
        dispatched = inserted_dispatched(claims[position], result)
        inserts.append(_execution_row(result.execution, slot=entry.slot, dispatched=dispatched))
    # A plain INSERT: the keys were checked under the write lock, so a
    # conflict here is a bug, and it fails (and rolls back) the batch.
    db.executemany(_INSERT_EXECUTION, inserts)
    replacements: list[tuple[int, str, str]] = []
    for position, old_ids in decision.replacing.items():
        claim = claims[position]
        finished_ms, message = unix_ms(claim.executed_at), replaced_message(claim.execution_id)
        replacements += [(finished_ms, message, old_id) for old_id in old_ids]
    # After the inserts: a run claimed earlier in this batch may be replaced too.
    db.executemany(_REPLACE_EXECUTION, replacements)
    db.executemany(_ADVANCE_LAST_TICK, [(ms, job_id) for job_id, ms in decision.last_ticks.items()])


def _do_record_missed(
    db: sqlite3.Connection,
    job: Job,
    ticks: list[datetime],
    instance_id: str,
    now: datetime,
    reason: str,
) -> int:
    if not is_valid_id(job.id):
        return 0
    rows = [
        _execution_row(
            missed_tick_record(job, tick, instance_id=instance_id, now=now, reason=reason),
            slot=TICK_SLOT,
        )
        for tick in ticks
    ]
    latest = max(unix_ms(tick) for tick in ticks)
    with _transaction(db):
        current = db.execute(_MISSED_JOB, (job.id,)).fetchone()
        if current is None or current[0] != job.version or not current[1]:
            return 0  # gone, changed or paused: these ticks are not owed
        inserted = db.executemany(_INSERT_EXECUTION_IF_NEW, rows).rowcount
        db.execute(_ADVANCE_LAST_TICK, (latest, job.id))
    return inserted


def _do_finish_executions(db: sqlite3.Connection, executions: list[Execution]) -> FinishReport:
    for execution in executions:
        if not execution.status.is_final:
            raise ValueError(f"execution {execution.id!r} is not final: {execution.status}")
    missing: list[str] = []
    already_final: list[tuple[str, ExecutionStatus]] = []
    with _transaction(db):
        for execution in executions:
            if not is_valid_id(execution.id):
                missing.append(execution.id)
                continue
            row = _execution_row(execution, slot="")
            final_state = row[_FINAL_STATE]
            updated = db.execute(_FINISH_EXECUTION, (*final_state, execution.id))
            if updated.rowcount == 0:
                stored = db.execute(_FINISHED_STATE, (execution.id,)).fetchone()
                if stored is None:
                    missing.append(execution.id)
                elif tuple(stored) != final_state:  # else an identical result written before
                    already_final.append((execution.id, ExecutionStatus(stored[0])))
                continue  # already final: left as it is
            # Only a run at least as recent as the job's last one speaks for the job.
            db.execute(_SET_LAST_RUN, (row[7], row[5], execution.id))
    return FinishReport(missing=tuple(missing), already_final=tuple(already_final))


def _do_import_executions(db: sqlite3.Connection, executions: list[Execution]) -> list[str]:
    left_out: list[str] = []
    with _transaction(db):
        for execution in executions:
            row = _execution_row(execution, slot=tick_slot(execution))
            if db.execute(_IMPORT_EXECUTION, row).rowcount == 0:
                left_out.append(execution.id)
    return left_out


def _do_get_execution(db: sqlite3.Connection, execution_id: str) -> Execution:
    valid = is_valid_id(execution_id)
    row = db.execute(_GET_EXECUTION, (execution_id,)).fetchone() if valid else None
    if row is None:
        raise ExecutionNotFound(execution_id)
    return _execution_from_row(row)


def _do_list_executions(db: sqlite3.Connection, query: ExecutionQuery) -> Page[Execution]:
    check_limit(query.limit)
    cursor = None if query.cursor is None else decode_execution_cursor(query.cursor)
    filters = {
        "job_id = ?": query.job_id,
        "status = ?": None if query.status is None else query.status.value,
        "scheduled_at >= ?": opt_unix_ms(query.since),
        "scheduled_at < ?": opt_unix_ms(query.until),
        "(scheduled_at, id) < (?, ?)": cursor,
    }
    rows = _page_rows(db, _SELECT_EXECUTIONS, filters, "scheduled_at DESC, id DESC", query.limit)
    page = rows[: query.limit]
    next_cursor = (
        encode_cursor(["e", page[-1][4], page[-1][0]]) if len(rows) > query.limit else None
    )
    return Page(items=[_execution_from_row(row) for row in page], next_cursor=next_cursor)


@contextmanager
def _unavailable_on_db_errors(path: Path) -> Iterator[None]:
    """Turn errors of an unreachable or broken database into `StoreUnavailable`;
    everything else (constraint violations, SQL mistakes) passes unchanged."""
    try:
        yield
    except sqlite3.DatabaseError as e:
        if getattr(e, "sqlite_errorcode", 0) & 0xFF in _UNAVAILABLE_CODES:
            raise StoreUnavailable(f"sqlite store {path}: {e}") from e
        raise


def _revision_row(job: Job, effective_from: datetime) -> tuple[Any, ...]:
    spec = job.spec
    return (
        job.id,
        job.version,
        unix_ms(effective_from),
        spec.cron_expression,
        spec.timezone,
        int(spec.is_active),
    )


def _schedule(spec: JobSpec) -> tuple[str, str, bool]:
    return (spec.cron_expression, spec.timezone, spec.is_active)


def _tag_rows(job: Job) -> list[tuple[str, str]]:
    return [(tag, job.id) for tag in job.spec.tags]


def _job_row(job: Job) -> tuple[Any, ...]:
    """The job as stored, in `_JOB_COLUMNS` order."""
    spec = job.spec
    return (
        job.id,
        spec.name,
        spec.cron_expression,
        spec.timezone,
        spec.webhook_url,
        spec.http_method.value,
        json_text(dict(spec.headers)),
        None if spec.body is None else json_text(spec.body),
        float(spec.timeout_seconds),
        int(spec.retry.max_attempts),
        float(spec.retry.backoff_seconds),
        float(spec.retry.max_backoff_seconds),
        spec.concurrency_policy.value,
        spec.misfire_policy.value,
        int(spec.misfire_grace_seconds),
        int(spec.is_active),
        spec.secret,
        json_text(list(spec.tags)),
        job.version,
        unix_ms(job.created_at),
        unix_ms(job.updated_at),
        unix_ms(job.last_tick),
        opt_unix_ms(job.last_run_at),
        None if job.last_status is None else job.last_status.value,
        job.paused_reason,
        opt_unix_ms(job.deferred_until),
        None if job.previous_secret is None else job.previous_secret.secret,
        None if job.previous_secret is None else unix_ms(job.previous_secret.expires_at),
        None if spec.alerts is None else json_text(alerts_document(spec.alerts)),
    )


def _job_from_row(row: _Row) -> Job:
    spec = JobSpec(
        name=row[1],
        cron_expression=shared_text(row[2]),
        timezone=shared_text(row[3]),
        webhook_url=row[4],
        http_method=HttpMethod(row[5]),
        headers=shared_headers(json.loads(row[6])),
        body=None if row[7] is None else json.loads(row[7]),
        timeout_seconds=row[8],
        retry=shared_retry(row[9], row[10], row[11]),
        concurrency_policy=ConcurrencyPolicy(row[12]),
        misfire_policy=MisfirePolicy(row[13]),
        misfire_grace_seconds=row[14],
        is_active=bool(row[15]),
        secret=row[16],
        tags=tuple(json.loads(row[17])),
        alerts=None if row[28] is None else alerts_from_document(json.loads(row[28])),
    )
    return Job(
        id=row[0],
        spec=spec,
        version=row[18],
        created_at=from_unix_ms(row[19]),
        updated_at=from_unix_ms(row[20]),
        last_tick=from_unix_ms(row[21]),
        last_run_at=opt_from_unix_ms(row[22]),
        last_status=None if row[23] is None else ExecutionStatus(row[23]),
        paused_reason=row[24],
        deferred_until=opt_from_unix_ms(row[25]),
        previous_secret=None
        if row[26] is None
        else PreviousSecret(secret=row[26], expires_at=from_unix_ms(row[27])),
    )


def _execution_row(execution: Execution, *, slot: str, dispatched: bool = True) -> tuple[Any, ...]:
    """In `_EXECUTION_COLUMNS` order, then the slot and whether the webhook went out."""
    e = execution
    return (
        e.id,
        e.job_id,
        e.job_name,
        e.trigger.value,
        unix_ms(e.scheduled_at),
        e.status.value,
        e.instance_id,
        opt_unix_ms(e.executed_at),
        opt_unix_ms(e.finished_at),
        e.duration_ms,
        e.attempts,
        e.response_status,
        e.response_body,
        int(e.response_truncated),
        None if e.error is None else e.error.type,
        None if e.error is None else e.error.message,
        json_text(attempt_documents(e.attempt_log)) if e.attempt_log else None,
        slot,
        int(dispatched),
    )


def _execution_from_row(row: _Row) -> Execution:
    return Execution(
        id=row[0],
        job_id=row[1],
        job_name=row[2],
        trigger=Trigger(row[3]),
        scheduled_at=from_unix_ms(row[4]),
        status=ExecutionStatus(row[5]),
        instance_id=row[6],
        executed_at=opt_from_unix_ms(row[7]),
        finished_at=opt_from_unix_ms(row[8]),
        duration_ms=row[9],
        attempts=row[10],
        response_status=row[11],
        response_body=row[12],
        response_truncated=bool(row[13]),
        error=None if row[14] is None else ErrorInfo(type=row[14], message=row[15]),
        attempt_log=attempts_from_documents(None if row[16] is None else json.loads(row[16])),
    )
