"""The jobs of the MongoDB store: `JobStore`, what a scheduler reads of them
(`ScheduleSource`), and each job's alert state (`AlertStates`). A job update is
a compare-and-set on its version, read again when another write came in
between. A job's schedule history lives in its document, so the one update that
changes a job records the revision; it is written whole with ``$set`` (nx-27017
mangles ``$push`` with ``$slice``) and left out of every other read. Headers are
pairs, not a subdocument: they keep their order, and a name may hold ``.`` or
start with ``$``. `body_json` is JSON text, so a str stays apart from a JSON
document.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import bson
import structlog
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError

from cronsvc.alerts import NO_STATE, AlertChange, AlertState, AlertStep, apply_outcomes
from cronsvc.domain import (
    ConcurrencyPolicy,
    ExecutionStatus,
    HttpMethod,
    Job,
    JobSpec,
    MisfirePolicy,
    PreviousSecret,
    ScheduleRevision,
)
from cronsvc.errors import DuplicateJobName, JobNotFound, StoreUnavailable, VersionConflict
from cronsvc.ids import is_valid_id
from cronsvc.store import (
    KEEP,
    MAX_ALERT_CONFLICTS,
    MAX_SCHEDULE_REVISIONS,
    ActiveSchedule,
    JobQuery,
    Keep,
    Page,
    SchedulePage,
)
from cronsvc.store.common import (
    alerts_document,
    alerts_from_document,
    cached_instant,
    check_limit,
    check_seeded,
    decode_job_cursor,
    encode_cursor,
    from_unix_ms,
    json_text,
    opt_from_unix_ms,
    opt_unix_ms,
    prefix_upper_bound,
    shared_headers,
    shared_retry,
    shared_text,
    state_document,
    state_from_document,
    unix_ms,
)
from cronsvc.store.mongo_base import Doc, MongoPart, is_name_conflict

log = structlog.get_logger(__name__)

_UPDATE_ATTEMPTS = 5
_DUPLICATE_KEY = 11000
REVISION_FIELDS = dict.fromkeys(
    ("version", "created_at", "cron_expression", "timezone", "is_active", "schedule_history"), 1
)
WITHOUT_HISTORY = {"schedule_history": 0}
_SCHEDULE_FIELDS = dict.fromkeys(ActiveSchedule._fields[1:], 1)  # and `_id`, always sent
_RAW_DOCUMENTS: CodecOptions[RawBSONDocument] = CodecOptions(document_class=RawBSONDocument)


class MongoJobs(MongoPart):
    async def create_job(self, job: Job) -> Job:
        with self._calling():
            if not is_valid_id(job.id):
                raise ValueError(f"job id {job.id!r} is not well formed")
            document = job_document(job)
            try:
                await self._jobs.insert_one(document)
            except DuplicateKeyError as e:
                if is_name_conflict(e):
                    raise DuplicateJobName(job.spec.name) from None
                raise
            return job_from_document(document)

    async def seed_jobs(self, jobs: Sequence[Job]) -> None:
        """`create_job` for many jobs in one ordered `insert_many`, to fill a
        store (benchmarks, tests); not part of `Store`. Raises `ValueError` for
        an id not well formed and `DuplicateJobName` for a name twice in `jobs`,
        inserting none of them; for a name a stored job holds, `DuplicateJobName`
        after the jobs ahead of it are in (no transactions to undo them)."""
        with self._calling():
            check_seeded(jobs)
            documents = [job_document(job) for job in jobs]
            if not documents:
                return
            try:
                await self._jobs.insert_many(documents, ordered=True)
            except BulkWriteError as e:
                errors: list[Mapping[str, Any]] = e.details.get("writeErrors", [])
                for error in errors:
                    conflict = DuplicateKeyError(error.get("errmsg", ""), error.get("code"), error)
                    if error.get("code") == _DUPLICATE_KEY and is_name_conflict(conflict):
                        raise DuplicateJobName(documents[error["index"]]["name"]) from None
                raise

    async def get_job(self, job_id: str) -> Job:
        with self._calling():
            return job_from_document(await self._find_job(job_id, WITHOUT_HISTORY))

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
            changes: Doc = {
                **spec_fields(spec),
                "updated_at": unix_ms(now),
                "paused_reason": None,
                "deferred_until": None,
            }
            if restart_schedule:
                changes["last_tick"] = unix_ms(now)
            if not isinstance(previous_secret, Keep):
                changes.update(previous_secret_fields(previous_secret))
            for _ in range(_UPDATE_ATTEMPTS):
                updated = await self._update_job_once(job_id, changes, now, expected_version)
                if updated is not None:
                    return updated
            raise StoreUnavailable(
                f"mongodb store {self._url}: job {job_id!r} kept changing; not updated"
            )

    async def _update_job_once(
        self, job_id: str, changes: Doc, now: datetime, expected_version: int | None
    ) -> Job | None:
        """None if another write came in between and the caller may try again."""
        current = await self._find_job(job_id, REVISION_FIELDS)
        version = current["version"]
        if expected_version is not None and version != expected_version:
            raise VersionConflict(job_id, expected_version, version)
        if schedule_fields(current) != schedule_fields(changes):
            history = _history_with(current, version + 1, now, changes)
            changes = {**changes, "schedule_history": history}
        try:
            updated = await self._jobs.find_one_and_update(
                {"_id": job_id, "version": version},
                {"$set": changes, "$inc": {"version": 1}},
                projection=WITHOUT_HISTORY,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            raise DuplicateJobName(changes["name"]) from None
        if updated is not None:
            return job_from_document(updated)
        latest = await self._jobs.find_one({"_id": job_id}, {"version": 1})
        if latest is None:
            raise JobNotFound(job_id)
        if latest["version"] != version:
            if expected_version is not None:
                raise VersionConflict(job_id, expected_version, latest["version"])
            return None  # changed in between: read it again
        # The job matched, yet nothing was written: nx-27017 answers a
        # unique-index violation in findAndModify with "no document".
        taken = {"name": changes["name"], "_id": {"$ne": job_id}}
        if await self._jobs.find_one(taken, {"_id": 1}) is not None:
            raise DuplicateJobName(changes["name"])
        raise StoreUnavailable(f"mongodb store {self._url}: job {job_id!r} was not updated")

    async def pause_job(
        self, job_id: str, *, expected_version: int, reason: str, now: datetime
    ) -> Job | None:
        with self._calling():
            if not is_valid_id(job_id):
                return None
            current = await self._jobs.find_one({"_id": job_id}, REVISION_FIELDS)
            if not (current and current["version"] == expected_version and current["is_active"]):
                return None
            changes: Doc = {
                "is_active": False,
                "paused_reason": reason,
                "updated_at": unix_ms(now),
                # Paused is a change of schedule: the ledger owes no ticks from now on.
                "schedule_history": _history_with(
                    current, expected_version + 1, now, {**current, "is_active": False}
                ),
            }
            updated = await self._jobs.find_one_and_update(
                {"_id": job_id, "version": expected_version, "is_active": True},
                {"$set": changes, "$inc": {"version": 1}},
                projection=WITHOUT_HISTORY,
                return_document=ReturnDocument.AFTER,
            )
            return None if updated is None else job_from_document(updated)

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
            # Also when the job was gone already: a retry after a lost answer.
            await self._alert_states.delete_one({"_id": job_id})
            if deleted.deleted_count == 0:
                raise JobNotFound(job_id)

    async def list_jobs(self, query: JobQuery) -> Page[Job]:
        with self._calling():
            check_limit(query.limit)
            selector: Doc = {}
            if query.is_active is not None:
                selector["is_active"] = query.is_active
            if query.tag is not None:
                # `$in`, not equality: nx-27017 matches no array element by
                # equality once the field has an index.
                selector["tags"] = {"$in": [query.tag]}
            if query.name_prefix:
                # A range on the unique name index: case-sensitive and literal.
                name_range: Doc = {"$gte": query.name_prefix}
                upper = prefix_upper_bound(query.name_prefix)
                if upper is not None:
                    name_range["$lt"] = upper
                selector["name"] = name_range
            if query.cursor is not None:
                selector["_id"] = {"$lt": decode_job_cursor(query.cursor)}
            found = (
                self._jobs.find(selector, WITHOUT_HISTORY)
                .sort("_id", DESCENDING)
                .limit(query.limit + 1)
            )
            documents = await found.to_list()
            items = [job_from_document(document) for document in documents[: query.limit]]
            more = len(documents) > query.limit
            next_cursor = encode_cursor(["j", items[-1].id]) if more else None
            return Page(items=items, next_cursor=next_cursor)

    async def _find_job(self, job_id: str, projection: Doc) -> Doc:
        valid = is_valid_id(job_id)
        document = await self._jobs.find_one({"_id": job_id}, projection) if valid else None
        if document is None:
            raise JobNotFound(job_id)
        return document

    async def count_jobs(self) -> int:
        with self._calling():
            return await self._jobs.count_documents({})

    async def schedule_history(self, job_id: str) -> list[ScheduleRevision]:
        with self._calling():
            document = await self._find_job(job_id, REVISION_FIELDS)
            return [
                ScheduleRevision(
                    version=int(revision["version"]),
                    effective_from=from_unix_ms(revision["effective_from"]),
                    cron_expression=revision["cron_expression"],
                    timezone=revision["timezone"],
                    is_active=bool(revision["is_active"]),
                )
                for revision in history_documents(document)
            ]


def _history_with(current: Doc, version: int, now: datetime, fields: Doc) -> list[Doc]:
    """`current`'s schedule history with a revision from `fields` added, trimmed."""
    revisions = [*history_documents(current), revision_document(version, now, fields)]
    return revisions[-MAX_SCHEDULE_REVISIONS:]


class MongoSchedules(MongoPart):
    async def active_jobs(self, job_ids: Collection[str] | None = None) -> list[Job]:
        with self._calling():
            selector: Doc = {"is_active": True}
            if job_ids is not None:
                selector["_id"] = {"$in": [i for i in job_ids if is_valid_id(i)]}
            documents = await self._jobs.find(selector, WITHOUT_HISTORY).to_list()
            return [job_from_document(document) for document in documents]

    async def active_versions(
        self, after: str | None = None, limit: int | None = None
    ) -> dict[str, int]:
        if limit is not None:
            check_limit(limit)
        with self._calling():
            selector: Doc = {"is_active": True}
            if limit is not None and after is not None:
                selector["_id"] = {"$gt": after}
            found = self._jobs.find(selector, {"version": 1})
            if limit is not None:
                found = found.sort("_id", ASCENDING).limit(limit)
            return {document["_id"]: document["version"] for document in await found.to_list()}

    async def active_schedules(
        self,
        after: str | None = None,
        limit: int = 20_000,
        *,
        keep: Callable[[str], bool] | None = None,
    ) -> SchedulePage:
        check_limit(limit)
        with self._calling():
            selector: Doc = {"is_active": True}
            if after is not None:
                selector["_id"] = {"$gt": after}
            raw = self._jobs.with_options(codec_options=_RAW_DOCUMENTS)
            found = raw.find(selector, _SCHEDULE_FIELDS).sort("_id", ASCENDING).limit(limit)
            page = await found.to_list()
        # The page is held as its BSON and each document decoded alone: the
        # jobs `keep` refuses (an owner's share is a fraction) are never
        # held as Python objects, so an owner's memory is its share's.
        instants: dict[int, datetime] = {}
        rows: list[ActiveSchedule] = []
        for document in page:
            d = bson.decode(document.raw)
            if keep is None or keep(d["_id"]):
                rows.append(
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
                )
        last = bson.decode(page[-1].raw)["_id"] if len(page) == limit else None
        return SchedulePage(rows=rows, next_after=last)

    async def current_versions(self, job_ids: Collection[str]) -> dict[str, int]:
        with self._calling():
            wanted = [job_id for job_id in job_ids if is_valid_id(job_id)]
            if not wanted:
                return {}
            found = self._jobs.find({"_id": {"$in": wanted}, "is_active": True}, {"version": 1})
            return {document["_id"]: document["version"] for document in await found.to_list()}


class MongoAlerts(MongoPart):
    """One document per job in `alert_states`, changed by compare-and-set on its
    `version` (a first state is an insert the `_id` fences). A round's reads, and
    its writes, go out together; the losers go round again. A retry after a lost
    answer counts its outcomes once (the state keeps what its latest write
    applied), unless another writer changed the state in between."""

    async def apply_alert_outcomes(
        self, steps: Sequence[AlertStep], now: datetime
    ) -> list[AlertChange]:
        with self._calling():
            ids = list({step.job_id for step in steps})
            existing = {
                doc["_id"] async for doc in self._jobs.find({"_id": {"$in": ids}}, {"_id": 1})
            }
            left = [(n, step) for n, step in enumerate(steps) if step.job_id in existing]
            effected: dict[int, list[AlertChange]] = {}
            for _ in range(MAX_ALERT_CONFLICTS):
                if not left:
                    break
                left = await self._try(left, now, effected)
            for _, step in left:
                log.error("alert_state_conflicts", job_id=step.job_id, tries=MAX_ALERT_CONFLICTS)
            return [change for n in sorted(effected) for change in effected[n]]

    async def _try(
        self,
        steps: list[tuple[int, AlertStep]],
        now: datetime,
        effected: dict[int, list[AlertChange]],
    ) -> list[tuple[int, AlertStep]]:
        """One round over the steps (numbered in call order); those whose writes lost."""
        ids = [step.job_id for _, step in steps]
        stored = {doc["_id"]: doc async for doc in self._alert_states.find({"_id": {"$in": ids}})}
        lost: list[tuple[int, AlertStep]] = []
        writes: list[tuple[int, AlertStep, list[AlertChange], AlertState, AlertState]] = []
        claimed: set[str] = set()
        for n, step in steps:
            if step.job_id in claimed:  # a second step of one job: after the first is in
                lost.append((n, step))
                continue
            doc = stored.get(step.job_id)
            state = NO_STATE if doc is None else state_from_document(doc["state"], doc["version"])
            new, changes = apply_outcomes(state, step, now)
            if new is state:
                if changes:  # a lost write's alerts, told again
                    effected[n] = changes
                continue
            claimed.add(step.job_id)
            writes.append((n, step, changes, state, new))
        won = await asyncio.gather(
            *(self._write(step.job_id, state, new) for _, step, _, state, new in writes)
        )
        for (n, step, changes, _, _), ok in zip(writes, won, strict=True):
            if ok:
                effected[n] = changes
            else:
                lost.append((n, step))
        return lost

    async def _write(self, job_id: str, state: AlertState, new: AlertState) -> bool:
        document = {"version": new.version, "state": state_document(new)}
        if state.version == 0:
            try:
                await self._alert_states.insert_one({"_id": job_id, **document})
            except DuplicateKeyError:
                return False  # another writer stored the first state
            return True
        written = await self._alert_states.update_one(
            {"_id": job_id, "version": state.version}, {"$set": document}
        )
        return written.matched_count == 1

    async def alert_states(self, job_ids: Collection[str]) -> dict[str, AlertState]:
        with self._calling():
            ids = list(job_ids)
            if not ids:
                return {}
            return {
                doc["_id"]: state_from_document(doc["state"], doc["version"])
                async for doc in self._alert_states.find({"_id": {"$in": ids}})
            }


def spec_fields(spec: JobSpec) -> Doc:
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
        "alerts": alerts_document(spec.alerts),
    }


def previous_secret_fields(previous: PreviousSecret | None) -> Doc:
    return {
        "previous_secret": None if previous is None else previous.secret,
        "previous_secret_expires_at": None if previous is None else unix_ms(previous.expires_at),
    }


def job_document(job: Job) -> Doc:
    spec = spec_fields(job.spec)
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
        **previous_secret_fields(job.previous_secret),
        "schedule_history": [revision_document(job.version, job.last_tick, spec)],
    }


def schedule_fields(document: Mapping[str, Any]) -> tuple[str, str, bool]:
    return (document["cron_expression"], document["timezone"], bool(document["is_active"]))


def revision_document(version: int, effective_from: datetime, fields: Mapping[str, Any]) -> Doc:
    cron_expression, timezone, is_active = schedule_fields(fields)
    return {
        "version": version,
        "effective_from": unix_ms(effective_from),
        "cron_expression": cron_expression,
        "timezone": timezone,
        "is_active": is_active,
    }


def history_documents(document: Mapping[str, Any]) -> list[Doc]:
    """Read with `REVISION_FIELDS`. A job older than the history has one revision:
    its schedule now, since it was created."""
    history = document.get("schedule_history")
    if history:
        return [dict(revision) for revision in history]
    created = from_unix_ms(document["created_at"])
    return [revision_document(document["version"], created, document)]


def job_from_document(document: Doc) -> Job:
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
        alerts=alerts_from_document(document.get("alerts")),
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
        paused_reason=document.get("paused_reason"),
        deferred_until=opt_from_unix_ms(document.get("deferred_until")),
        previous_secret=None
        if previous_secret is None
        else PreviousSecret(
            secret=previous_secret,
            expires_at=from_unix_ms(int(document["previous_secret_expires_at"])),
        ),
    )
