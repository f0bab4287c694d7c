"""The SQLite backend of `Store`: one file, one connection, WAL journal.

Instants are stored as integer Unix milliseconds. Spec scalars are columns;
`headers`, `body` and `tags` are JSON text (a JSON `body` keeps a str apart
from a JSON document: `"{}"` is the string, `{}` the object; NULL is None).
Tags are also kept in `job_tags`, indexed, for the tag filter.

Every call holds `_lock` for its whole duration: the connection is shared, so
without it a read could see another call's uncommitted writes, or two calls
could try to open a transaction on it at once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from collections.abc import AsyncIterator, Collection, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import aiosqlite

from cronsvc.domain import (
    ConcurrencyPolicy,
    ErrorInfo,
    Execution,
    ExecutionStatus,
    HttpMethod,
    Job,
    JobSpec,
    MisfirePolicy,
    RetryPolicy,
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
    ClaimOutcome,
    ClaimResult,
    ExecutionQuery,
    JobQuery,
    Page,
    TickClaim,
)

SCHEMA_VERSION = 1
_MIN_SQLITE = (3, 35, 0)  # RETURNING
_BUSY_TIMEOUT_S = 5.0
_PRUNE_BATCH = 5000
_TICK_SLOT = "tick"
_MAX_CURSOR_CHARS = 200

_SCHEMA = (
    """CREATE TABLE schema_version (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL
    )""",
    """CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        cron_expression TEXT NOT NULL,
        timezone TEXT NOT NULL,
        webhook_url TEXT NOT NULL,
        http_method TEXT NOT NULL,
        headers TEXT NOT NULL,
        body TEXT,
        timeout_seconds REAL NOT NULL,
        retry_max_attempts INTEGER NOT NULL,
        retry_backoff_seconds REAL NOT NULL,
        retry_max_backoff_seconds REAL NOT NULL,
        concurrency_policy TEXT NOT NULL,
        misfire_policy TEXT NOT NULL,
        misfire_grace_seconds INTEGER NOT NULL,
        is_active INTEGER NOT NULL,
        secret TEXT,
        tags TEXT NOT NULL,
        version INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        last_tick INTEGER NOT NULL,
        last_run_at INTEGER,
        last_status TEXT
    )""",
    "CREATE INDEX jobs_by_active ON jobs (is_active, id)",
    """CREATE TABLE job_tags (
        tag TEXT NOT NULL,
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        PRIMARY KEY (tag, job_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX job_tags_by_job ON job_tags (job_id)",
    # No foreign key to jobs: execution logs outlive their job.
    """CREATE TABLE executions (
        id TEXT PRIMARY KEY,
        job_id TEXT NOT NULL,
        job_name TEXT NOT NULL,
        trigger TEXT NOT NULL,
        scheduled_at INTEGER NOT NULL,
        status TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        executed_at INTEGER,
        finished_at INTEGER,
        duration_ms INTEGER,
        attempts INTEGER NOT NULL,
        response_status INTEGER,
        response_body TEXT,
        response_truncated INTEGER NOT NULL,
        error_type TEXT,
        error_message TEXT,
        slot TEXT NOT NULL,
        UNIQUE (job_id, scheduled_at, slot)
    )""",
    "CREATE INDEX executions_newest ON executions (scheduled_at DESC, id DESC)",
    "CREATE INDEX executions_by_job ON executions (job_id, scheduled_at DESC, id DESC)",
    "CREATE INDEX executions_by_status ON executions (status, scheduled_at DESC, id DESC)",
    # Partial indexes: only used by statements that spell `status = 'RUNNING'` literally.
    "CREATE INDEX executions_running_by_job ON executions (job_id) WHERE status = 'RUNNING'",
    """CREATE INDEX executions_running_by_instance ON executions (instance_id)
        WHERE status = 'RUNNING'""",
)

_JOB_COLUMNS = (
    "id",
    "name",
    "cron_expression",
    "timezone",
    "webhook_url",
    "http_method",
    "headers",
    "body",
    "timeout_seconds",
    "retry_max_attempts",
    "retry_backoff_seconds",
    "retry_max_backoff_seconds",
    "concurrency_policy",
    "misfire_policy",
    "misfire_grace_seconds",
    "is_active",
    "secret",
    "tags",
    "version",
    "created_at",
    "updated_at",
    "last_tick",
    "last_run_at",
    "last_status",
)
_SELECT_JOBS = f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs"
_GET_JOB = f"{_SELECT_JOBS} WHERE id = ?"
_ACTIVE_JOBS = f"{_SELECT_JOBS} WHERE is_active = 1"
_INSERT_JOB = (
    f"INSERT INTO jobs ({', '.join(_JOB_COLUMNS)}) VALUES ({', '.join('?' * len(_JOB_COLUMNS))})"
)
_UPDATE_JOB = f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in _JOB_COLUMNS[1:])} WHERE id = ?"
_DELETE_JOB = "DELETE FROM jobs WHERE id = ?"
_INSERT_TAG = "INSERT OR IGNORE INTO job_tags (tag, job_id) VALUES (?, ?)"
_DELETE_TAGS = "DELETE FROM job_tags WHERE job_id = ?"
_CLAIM_JOB = "SELECT version, is_active, name FROM jobs WHERE id = ?"
_ADVANCE_LAST_TICK = "UPDATE jobs SET last_tick = ?1 WHERE id = ?2 AND last_tick < ?1"
_SET_LAST_RUN = """UPDATE jobs SET last_run_at = COALESCE(?1, last_run_at), last_status = ?2
    WHERE id = (SELECT job_id FROM executions WHERE id = ?3)
    AND (last_run_at IS NULL OR ?1 IS NULL OR last_run_at <= ?1)"""

_EXECUTION_COLUMNS = (
    "id",
    "job_id",
    "job_name",
    "trigger",
    "scheduled_at",
    "status",
    "instance_id",
    "executed_at",
    "finished_at",
    "duration_ms",
    "attempts",
    "response_status",
    "response_body",
    "response_truncated",
    "error_type",
    "error_message",
)
_RETURNED_EXECUTION = ", ".join(_EXECUTION_COLUMNS)
_SELECT_EXECUTIONS = f"SELECT {_RETURNED_EXECUTION} FROM executions"
_GET_EXECUTION = f"{_SELECT_EXECUTIONS} WHERE id = ?"
_INSERT_EXECUTION_IF_NEW = (
    f"INSERT INTO executions ({_RETURNED_EXECUTION}, slot) "
    f"VALUES ({', '.join('?' * (len(_EXECUTION_COLUMNS) + 1))}) "
    "ON CONFLICT (job_id, scheduled_at, slot) DO NOTHING"
)
_RUNNING_OF_JOB = "SELECT id FROM executions WHERE job_id = ? AND status = 'RUNNING' LIMIT 1"
_FINISH_EXECUTION = """UPDATE executions SET status = ?, instance_id = ?, executed_at = ?,
    finished_at = ?, duration_ms = ?, attempts = ?, response_status = ?, response_body = ?,
    response_truncated = ?, error_type = ?, error_message = ?
    WHERE id = ? AND status = 'RUNNING'"""
_EXECUTION_EXISTS = "SELECT 1 FROM executions WHERE id = ?"
_DELETE_EXECUTION = "DELETE FROM executions WHERE id = ?"
_MARK_LOST = f"""UPDATE executions SET status = 'LOST', finished_at = ?, error_type = 'lost',
    error_message = ?
    WHERE status = 'RUNNING' AND instance_id NOT IN (SELECT value FROM json_each(?))
    RETURNING {_RETURNED_EXECUTION}"""
# In batches, so a large prune never holds the write lock for long.
_PRUNE = """DELETE FROM executions WHERE rowid IN (
    SELECT rowid FROM executions WHERE scheduled_at < ? AND status != 'RUNNING' LIMIT ?)"""

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

_Row = Sequence[Any]


class SQLiteStore:
    """`Store` on one SQLite file; open with `await SQLiteStore.open(path)`."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self._path = path
        self._lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> SQLiteStore:
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise StoreUnavailable(
                f"SQLite {sqlite3.sqlite_version} is too old for the store; "
                f"{'.'.join(map(str, _MIN_SQLITE))} or newer is needed"
            )
        try:
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        except OSError as e:
            raise StoreUnavailable(f"cannot create the directory for {path}: {e}") from e
        with _unavailable_on_db_errors(path):
            db = await aiosqlite.connect(
                path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, cached_statements=256
            )
        store = cls(db, path)
        try:
            await store._prepare()
        except BaseException:
            await db.close()
            raise
        return store

    async def _prepare(self) -> None:
        with _unavailable_on_db_errors(self._path):
            # Pragmas cannot change inside a transaction.
            await self._db.execute_fetchall("PRAGMA journal_mode = WAL")
            await self._db.execute_fetchall("PRAGMA synchronous = NORMAL")
            await self._db.execute_fetchall("PRAGMA foreign_keys = ON")
        async with self._transaction() as db:
            tables = {
                row[0]
                for row in await db.execute_fetchall(
                    "SELECT name FROM sqlite_master"
                    " WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
                )
            }
            if "schema_version" not in tables:
                if tables:
                    raise StoreUnavailable(
                        f"{self._path} holds tables but no schema_version: "
                        "it is not a cronsvc store"
                    )
                for statement in _SCHEMA:
                    await db.execute(statement)
                await db.execute(
                    "INSERT INTO schema_version (id, version) VALUES (1, ?)", (SCHEMA_VERSION,)
                )
                return
            row = await _fetchone(db, "SELECT version FROM schema_version WHERE id = 1", ())
            if row is None:
                raise StoreUnavailable(f"{self._path}: schema_version is empty")
            version = row[0]
            if isinstance(version, int) and version > SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"{self._path} has store schema version {version}, written by a newer "
                    f"cronsvc; this one knows versions up to {SCHEMA_VERSION}: upgrade cronsvc"
                )
            if version != SCHEMA_VERSION:
                raise StoreUnavailable(f"{self._path} has unknown store schema version {version!r}")

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[aiosqlite.Connection]:
        """The connection, held by this call alone; no transaction (one statement is atomic)."""
        async with self._lock:
            if self._closed:
                raise StoreUnavailable(f"the store on {self._path} is closed")
            with _unavailable_on_db_errors(self._path):
                yield self._db

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction: committed if the block ends normally, else rolled back."""
        async with self._connection() as db:
            try:
                await db.execute("BEGIN IMMEDIATE")
                yield db
            except BaseException:
                # Queued behind whatever the worker thread still has to run (even
                # after a cancellation), and a no-op when no transaction is open.
                await db.rollback()
                raise
            await db.commit()

    async def create_job(self, job: Job) -> Job:
        if not is_valid_id(job.id):
            raise ValueError(f"job id {job.id!r} is not well formed")
        row = _job_row(job)
        async with self._transaction() as db:
            await _write_job(db, _INSERT_JOB, row, job.spec.name)
            await db.executemany(_INSERT_TAG, _tag_rows(job))
        return _job_from_row(row)

    async def get_job(self, job_id: str) -> Job:
        if not is_valid_id(job_id):
            raise JobNotFound(job_id)
        async with self._connection() as db:
            row = await _fetchone(db, _GET_JOB, (job_id,))
        if row is None:
            raise JobNotFound(job_id)
        return _job_from_row(row)

    async def update_job(
        self,
        job_id: str,
        spec: JobSpec,
        *,
        now: datetime,
        expected_version: int | None = None,
        restart_schedule: bool = False,
    ) -> Job:
        if not is_valid_id(job_id):
            raise JobNotFound(job_id)
        async with self._transaction() as db:
            current_row = await _fetchone(db, _GET_JOB, (job_id,))
            if current_row is None:
                raise JobNotFound(job_id)
            current = _job_from_row(current_row)
            if expected_version is not None and expected_version != current.version:
                raise VersionConflict(job_id, expected_version, current.version)
            updated = replace(
                current,
                spec=spec,
                version=current.version + 1,
                updated_at=now,
                last_tick=now if restart_schedule else current.last_tick,
            )
            row = _job_row(updated)
            await _write_job(db, _UPDATE_JOB, (*row[1:], row[0]), spec.name)
            if tuple(spec.tags) != current.spec.tags:
                await db.execute(_DELETE_TAGS, (job_id,))
                await db.executemany(_INSERT_TAG, _tag_rows(updated))
        return _job_from_row(row)

    async def delete_job(self, job_id: str) -> None:
        if not is_valid_id(job_id):
            raise JobNotFound(job_id)
        async with self._connection() as db:
            cursor = await db.execute(_DELETE_JOB, (job_id,))  # tags go by cascade
        if cursor.rowcount == 0:
            raise JobNotFound(job_id)

    async def list_jobs(self, query: JobQuery) -> Page[Job]:
        _check_limit(query.limit)
        clauses: list[str] = []
        params: list[Any] = []
        if query.is_active is not None:
            clauses.append("is_active = ?")
            params.append(int(query.is_active))
        if query.tag is not None:
            clauses.append("id IN (SELECT job_id FROM job_tags WHERE tag = ?)")
            params.append(query.tag)
        if query.name_prefix:
            # A range on the name index: case-sensitive, and no LIKE wildcards to escape.
            clauses.append("name >= ?")
            params.append(query.name_prefix)
            upper = _prefix_upper_bound(query.name_prefix)
            if upper is not None:
                clauses.append("name < ?")
                params.append(upper)
        if query.cursor is not None:
            clauses.append("id < ?")
            params.append(_decode_job_cursor(query.cursor))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        params.append(query.limit + 1)
        async with self._connection() as db:
            rows = await _fetchall(db, f"{_SELECT_JOBS}{where} ORDER BY id DESC LIMIT ?", params)
        items = [_job_from_row(row) for row in rows[: query.limit]]
        next_cursor = _encode_cursor(["j", items[-1].id]) if len(rows) > query.limit else None
        return Page(items=items, next_cursor=next_cursor)

    async def active_jobs(self) -> list[Job]:
        async with self._connection() as db:
            rows = await _fetchall(db, _ACTIVE_JOBS, ())
        return [_job_from_row(row) for row in rows]

    async def claim_tick(self, claim: TickClaim) -> ClaimResult:
        if not is_valid_id(claim.job_id):
            return ClaimResult(outcome=ClaimOutcome.STALE)
        manual = claim.trigger is Trigger.MANUAL
        scheduled_ms = _ms(claim.scheduled_at)
        async with self._transaction() as db:
            job = await _fetchone(db, _CLAIM_JOB, (claim.job_id,))
            if job is None or job[0] != claim.expected_version or not (job[1] or manual):
                return ClaimResult(outcome=ClaimOutcome.STALE)
            execution = Execution(
                id=claim.execution_id,
                job_id=claim.job_id,
                job_name=job[2],
                trigger=claim.trigger,
                scheduled_at=claim.scheduled_at,
                status=ExecutionStatus.RUNNING,
                instance_id=claim.instance_id,
                executed_at=claim.executed_at,
            )
            outcome = ClaimOutcome.CLAIMED
            if claim.concurrency_policy is ConcurrencyPolicy.FORBID:
                running = await _fetchone(db, _RUNNING_OF_JOB, (claim.job_id,))
                if running is not None:
                    outcome = ClaimOutcome.SKIPPED
                    execution = replace(
                        execution,
                        status=ExecutionStatus.SKIPPED,
                        executed_at=None,
                        finished_at=claim.executed_at,
                        error=ErrorInfo(
                            type="skipped",
                            message=f"concurrency policy forbid: execution {running[0]} "
                            "of this job is still running",
                        ),
                    )
            row = _execution_row(execution, slot=claim.execution_id if manual else _TICK_SLOT)
            cursor = await db.execute(_INSERT_EXECUTION_IF_NEW, row)
            if cursor.rowcount == 0:
                return ClaimResult(outcome=ClaimOutcome.DUPLICATE)
            if not manual:
                await db.execute(_ADVANCE_LAST_TICK, (scheduled_ms, claim.job_id))
        return ClaimResult(outcome=outcome, execution=_execution_from_row(row))

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
            return 0
        rows = [
            _execution_row(
                Execution(
                    id=new_id(),
                    job_id=job.id,
                    job_name=job.spec.name,
                    trigger=Trigger.SCHEDULE,
                    scheduled_at=tick,
                    status=ExecutionStatus.MISSED,
                    instance_id=instance_id,
                    finished_at=now,
                    error=ErrorInfo(type="missed", message=reason),
                ),
                slot=_TICK_SLOT,
            )
            for tick in ticks
        ]
        latest = max(_ms(tick) for tick in ticks)
        async with self._transaction() as db:
            cursor = await db.executemany(_INSERT_EXECUTION_IF_NEW, rows)
            inserted = cursor.rowcount
            await db.execute(_ADVANCE_LAST_TICK, (latest, job.id))
        return inserted

    async def finish_execution(self, execution: Execution) -> None:
        if not is_valid_id(execution.id):
            raise ExecutionNotFound(execution.id)
        if not execution.status.is_final:
            raise ValueError(f"execution {execution.id!r} is not final: {execution.status}")
        row = _execution_row(execution, slot="")
        async with self._transaction() as db:
            cursor = await db.execute(
                _FINISH_EXECUTION,
                (row[5], row[6], *row[7:16], execution.id),
            )
            if cursor.rowcount == 0:
                if await _fetchone(db, _EXECUTION_EXISTS, (execution.id,)) is None:
                    raise ExecutionNotFound(execution.id)
                return  # already final: left as it is
            # Only a run at least as recent as the job's last one speaks for the job.
            await db.execute(_SET_LAST_RUN, (row[7], row[5], execution.id))

    async def get_execution(self, execution_id: str) -> Execution:
        if not is_valid_id(execution_id):
            raise ExecutionNotFound(execution_id)
        async with self._connection() as db:
            row = await _fetchone(db, _GET_EXECUTION, (execution_id,))
        if row is None:
            raise ExecutionNotFound(execution_id)
        return _execution_from_row(row)

    async def delete_execution(self, execution_id: str) -> None:
        if not is_valid_id(execution_id):
            raise ExecutionNotFound(execution_id)
        async with self._connection() as db:
            cursor = await db.execute(_DELETE_EXECUTION, (execution_id,))
        if cursor.rowcount == 0:
            raise ExecutionNotFound(execution_id)

    async def list_executions(self, query: ExecutionQuery) -> Page[Execution]:
        _check_limit(query.limit)
        clauses: list[str] = []
        params: list[Any] = []
        if query.job_id is not None:
            clauses.append("job_id = ?")
            params.append(query.job_id)
        if query.status is not None:
            clauses.append("status = ?")
            params.append(query.status.value)
        if query.since is not None:
            clauses.append("scheduled_at >= ?")
            params.append(_ms(query.since))
        if query.until is not None:
            clauses.append("scheduled_at < ?")
            params.append(_ms(query.until))
        if query.cursor is not None:
            clauses.append("(scheduled_at, id) < (?, ?)")
            params.extend(_decode_execution_cursor(query.cursor))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        params.append(query.limit + 1)
        sql = f"{_SELECT_EXECUTIONS}{where} ORDER BY scheduled_at DESC, id DESC LIMIT ?"
        async with self._connection() as db:
            rows = await _fetchall(db, sql, params)
        page = rows[: query.limit]
        next_cursor = None
        if len(rows) > query.limit:
            last = page[-1]
            next_cursor = _encode_cursor(["e", last[4], last[0]])
        return Page(items=[_execution_from_row(row) for row in page], next_cursor=next_cursor)

    async def mark_lost(
        self, *, live_instances: Collection[str], now: datetime, reason: str
    ) -> list[Execution]:
        live = json.dumps(list(live_instances))
        async with self._connection() as db:
            rows = await _fetchall(db, _MARK_LOST, (_ms(now), reason, live))
        return [_execution_from_row(row) for row in rows]

    async def prune_executions(self, older_than: datetime) -> int:
        bound = _ms(older_than)
        deleted = 0
        while True:
            async with self._connection() as db:
                cursor = await db.execute(_PRUNE, (bound, _PRUNE_BATCH))
            deleted += cursor.rowcount
            if cursor.rowcount < _PRUNE_BATCH:
                return deleted

    async def ping(self) -> None:
        async with self._connection() as db:
            await db.execute_fetchall("SELECT 1")

    async def aclose(self) -> None:
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                with _unavailable_on_db_errors(self._path):
                    await self._db.execute_fetchall("PRAGMA optimize")
            finally:
                await self._db.close()


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


async def _fetchall(db: aiosqlite.Connection, sql: str, params: Iterable[Any]) -> list[_Row]:
    return cast(list[_Row], await db.execute_fetchall(sql, params))


async def _fetchone(db: aiosqlite.Connection, sql: str, params: Iterable[Any]) -> _Row | None:
    rows = await _fetchall(db, sql, params)
    return rows[0] if rows else None


async def _write_job(db: aiosqlite.Connection, sql: str, params: _Row, name: str) -> None:
    try:
        await db.execute(sql, params)
    except sqlite3.IntegrityError as e:
        if "jobs.name" in str(e):
            raise DuplicateJobName(name) from None
        raise


def _tag_rows(job: Job) -> list[tuple[str, str]]:
    return [(tag, job.id) for tag in job.spec.tags]


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def _ms(instant: datetime) -> int:
    """Unix milliseconds, truncated; exact (no float on the way)."""
    return (instant - _EPOCH) // _ONE_MS


def _opt_ms(instant: datetime | None) -> int | None:
    return None if instant is None else _ms(instant)


def _instant(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _opt_instant(ms: int | None) -> datetime | None:
    return None if ms is None else _instant(ms)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


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
        _json(dict(spec.headers)),
        None if spec.body is None else _json(spec.body),
        float(spec.timeout_seconds),
        int(spec.retry.max_attempts),
        float(spec.retry.backoff_seconds),
        float(spec.retry.max_backoff_seconds),
        spec.concurrency_policy.value,
        spec.misfire_policy.value,
        int(spec.misfire_grace_seconds),
        int(spec.is_active),
        spec.secret,
        _json(list(spec.tags)),
        job.version,
        _ms(job.created_at),
        _ms(job.updated_at),
        _ms(job.last_tick),
        _opt_ms(job.last_run_at),
        None if job.last_status is None else job.last_status.value,
    )


def _job_from_row(row: _Row) -> Job:
    spec = JobSpec(
        name=row[1],
        cron_expression=row[2],
        timezone=row[3],
        webhook_url=row[4],
        http_method=HttpMethod(row[5]),
        headers=json.loads(row[6]),
        body=None if row[7] is None else json.loads(row[7]),
        timeout_seconds=row[8],
        retry=RetryPolicy(
            max_attempts=row[9], backoff_seconds=row[10], max_backoff_seconds=row[11]
        ),
        concurrency_policy=ConcurrencyPolicy(row[12]),
        misfire_policy=MisfirePolicy(row[13]),
        misfire_grace_seconds=row[14],
        is_active=bool(row[15]),
        secret=row[16],
        tags=tuple(json.loads(row[17])),
    )
    return Job(
        id=row[0],
        spec=spec,
        version=row[18],
        created_at=_instant(row[19]),
        updated_at=_instant(row[20]),
        last_tick=_instant(row[21]),
        last_run_at=_opt_instant(row[22]),
        last_status=None if row[23] is None else ExecutionStatus(row[23]),
    )


def _execution_row(execution: Execution, *, slot: str) -> tuple[Any, ...]:
    """The execution as stored, in `_EXECUTION_COLUMNS` order, then its slot."""
    e = execution
    return (
        e.id,
        e.job_id,
        e.job_name,
        e.trigger.value,
        _ms(e.scheduled_at),
        e.status.value,
        e.instance_id,
        _opt_ms(e.executed_at),
        _opt_ms(e.finished_at),
        e.duration_ms,
        e.attempts,
        e.response_status,
        e.response_body,
        int(e.response_truncated),
        None if e.error is None else e.error.type,
        None if e.error is None else e.error.message,
        slot,
    )


def _execution_from_row(row: _Row) -> Execution:
    return Execution(
        id=row[0],
        job_id=row[1],
        job_name=row[2],
        trigger=Trigger(row[3]),
        scheduled_at=_instant(row[4]),
        status=ExecutionStatus(row[5]),
        instance_id=row[6],
        executed_at=_opt_instant(row[7]),
        finished_at=_opt_instant(row[8]),
        duration_ms=row[9],
        attempts=row[10],
        response_status=row[11],
        response_body=row[12],
        response_truncated=bool(row[13]),
        error=None if row[14] is None else ErrorInfo(type=row[14], message=row[15]),
    )


def _prefix_upper_bound(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix` (code point
    order, which is SQLite's BINARY order on UTF-8); None if there is none."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code == 0xD800:  # surrogates cannot be stored: skip them
            code = 0xE000
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


def _encode_cursor(key: list[Any]) -> str:
    raw = _json(key).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode_cursor(cursor: str) -> Any:
    if not cursor or len(cursor) > _MAX_CURSOR_CHARS:
        raise InvalidCursor(cursor)
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        return json.loads(raw)
    except ValueError:  # binascii.Error, UnicodeDecodeError and JSONDecodeError among them
        raise InvalidCursor(cursor) from None


def _decode_job_cursor(cursor: str) -> str:
    key = _decode_cursor(cursor)
    match key:
        case ["j", str(job_id)] if is_valid_id(job_id):
            return job_id
    raise InvalidCursor(cursor)


def _decode_execution_cursor(cursor: str) -> tuple[int, str]:
    key = _decode_cursor(cursor)
    match key:
        case ["e", int(ms), str(execution_id)] if not isinstance(ms, bool) and is_valid_id(
            execution_id
        ):
            return ms, execution_id
    raise InvalidCursor(cursor)
