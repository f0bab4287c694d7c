"""The MongoDB backend of `Store`: collections `jobs` and `executions` in the
database the URL names (default ``cronsvc``), through pymongo's native
asyncio client.

Documents. A job is ``{_id, name, cron_expression, timezone, webhook_url,
http_method, headers: [[name, value], ...], body_json, timeout_seconds,
retry: {max_attempts, backoff_seconds, max_backoff_seconds},
concurrency_policy, misfire_policy, misfire_grace_seconds, is_active, secret,
tags: [...], version, created_at, updated_at, last_tick, last_run_at,
last_status, paused_reason, deferred_until, previous_secret,
previous_secret_expires_at, schedule_history: [{version, effective_from,
cron_expression, timezone, is_active}, ...]}`` (the previous secret's fields
absent or None when the job has no replaced secret; `paused_reason` and
`deferred_until` absent in documents written before they existed). The
schedule history lives in the job document so that the one update that
changes a job also records the revision; it is left out of every job read
but `schedule_history`'s own, and a document written before it existed reads
as one revision from `created_at`. Headers are pairs, not a subdocument: they
keep their order, and a header name may hold ``.`` or start with ``$``.
`body_json` is the body as JSON text (None for no body), so a str stays apart
from a JSON document.
An execution is ``{_id, job_id, job_name, trigger, scheduled_at, slot,
status, instance_id, executed_at, finished_at, finished_date, duration_ms,
attempts, response_status, response_body, response_truncated,
error: {type, message} | None, attempt_log: [{attempt, started_at,
duration_ms, response_status, error, retry_after_ms}, ...]}`` (`attempt_log`
absent on records written before it existed: no attempts).

Instants are int64 Unix milliseconds, not BSON dates, so every comparison the
store makes on the server is exact on every server it meets: nx-27017, the
wire-protocol server the tests run on, compares BSON dates to the second and
turns a date written by ``$set`` or ``$max`` into a string. The one BSON date
is `finished_date`, `finished_at` again for the optional TTL index
(``open(url, retention_days=...)``); it is only ever written, never read or
compared, and RUNNING records lack it, so they never expire.

Indexes (made at start-up; creating an existing one is a no-op): jobs by
unique `name`, by `is_active`, by `tags` (multikey); executions by the unique
tick key (`job_id`, `scheduled_at`, `slot`), newest first overall, per job and
per status (`scheduled_at` desc, `_id` desc), and RUNNING ones by `job_id` and
by `instance_id` (partial indexes).

Atomicity. No multi-document transactions (nx-27017 has none worth relying
on): every write is atomic on its own document, and every multi-document
call is written so that a retry after a lost answer is harmless.
`update_job` reads the job, then writes it back (spec, version and, when the
schedule changed, the whole trimmed history with ``$set``: nx-27017 mangles
``$push`` with ``$slice``) on condition that it is still at the version read,
reading again if another write came in between.
`claim_ticks` reads the batch's jobs in one query, then (three queries sent
together) the tick keys already taken, the records these very claims may have
written on an earlier attempt, and the RUNNING executions of its `forbid`
and `replace` jobs; `decide_claims` (store/common.py) decides each claim in
order, later claims seeing earlier ones, as for the SQLite store; it inserts the RUNNING and
SKIPPED records with one unordered ``insert_many``, a duplicate-key error on
the unique tick key making that claim DUPLICATE; then, if `replace` claims
won, one ``bulk_write`` ends the runs they supersede (each a conditional
update on a record still RUNNING) and one query reads back which it ended;
last, one ``bulk_write`` moves `last_tick` forward (``$max`` as one
conditional update per distinct tick). A claim retried with its execution id
after a lost answer gets its first answer again, not DUPLICATE, so the retry
does not strand a RUNNING record; under `replace` it also ends again what is
still running.

Where this is weaker than SQLite's one transaction: between the read of the
jobs and the insert, a job can be updated, paused or deleted, and a claim for
its old version is then still written. The runner closes that window for
ticks claimed ahead of time: it re-reads `current_versions` at the tick and
does not fire a claim whose job changed. Likewise two claims of one `forbid`
or `replace` job racing from two instances for *different* ticks can both be
CLAIMED, neither seeing the other; and a claimer that dies between its insert
and the replacing write leaves the superseded run RUNNING until it ends by
itself (or is marked LOST with its instance). The
unique tick key fences the case that matters most: one tick is never claimed
twice. `finish_executions` and `record_missed` write record by record, each
atomic, and are idempotent, so a batch cut short is finished by its retry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Final
from urllib.parse import parse_qsl

from pymongo import (
    ASCENDING,
    DESCENDING,
    AsyncMongoClient,
    IndexModel,
    ReturnDocument,
    UpdateMany,
    UpdateOne,
)
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WTimeoutError,
)

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
    ConfigError,
    DuplicateJobName,
    ExecutionNotFound,
    JobNotFound,
    StoreUnavailable,
    VersionConflict,
)
from cronsvc.ids import is_valid_id, new_id
from cronsvc.store import (
    KEEP,
    MAX_SCHEDULE_REVISIONS,
    ActiveSchedule,
    ClaimOutcome,
    ClaimResult,
    ExecutionQuery,
    FinishReport,
    JobQuery,
    Keep,
    Page,
    TickClaim,
)
from cronsvc.store.common import (
    DUPLICATE,
    STALE,
    TICK_SLOT,
    CheckedClaim,
    ClaimDecision,
    ClaimJob,
    StoredClaims,
    advanced_ticks,
    answer_again,
    attempt_documents,
    attempts_from_documents,
    cached_instant,
    check_claims,
    check_importable,
    check_limit,
    decide_claims,
    decode_execution_cursor,
    decode_job_cursor,
    encode_cursor,
    from_unix_ms,
    inserted_dispatched,
    json_text,
    opt_from_unix_ms,
    opt_unix_ms,
    prefix_upper_bound,
    replaced_message,
    shared_headers,
    shared_retry,
    shared_text,
    tick_slot,
    unix_ms,
    watched_jobs,
)
from cronsvc.urls import redact_url

_Doc = dict[str, Any]

_DEFAULT_DATABASE = "cronsvc"
# Client options the URL may override. A call that cannot reach a server
# fails within a few seconds (StoreUnavailable) instead of hanging a tick.
_CLIENT_DEFAULTS: Final[Mapping[str, Any]] = {
    "serverSelectionTimeoutMS": 5000,
    "connectTimeoutMS": 5000,
    "socketTimeoutMS": 30000,
    "appname": "cronsvc",
}
_RUNNING = ExecutionStatus.RUNNING.value
_PRUNE_BATCH = 5000

_DUPLICATE_KEY = 11000
_INDEX_OPTIONS_CONFLICT = frozenset({85, 86})  # IndexOptionsConflict, IndexKeySpecsConflict
_TTL_INDEX = "executions_ttl"
_JOB_NAME_INDEX = "name_unique"
_CLAIM_JOB_FIELDS = {
    "version": 1,
    "is_active": 1,
    "name": 1,
    "concurrency_policy": 1,
    "deferred_until": 1,
}
# What schedule revisions are made of; the history itself is read only with these.
_REVISION_FIELDS = {
    "version": 1,
    "created_at": 1,
    "cron_expression": 1,
    "timezone": 1,
    "is_active": 1,
    "schedule_history": 1,
}
_WITHOUT_HISTORY = {"schedule_history": 0}
_SCHEDULE_FIELDS = {
    "version": 1,
    "cron_expression": 1,
    "timezone": 1,
    "last_tick": 1,
    "concurrency_policy": 1,
    "misfire_policy": 1,
    "misfire_grace_seconds": 1,
}
_UPDATE_ATTEMPTS = 5


class MongoStore:
    """`Store` on MongoDB; open with `await MongoStore.open(url)`."""

    def __init__(self, client: AsyncMongoClient[_Doc], database: AsyncDatabase[_Doc], url: str):
        self._client = client
        self._jobs: AsyncCollection[_Doc] = database["jobs"]
        self._executions: AsyncCollection[_Doc] = database["executions"]
        self._url = url
        """The URL with its secrets masked: the only form this object keeps."""
        self._closed = False

    @classmethod
    async def open(cls, url: str, *, retention_days: float | None = None) -> MongoStore:
        """Connect and create the indexes. With `retention_days`, also keep a
        TTL index that lets the server delete final records that many days
        after they finished (changing it on an existing index); without it an
        existing TTL index is left as it is. `prune_executions` works either way."""
        if retention_days is not None and not retention_days > 0:
            raise ValueError(f"retention_days must be positive, not {retention_days!r}")
        safe_url = redact_url(url)
        try:
            client: AsyncMongoClient[_Doc] = AsyncMongoClient(
                url, tz_aware=True, **_client_options(url)
            )
        except (ConfigurationError, ValueError) as e:  # InvalidURI, a bad port
            raise ConfigError(f"store.url: {safe_url} is not a usable MongoDB URL: {e}") from None
        try:
            database = client.get_default_database(_DEFAULT_DATABASE)
            build_info = await client.admin.command("buildInfo")
            await _create_indexes(database, build_info, retention_days)
        except BaseException as e:
            await asyncio.shield(client.close())
            if isinstance(e, PyMongoError) and _is_unavailable(e):
                raise StoreUnavailable(f"mongodb store {safe_url}: {e}") from e
            raise
        return cls(client, database, safe_url)

    def __repr__(self) -> str:
        return f"MongoStore({self._url!r})"

    @contextmanager
    def _calling(self) -> Iterator[None]:
        """Every public call runs in here: refused once closed, and errors of
        an unreachable server become `StoreUnavailable`; others pass unchanged."""
        if self._closed:
            raise StoreUnavailable(f"the store on {self._url} is closed")
        try:
            yield
        except PyMongoError as e:
            if self._closed or _is_unavailable(e):  # closed under a call: InvalidOperation
                raise StoreUnavailable(f"mongodb store {self._url}: {e}") from e
            raise

    async def create_job(self, job: Job) -> Job:
        with self._calling():
            if not is_valid_id(job.id):
                raise ValueError(f"job id {job.id!r} is not well formed")
            document = _job_document(job)
            try:
                await self._jobs.insert_one(document)
            except DuplicateKeyError as e:
                if _is_name_conflict(e):
                    raise DuplicateJobName(job.spec.name) from None
                raise
            return _job_from_document(document)

    async def get_job(self, job_id: str) -> Job:
        with self._calling():
            document = None
            if is_valid_id(job_id):
                document = await self._jobs.find_one({"_id": job_id}, _WITHOUT_HISTORY)
            if document is None:
                raise JobNotFound(job_id)
            return _job_from_document(document)

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
        with self._calling():
            if not is_valid_id(job_id):
                raise JobNotFound(job_id)
            for _ in range(_UPDATE_ATTEMPTS):
                updated = await self._update_job_once(
                    job_id, spec, now, expected_version, restart_schedule, previous_secret
                )
                if updated is not None:
                    return updated
            raise StoreUnavailable(
                f"mongodb store {self._url}: job {job_id!r} kept changing; not updated"
            )

    async def _update_job_once(
        self,
        job_id: str,
        spec: JobSpec,
        now: datetime,
        expected_version: int | None,
        restart_schedule: bool,
        previous_secret: PreviousSecret | Keep | None,
    ) -> Job | None:
        """Read the job, then write it back only if it is still at the version
        read, in one document update (the schedule history with it). None if
        another write came in between and the caller may try again."""
        current = await self._jobs.find_one({"_id": job_id}, _REVISION_FIELDS)
        if current is None:
            raise JobNotFound(job_id)
        version = current["version"]
        if expected_version is not None and version != expected_version:
            raise VersionConflict(job_id, expected_version, version)
        changes: _Doc = {
            **_spec_fields(spec),
            "updated_at": unix_ms(now),
            "paused_reason": None,
            "deferred_until": None,
        }
        if restart_schedule:
            changes["last_tick"] = unix_ms(now)
        if not isinstance(previous_secret, Keep):
            changes.update(_previous_secret_fields(previous_secret))
        if _schedule_fields(current) != _schedule_fields(changes):
            revisions = _history_documents(current)
            revisions.append(_revision_document(version + 1, now, changes))
            changes["schedule_history"] = revisions[-MAX_SCHEDULE_REVISIONS:]
        try:
            updated = await self._jobs.find_one_and_update(
                {"_id": job_id, "version": version},
                {"$set": changes, "$inc": {"version": 1}},
                projection=_WITHOUT_HISTORY,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            raise DuplicateJobName(spec.name) from None
        if updated is not None:
            return _job_from_document(updated)
        latest = await self._jobs.find_one({"_id": job_id}, {"version": 1})
        if latest is None:
            raise JobNotFound(job_id)
        if latest["version"] != version:
            if expected_version is not None:
                raise VersionConflict(job_id, expected_version, latest["version"])
            return None  # changed in between: read it again
        # The job matched, yet nothing was written: nx-27017 answers a
        # unique-index violation in findAndModify with "no document".
        taken = {"name": spec.name, "_id": {"$ne": job_id}}
        if await self._jobs.find_one(taken, {"_id": 1}) is not None:
            raise DuplicateJobName(spec.name)
        raise StoreUnavailable(f"mongodb store {self._url}: job {job_id!r} was not updated")

    async def pause_job(
        self, job_id: str, *, expected_version: int, reason: str, now: datetime
    ) -> Job | None:
        with self._calling():
            if not is_valid_id(job_id):
                return None
            current = await self._jobs.find_one({"_id": job_id}, _REVISION_FIELDS)
            if current is None or current["version"] != expected_version:
                return None
            if not current["is_active"]:
                return None
            changes: _Doc = {
                "is_active": False,
                "paused_reason": reason,
                "updated_at": unix_ms(now),
            }
            # Paused is a change of schedule: the ledger owes no ticks from now on.
            revisions = _history_documents(current)
            revisions.append(
                _revision_document(expected_version + 1, now, {**current, "is_active": False})
            )
            changes["schedule_history"] = revisions[-MAX_SCHEDULE_REVISIONS:]
            updated = await self._jobs.find_one_and_update(
                {"_id": job_id, "version": expected_version, "is_active": True},
                {"$set": changes, "$inc": {"version": 1}},
                projection=_WITHOUT_HISTORY,
                return_document=ReturnDocument.AFTER,
            )
            return None if updated is None else _job_from_document(updated)

    async def defer_job(self, job_id: str, until: datetime) -> None:
        with self._calling():
            if not is_valid_id(job_id):
                return
            # $max on a missing or null field sets it.
            await self._jobs.update_one(
                {"_id": job_id}, {"$max": {"deferred_until": unix_ms(until)}}
            )

    async def delete_job(self, job_id: str) -> None:
        with self._calling():
            if not is_valid_id(job_id):
                raise JobNotFound(job_id)
            deleted = await self._jobs.delete_one({"_id": job_id})
            if deleted.deleted_count == 0:
                raise JobNotFound(job_id)

    async def list_jobs(self, query: JobQuery) -> Page[Job]:
        with self._calling():
            check_limit(query.limit)
            selector: _Doc = {}
            if query.is_active is not None:
                selector["is_active"] = query.is_active
            if query.tag is not None:
                # `$in`, not equality: nx-27017 matches no array element by
                # equality once the field has an index.
                selector["tags"] = {"$in": [query.tag]}
            if query.name_prefix:
                # A range on the unique name index: case-sensitive and literal.
                name_range: _Doc = {"$gte": query.name_prefix}
                upper = prefix_upper_bound(query.name_prefix)
                if upper is not None:
                    name_range["$lt"] = upper
                selector["name"] = name_range
            if query.cursor is not None:
                selector["_id"] = {"$lt": decode_job_cursor(query.cursor)}
            found = (
                self._jobs.find(selector, _WITHOUT_HISTORY)
                .sort("_id", DESCENDING)
                .limit(query.limit + 1)
            )
            documents = await found.to_list()
            items = [_job_from_document(document) for document in documents[: query.limit]]
            next_cursor = None
            if len(documents) > query.limit:
                next_cursor = encode_cursor(["j", items[-1].id])
            return Page(items=items, next_cursor=next_cursor)

    async def active_jobs(self, job_ids: Collection[str] | None = None) -> list[Job]:
        with self._calling():
            selector: _Doc = {"is_active": True}
            if job_ids is not None:
                selector["_id"] = {"$in": [i for i in job_ids if is_valid_id(i)]}
            documents = await self._jobs.find(selector, _WITHOUT_HISTORY).to_list()
            return [_job_from_document(document) for document in documents]

    async def active_versions(
        self, after: str | None = None, limit: int | None = None
    ) -> dict[str, int]:
        if limit is not None:
            check_limit(limit)
        with self._calling():
            selector: _Doc = {"is_active": True}
            if limit is None:
                found = self._jobs.find(selector, {"version": 1})
            else:
                if after is not None:
                    selector["_id"] = {"$gt": after}
                found = (
                    self._jobs.find(selector, {"version": 1}).sort("_id", ASCENDING).limit(limit)
                )
            return {document["_id"]: document["version"] for document in await found.to_list()}

    async def active_schedules(
        self, after: str | None = None, limit: int = 20_000
    ) -> list[ActiveSchedule]:
        check_limit(limit)
        with self._calling():
            selector: _Doc = {"is_active": True}
            if after is not None:
                selector["_id"] = {"$gt": after}
            found = self._jobs.find(selector, _SCHEDULE_FIELDS).sort("_id", ASCENDING).limit(limit)
            instants: dict[int, datetime] = {}
            return [
                ActiveSchedule(
                    d["_id"],
                    d["version"],
                    d["cron_expression"],
                    d["timezone"],
                    cached_instant(instants, d["last_tick"]),
                    ConcurrencyPolicy(d["concurrency_policy"]),
                    MisfirePolicy(d["misfire_policy"]),
                    int(d["misfire_grace_seconds"]),
                )
                for d in await found.to_list()
            ]

    async def count_jobs(self) -> int:
        with self._calling():
            return await self._jobs.count_documents({})

    async def current_versions(self, job_ids: Collection[str]) -> dict[str, int]:
        with self._calling():
            wanted = [job_id for job_id in job_ids if is_valid_id(job_id)]
            if not wanted:
                return {}
            found = self._jobs.find({"_id": {"$in": wanted}, "is_active": True}, {"version": 1})
            return {document["_id"]: document["version"] for document in await found.to_list()}

    async def schedule_history(self, job_id: str) -> list[ScheduleRevision]:
        with self._calling():
            document = None
            if is_valid_id(job_id):
                document = await self._jobs.find_one({"_id": job_id}, _REVISION_FIELDS)
            if document is None:
                raise JobNotFound(job_id)
            return [
                ScheduleRevision(
                    version=int(revision["version"]),
                    effective_from=from_unix_ms(revision["effective_from"]),
                    cron_expression=revision["cron_expression"],
                    timezone=revision["timezone"],
                    is_active=bool(revision["is_active"]),
                )
                for revision in _history_documents(document)
            ]

    async def claim_ticks(self, claims: Sequence[TickClaim]) -> list[ClaimResult]:
        with self._calling():
            if not claims:
                return []
            return await self._claim_ticks(list(claims))

    async def _claim_ticks(self, claims: list[TickClaim]) -> list[ClaimResult]:
        wanted = list({claim.job_id for claim in claims if is_valid_id(claim.job_id)})
        jobs: dict[str, ClaimJob] = {}
        if wanted:
            found = self._jobs.find({"_id": {"$in": wanted}}, _CLAIM_JOB_FIELDS)
            jobs = {document["_id"]: _claim_job(document) for document in await found.to_list()}
        checked = check_claims(claims, jobs)
        live = [entry for entry in checked if entry is not None]
        if not live:
            return [STALE] * len(claims)
        stored, started = await self._claim_context(live)
        decision = decide_claims(checked, stored)
        results = list(decision.results)
        for position in decision.replacing:
            if results[position].replaced:  # named once their end is read back
                results[position] = dataclasses.replace(results[position], replaced=())
        # A claim that loses its key to a concurrent writer here is
        # DUPLICATE. (A later claim of the batch may have been SKIPPED on
        # its account: the tick was claimed elsewhere, so the skip stands;
        # only the execution its message names is another one.)
        lost = await self._insert_claimed(claims, checked, decision)
        for position in lost:
            results[position] = DUPLICATE
        if decision.replacing:
            await self._replace_running(claims, results, decision.replacing, started)
        await self._advance_last_ticks(
            advanced_ticks(checked, results) if lost else decision.last_ticks
        )
        return results

    async def _insert_claimed(
        self, claims: list[TickClaim], checked: list[CheckedClaim | None], decision: ClaimDecision
    ) -> list[int]:
        """Insert the records the decision made, in one unordered write;
        answer the positions of those whose key another writer took first."""
        if not decision.inserts:
            return []
        documents: list[_Doc] = []
        for position in decision.inserts:
            result, entry = decision.results[position], checked[position]
            assert result.execution is not None and entry is not None
            document = _execution_document(result.execution, slot=entry.slot)
            # Absent means sent (records written before the field existed).
            document["dispatched"] = inserted_dispatched(claims[position], result)
            documents.append(document)
        return [decision.inserts[index] for index in await self._insert_new(documents)]

    async def _replace_running(
        self,
        claims: list[TickClaim],
        results: list[ClaimResult],
        replacing: Mapping[int, Sequence[str]],
        started: Mapping[str, int | None],
    ) -> None:
        """End the runs that CLAIMED `replace` claims supersede, in one bulk
        write after the claims' inserts, and put in each result the ids it
        did end (read back: a run may have finished on its own meanwhile).
        `started` has the `executed_at` of the runs read from the store; the
        rest were claimed in this batch."""
        claimed = {claim.execution_id: claim for claim in claims}
        updates: list[UpdateOne] = []
        wanted: dict[str, tuple[int, str]] = {}  # replaced id -> (position, message)
        for position, old_ids in replacing.items():
            if results[position].outcome is not ClaimOutcome.CLAIMED or not old_ids:
                continue  # lost its key to a concurrent writer: it replaces nothing
            finished_ms = unix_ms(claims[position].executed_at)
            message = replaced_message(claims[position].execution_id)
            for old_id in old_ids:
                executed_ms = (
                    started[old_id] if old_id in started else unix_ms(claimed[old_id].executed_at)
                )
                duration = None if executed_ms is None else max(0, finished_ms - executed_ms)
                replaced = {
                    "status": ExecutionStatus.FAILURE.value,
                    "finished_at": finished_ms,
                    "finished_date": _bson_date(from_unix_ms(finished_ms)),
                    "duration_ms": duration,
                    "error": {"type": "replaced", "message": message},
                }
                updates.append(UpdateOne({"_id": old_id, "status": _RUNNING}, {"$set": replaced}))
                wanted[old_id] = (position, message)
        if not updates:
            return
        await self._executions.bulk_write(updates, ordered=False)
        found = self._executions.find({"_id": {"$in": list(wanted)}}, {"status": 1, "error": 1})
        ended: dict[int, list[str]] = {}
        for document in await found.to_list():
            position, message = wanted[document["_id"]]
            error = document.get("error") or {}
            if error.get("type") == "replaced" and error.get("message") == message:
                ended.setdefault(position, []).append(document["_id"])
        for position, ids in ended.items():
            order = {old_id: n for n, old_id in enumerate(replacing[position])}
            ids.sort(key=order.__getitem__)
            results[position] = dataclasses.replace(results[position], replaced=tuple(ids))

    async def _advance_last_ticks(self, last_ticks: Mapping[str, int]) -> None:
        """Move each job's `last_tick` forward (never back) to the given tick:
        `$max` by another name, as one update per distinct tick (a batch's jobs
        mostly share one), all in one round trip."""
        by_tick: dict[int, list[str]] = {}
        for job_id, ms in last_ticks.items():
            by_tick.setdefault(ms, []).append(job_id)
        if by_tick:
            await self._jobs.bulk_write(
                [
                    UpdateMany(
                        {"_id": {"$in": job_ids}, "last_tick": {"$lt": ms}},
                        {"$set": {"last_tick": ms}},
                    )
                    for ms, job_ids in by_tick.items()
                ],
                ordered=False,
            )

    async def _claim_context(
        self, live: list[CheckedClaim]
    ) -> tuple[StoredClaims, dict[str, int | None]]:
        """What the batch's decisions depend on, in up to three queries sent
        together (not one `$or`: nx-27017 answers that by a full scan); and
        when each RUNNING execution found started (`executed_at`, Unix ms)."""
        by_id = {entry.claim.execution_id: entry for entry in live}
        queries: list[_Doc] = [{"_id": {"$in": list(by_id)}}]
        ticks = [entry for entry in live if entry.slot == TICK_SLOT]
        if ticks:
            queries.append(
                {
                    "scheduled_at": {"$in": list({entry.scheduled_ms for entry in ticks})},
                    "job_id": {"$in": list({entry.claim.job_id for entry in ticks})},
                    "slot": TICK_SLOT,
                }
            )
        watched = watched_jobs(live)
        if watched:
            queries.append({"job_id": {"$in": list(watched)}, "status": _RUNNING})
        answers = await asyncio.gather(
            *(self._executions.find(query).to_list() for query in queries)
        )
        taken: set[tuple[str, int, str]] = set()
        running: dict[str, list[str]] = {}
        started: dict[str, int | None] = {}
        earlier: dict[str, ClaimResult] = {}
        for document in itertools.chain.from_iterable(answers):
            taken.add((document["job_id"], document["scheduled_at"], document["slot"]))
            entry = by_id.get(document["_id"])
            if entry is not None and document["_id"] not in earlier:
                record = _execution_from_document(document)
                earlier[document["_id"]] = answer_again(entry, record, document["slot"])
            if document["status"] == _RUNNING and document["job_id"] in watched:
                runs = running.setdefault(document["job_id"], [])
                if document["_id"] not in runs:  # found by two of the queries
                    runs.append(document["_id"])
                    started[document["_id"]] = document["executed_at"]
        return StoredClaims(taken=taken, running=running, earlier=earlier), started

    async def _insert_new(self, documents: list[_Doc]) -> list[int]:
        """Insert every record whose unique keys are free; answer the indexes
        (into `documents`) of those that were not, being taken."""
        try:
            await self._executions.insert_many(documents, ordered=False)
        except BulkWriteError as e:
            errors: list[Mapping[str, Any]] = e.details.get("writeErrors", [])
            if e.details.get("writeConcernErrors") or any(
                error.get("code") != _DUPLICATE_KEY for error in errors
            ):
                raise
            return [error["index"] for error in errors]
        return []

    async def record_missed(
        self,
        job: Job,
        ticks: Sequence[datetime],
        *,
        instance_id: str,
        now: datetime,
        reason: str,
    ) -> int:
        with self._calling():
            if not ticks or not is_valid_id(job.id):
                return 0
            current = await self._jobs.find_one({"_id": job.id}, {"version": 1, "is_active": 1})
            if current is None or current["version"] != job.version or not current["is_active"]:
                return 0  # gone, changed or paused: these ticks are not owed
            documents = [
                _execution_document(
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
                    slot=TICK_SLOT,
                )
                for tick in ticks
            ]
            taken = await self._insert_new(documents)
            await self._advance_last_ticks({job.id: max(unix_ms(tick) for tick in ticks)})
            return len(documents) - len(taken)

    async def finish_executions(self, executions: Sequence[Execution]) -> FinishReport:
        with self._calling():
            for execution in executions:
                if not execution.status.is_final:
                    raise ValueError(f"execution {execution.id!r} is not final: {execution.status}")
            valid = [execution for execution in executions if is_valid_id(execution.id)]
            stored: dict[str, _Doc] = {}
            if valid:
                # Ordered: an id twice in one batch is finished by its first entry.
                await self._executions.bulk_write(
                    [
                        UpdateOne(
                            {"_id": execution.id, "status": _RUNNING},
                            {"$set": _final_fields(execution)},
                        )
                        for execution in valid
                    ],
                    ordered=True,
                )
                found = self._executions.find({"_id": {"$in": [e.id for e in valid]}})
                stored = {document["_id"]: document for document in await found.to_list()}
            missing: list[str] = []
            already_final: list[tuple[str, ExecutionStatus]] = []
            job_updates: list[UpdateOne] = []
            for execution in executions:
                document = stored.get(execution.id)
                if document is None:
                    missing.append(execution.id)
                elif _holds_final_state(document, execution):
                    job_updates.append(_last_run_update(document["job_id"], execution))
                else:  # it was final already, and is left as it is
                    already_final.append((execution.id, ExecutionStatus(document["status"])))
            if job_updates:
                await self._jobs.bulk_write(job_updates, ordered=True)
            return FinishReport(missing=tuple(missing), already_final=tuple(already_final))

    async def get_execution(self, execution_id: str) -> Execution:
        with self._calling():
            document = None
            if is_valid_id(execution_id):
                document = await self._executions.find_one({"_id": execution_id})
            if document is None:
                raise ExecutionNotFound(execution_id)
            return _execution_from_document(document)

    async def import_executions(self, executions: Sequence[Execution]) -> list[str]:
        with self._calling():
            check_importable(executions)
            if not executions:
                return []
            documents = [_execution_document(e, slot=tick_slot(e)) for e in executions]
            taken = set(await self._insert_new(documents))
            return [e.id for index, e in enumerate(executions) if index in taken]

    async def delete_execution(self, execution_id: str) -> None:
        with self._calling():
            if not is_valid_id(execution_id):
                raise ExecutionNotFound(execution_id)
            deleted = await self._executions.delete_one({"_id": execution_id})
            if deleted.deleted_count == 0:
                raise ExecutionNotFound(execution_id)

    async def list_executions(self, query: ExecutionQuery) -> Page[Execution]:
        with self._calling():
            check_limit(query.limit)
            selector: _Doc = {}
            if query.job_id is not None:
                selector["job_id"] = query.job_id
            if query.status is not None:
                selector["status"] = query.status.value
            window: _Doc = {}
            if query.since is not None:
                window["$gte"] = unix_ms(query.since)
            if query.until is not None:
                window["$lt"] = unix_ms(query.until)
            if window:
                selector["scheduled_at"] = window
            if query.cursor is not None:
                ms, execution_id = decode_execution_cursor(query.cursor)
                selector["$or"] = [
                    {"scheduled_at": {"$lt": ms}},
                    {"scheduled_at": ms, "_id": {"$lt": execution_id}},
                ]
            found = (
                self._executions.find(selector)
                .sort([("scheduled_at", DESCENDING), ("_id", DESCENDING)])
                .limit(query.limit + 1)
            )
            documents = await found.to_list()
            page = documents[: query.limit]
            next_cursor = None
            if len(documents) > query.limit:
                last = page[-1]
                next_cursor = encode_cursor(["e", last["scheduled_at"], last["_id"]])
            items = [_execution_from_document(document) for document in page]
            return Page(items=items, next_cursor=next_cursor)

    async def mark_dispatched(self, instance_id: str, execution_ids: Collection[str]) -> set[str]:
        if not execution_ids:
            return set()
        with self._calling():
            ids = list(execution_ids)
            selector = {"_id": {"$in": ids}, "instance_id": instance_id, "status": _RUNNING}
            result = await self._executions.update_many(selector, {"$set": {"dispatched": True}})
            if result.matched_count == len(ids):
                return set(ids)
            found = self._executions.find(selector, {"_id": 1})
            return {document["_id"] for document in await found.to_list()}

    async def adopt_unsent(
        self, *, live_instances: Collection[str], instance_id: str
    ) -> list[Execution]:
        with self._calling():
            selector = {
                "status": _RUNNING,
                "dispatched": False,
                "instance_id": {"$nin": list(live_instances)},
            }
            found = self._executions.find(selector, {"_id": 1, "instance_id": 1})
            adopted: list[Execution] = []
            # One conditional update each: of two leaders, one takes a record.
            for candidate in await found.to_list():
                document = await self._executions.find_one_and_update(
                    {**selector, "_id": candidate["_id"], "instance_id": candidate["instance_id"]},
                    {"$set": {"instance_id": instance_id}},
                    return_document=ReturnDocument.AFTER,
                )
                if document is not None:
                    adopted.append(_execution_from_document(document))
            return sorted(adopted, key=lambda execution: (execution.scheduled_at, execution.id))

    async def mark_lost(
        self, *, live_instances: Collection[str], now: datetime, reason: str
    ) -> list[Execution]:
        with self._calling():
            selector = {
                "status": _RUNNING,
                "dispatched": {"$ne": False},
                "instance_id": {"$nin": list(live_instances)},
            }
            found = self._executions.find(selector, {"_id": 1})
            ids = [document["_id"] for document in await found.to_list()]
            if not ids:
                return []
            lost = {
                "status": ExecutionStatus.LOST.value,
                "finished_at": unix_ms(now),
                "finished_date": _bson_date(now),
                "error": {"type": "lost", "message": reason},
            }
            await self._executions.update_many(
                {"_id": {"$in": ids}, "status": _RUNNING}, {"$set": lost}
            )
            # Read back what this call wrote; a record finished in between is not lost.
            found = self._executions.find({"_id": {"$in": ids}})
            marked = [
                _execution_from_document(document)
                for document in await found.to_list()
                if document["status"] == lost["status"]
                and document["finished_at"] == lost["finished_at"]
                and document["error"] == lost["error"]
            ]
            return sorted(marked, key=lambda execution: (execution.scheduled_at, execution.id))

    async def prune_executions(self, older_than: datetime) -> int:
        # In batches, so no single delete holds a server (or nx-27017's lock) for long.
        with self._calling():
            selector = {"scheduled_at": {"$lt": unix_ms(older_than)}, "status": {"$ne": _RUNNING}}
            deleted = 0
            while True:
                found = self._executions.find(selector, {"_id": 1}).limit(_PRUNE_BATCH)
                ids = [document["_id"] for document in await found.to_list()]
                if not ids:
                    return deleted
                result = await self._executions.delete_many({**selector, "_id": {"$in": ids}})
                deleted += result.deleted_count
                if len(ids) < _PRUNE_BATCH:
                    return deleted

    async def ping(self) -> None:
        with self._calling():
            await self._client.admin.command("ping")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True  # from here on every call is refused
        await asyncio.shield(self._client.close())  # a cancelled aclose still closes


def _claim_job(document: _Doc) -> ClaimJob:
    return ClaimJob(
        document["version"],
        bool(document["is_active"]),
        document["name"],
        ConcurrencyPolicy(document["concurrency_policy"]),
        document.get("deferred_until"),
    )


def _last_run_update(job_id: str, execution: Execution) -> UpdateOne:
    """Set the job's last run from `execution`, unless a later-started run
    already did (runs may finish out of order)."""
    status = execution.status.value
    if execution.executed_at is None:
        return UpdateOne({"_id": job_id}, {"$set": {"last_status": status}})
    executed_ms = unix_ms(execution.executed_at)
    return UpdateOne(
        {"_id": job_id, "$or": [{"last_run_at": None}, {"last_run_at": {"$lte": executed_ms}}]},
        {"$set": {"last_run_at": executed_ms, "last_status": status}},
    )


def _holds_final_state(document: _Doc, execution: Execution) -> bool:
    """Whether the stored record is `execution`'s final state (written by this
    call, or by an identical earlier one)."""
    wanted = _final_fields(execution)
    del wanted["finished_date"]  # written, never read back
    return all(document.get(name) == value for name, value in wanted.items())


async def _create_indexes(
    database: AsyncDatabase[_Doc], build_info: Mapping[str, Any], retention_days: float | None
) -> None:
    # nx-27017 builds a compound index holding `_id` that makes every later
    # insert fail; there, the newest-first indexes end at `scheduled_at`.
    tie: list[tuple[str, int]] = [] if _is_nx_27017(build_info) else [("_id", DESCENDING)]
    newest = [("scheduled_at", DESCENDING), *tie]
    running = {"status": _RUNNING}
    executions = database["executions"]
    await executions.create_indexes(
        [
            IndexModel(
                [("job_id", ASCENDING), ("scheduled_at", ASCENDING), ("slot", ASCENDING)],
                name="tick_key",
                unique=True,
            ),
            IndexModel(newest, name="newest"),
            IndexModel([("job_id", ASCENDING), *newest], name="by_job"),
            IndexModel([("status", ASCENDING), *newest], name="by_status"),
            IndexModel(
                [("job_id", ASCENDING)], name="running_by_job", partialFilterExpression=running
            ),
            IndexModel(
                [("instance_id", ASCENDING)],
                name="running_by_instance",
                partialFilterExpression=running,
            ),
        ]
    )
    await database["jobs"].create_indexes(
        [
            IndexModel([("name", ASCENDING)], name=_JOB_NAME_INDEX, unique=True),
            IndexModel([("is_active", ASCENDING)], name="active"),
            IndexModel([("tags", ASCENDING)], name="tags"),
        ]
    )
    if retention_days is not None:
        await _keep_ttl_index(database, max(1, round(retention_days * 86400)))


async def _keep_ttl_index(database: AsyncDatabase[_Doc], expire_after_s: int) -> None:
    """Create the TTL index, or change its expiry if it exists with another."""
    executions = database["executions"]
    index = IndexModel(
        [("finished_date", ASCENDING)], name=_TTL_INDEX, expireAfterSeconds=expire_after_s
    )
    try:
        await executions.create_indexes([index])
    except OperationFailure as e:
        if e.code not in _INDEX_OPTIONS_CONFLICT:
            raise
        await database.command(
            "collMod",
            executions.name,
            index={"name": _TTL_INDEX, "expireAfterSeconds": expire_after_s},
        )


def _is_nx_27017(build_info: Mapping[str, Any]) -> bool:
    return build_info.get("process") == "nx_27017"


def _client_options(url: str) -> dict[str, Any]:
    """`_CLIENT_DEFAULTS` less the options the URL sets itself."""
    query = url.partition("?")[2]
    given = {name.lower() for name, _ in parse_qsl(query.replace(";", "&"))}
    return {name: value for name, value in _CLIENT_DEFAULTS.items() if name.lower() not in given}


def _is_unavailable(error: PyMongoError) -> bool:
    """Errors of a server that cannot serve us right now (network, timeouts,
    elections, shutdown), as opposed to a request that is wrong."""
    # ConnectionFailure covers AutoReconnect, NetworkTimeout, NotPrimaryError
    # and ServerSelectionTimeoutError.
    if isinstance(error, ConnectionFailure | ExecutionTimeout | WTimeoutError):
        return True
    return error.has_error_label("RetryableWriteError") or error.has_error_label(
        "TransientTransactionError"
    )


def _is_name_conflict(error: DuplicateKeyError) -> bool:
    details = error.details or {}
    key_pattern = details.get("keyPattern")
    if isinstance(key_pattern, Mapping):
        return "name" in key_pattern
    message = str(details.get("errmsg", error))
    # MongoDB names the index; nx-27017 names its own ("idx_jobs_name").
    return _JOB_NAME_INDEX in message or "idx_jobs_name" in message


def _bson_date(instant: datetime | None) -> datetime | None:
    return None if instant is None else from_unix_ms(unix_ms(instant))


def _spec_fields(spec: JobSpec) -> _Doc:
    """The fields of a job document that its spec sets."""
    return {
        "name": spec.name,
        "cron_expression": spec.cron_expression,
        "timezone": spec.timezone,
        "webhook_url": spec.webhook_url,
        "http_method": spec.http_method.value,
        "headers": [[name, value] for name, value in spec.headers.items()],
        "body_json": None if spec.body is None else json_text(spec.body),
        "timeout_seconds": float(spec.timeout_seconds),
        "retry": {
            "max_attempts": int(spec.retry.max_attempts),
            "backoff_seconds": float(spec.retry.backoff_seconds),
            "max_backoff_seconds": float(spec.retry.max_backoff_seconds),
        },
        "concurrency_policy": spec.concurrency_policy.value,
        "misfire_policy": spec.misfire_policy.value,
        "misfire_grace_seconds": int(spec.misfire_grace_seconds),
        "is_active": bool(spec.is_active),
        "secret": spec.secret,
        "tags": list(spec.tags),
    }


def _previous_secret_fields(previous: PreviousSecret | None) -> _Doc:
    return {
        "previous_secret": None if previous is None else previous.secret,
        "previous_secret_expires_at": None if previous is None else unix_ms(previous.expires_at),
    }


def _job_document(job: Job) -> _Doc:
    spec = _spec_fields(job.spec)
    return {
        "_id": job.id,
        **spec,
        "version": job.version,
        "created_at": unix_ms(job.created_at),
        "updated_at": unix_ms(job.updated_at),
        "last_tick": unix_ms(job.last_tick),
        "last_run_at": opt_unix_ms(job.last_run_at),
        "last_status": None if job.last_status is None else job.last_status.value,
        "paused_reason": job.paused_reason,
        "deferred_until": opt_unix_ms(job.deferred_until),
        **_previous_secret_fields(job.previous_secret),
        "schedule_history": [_revision_document(job.version, job.last_tick, spec)],
    }


def _schedule_fields(document: Mapping[str, Any]) -> tuple[str, str, bool]:
    return (document["cron_expression"], document["timezone"], bool(document["is_active"]))


def _revision_document(version: int, effective_from: datetime, fields: Mapping[str, Any]) -> _Doc:
    cron_expression, timezone, is_active = _schedule_fields(fields)
    return {
        "version": version,
        "effective_from": unix_ms(effective_from),
        "cron_expression": cron_expression,
        "timezone": timezone,
        "is_active": is_active,
    }


def _history_documents(document: Mapping[str, Any]) -> list[_Doc]:
    """A job document's schedule history (read with `_REVISION_FIELDS`). A
    job written before the history existed gets one revision: its schedule
    as it is now, in force since it was created (earlier changes are not
    known)."""
    history = document.get("schedule_history")
    if history:
        return [dict(revision) for revision in history]
    created = from_unix_ms(document["created_at"])
    return [_revision_document(document["version"], created, document)]


def _job_from_document(document: _Doc) -> Job:
    # Scalars are converted: nx-27017 reads a bool written by `$set` back as 0 or 1.
    retry = document["retry"]
    body_json = document["body_json"]
    last_status = document["last_status"]
    previous_secret = document.get("previous_secret")
    spec = JobSpec(
        name=document["name"],
        cron_expression=shared_text(document["cron_expression"]),
        timezone=shared_text(document["timezone"]),
        webhook_url=document["webhook_url"],
        http_method=HttpMethod(document["http_method"]),
        headers=shared_headers(dict(document["headers"])),
        body=None if body_json is None else json.loads(body_json),
        timeout_seconds=float(document["timeout_seconds"]),
        retry=shared_retry(
            int(retry["max_attempts"]),
            float(retry["backoff_seconds"]),
            float(retry["max_backoff_seconds"]),
        ),
        concurrency_policy=ConcurrencyPolicy(document["concurrency_policy"]),
        misfire_policy=MisfirePolicy(document["misfire_policy"]),
        misfire_grace_seconds=int(document["misfire_grace_seconds"]),
        is_active=bool(document["is_active"]),
        secret=document["secret"],
        tags=tuple(document["tags"]),
    )
    return Job(
        id=document["_id"],
        spec=spec,
        version=document["version"],
        created_at=from_unix_ms(document["created_at"]),
        updated_at=from_unix_ms(document["updated_at"]),
        last_tick=from_unix_ms(document["last_tick"]),
        last_run_at=opt_from_unix_ms(document["last_run_at"]),
        last_status=None if last_status is None else ExecutionStatus(last_status),
        # Absent in documents written before these fields existed.
        paused_reason=document.get("paused_reason"),
        deferred_until=opt_from_unix_ms(document.get("deferred_until")),
        previous_secret=None
        if previous_secret is None
        else PreviousSecret(
            secret=previous_secret,
            expires_at=from_unix_ms(int(document["previous_secret_expires_at"])),
        ),
    )


def _final_fields(execution: Execution) -> _Doc:
    """The fields of an execution document that finishing it sets."""
    e = execution
    return {
        "status": e.status.value,
        "instance_id": e.instance_id,
        "executed_at": opt_unix_ms(e.executed_at),
        "finished_at": opt_unix_ms(e.finished_at),
        "finished_date": _bson_date(e.finished_at),
        "duration_ms": e.duration_ms,
        "attempts": e.attempts,
        "response_status": e.response_status,
        "response_body": e.response_body,
        "response_truncated": bool(e.response_truncated),
        "error": None if e.error is None else {"type": e.error.type, "message": e.error.message},
        "attempt_log": attempt_documents(e.attempt_log),
    }


def _execution_document(execution: Execution, *, slot: str) -> _Doc:
    e = execution
    return {
        "_id": e.id,
        "job_id": e.job_id,
        "job_name": e.job_name,
        "trigger": e.trigger.value,
        "scheduled_at": unix_ms(e.scheduled_at),
        "slot": slot,
        **_final_fields(e),
    }


def _execution_from_document(document: _Doc) -> Execution:
    error = document["error"]
    return Execution(
        id=document["_id"],
        job_id=document["job_id"],
        job_name=document["job_name"],
        trigger=Trigger(document["trigger"]),
        scheduled_at=from_unix_ms(document["scheduled_at"]),
        status=ExecutionStatus(document["status"]),
        instance_id=document["instance_id"],
        executed_at=opt_from_unix_ms(document["executed_at"]),
        finished_at=opt_from_unix_ms(document["finished_at"]),
        duration_ms=document["duration_ms"],
        attempts=document["attempts"],
        response_status=document["response_status"],
        response_body=document["response_body"],
        response_truncated=bool(document["response_truncated"]),
        error=None if error is None else ErrorInfo(type=error["type"], message=error["message"]),
        attempt_log=attempts_from_documents(document.get("attempt_log")),
    )
