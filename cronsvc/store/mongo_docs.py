"""What every part of `MongoStore` (mixins, so a call costs no hop between
objects) stands on: its collections, the guard of each public call, the writes
more than one role makes, which errors mean what, and the documents' codec.

Fields absent in documents written before they existed read as None (or no
attempts). A job's schedule history lives in its document, so the one update
that changes a job records the revision; it is left out of every other read.
Headers are pairs, not a subdocument: they keep their order, and a name may
hold ``.`` or start with ``$``. `body_json` is JSON text, so a str stays apart
from a JSON document. Instants are int64 Unix ms, not BSON dates: nx-27017
compares dates to the second and turns one written by ``$set`` into a string.
The one BSON date, `finished_date`, is only written, for the optional TTL index;
RUNNING records lack it, so they never expire.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from pymongo import AsyncMongoClient, UpdateMany
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
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
    Trigger,
)
from cronsvc.errors import StoreUnavailable
from cronsvc.store.common import (
    alerts_document,
    alerts_from_document,
    attempt_documents,
    attempts_from_documents,
    from_unix_ms,
    json_text,
    opt_from_unix_ms,
    opt_unix_ms,
    shared_headers,
    shared_retry,
    shared_text,
    unix_ms,
)

Doc = dict[str, Any]

RUNNING = ExecutionStatus.RUNNING.value
REVISION_FIELDS = {
    "version": 1,
    "created_at": 1,
    "cron_expression": 1,
    "timezone": 1,
    "is_active": 1,
    "schedule_history": 1,
}
WITHOUT_HISTORY = {"schedule_history": 0}
_DUPLICATE_KEY = 11000
JOB_NAME_INDEX = "name_unique"


def bson_date(instant: datetime | None) -> datetime | None:
    return None if instant is None else from_unix_ms(unix_ms(instant))


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


def final_fields(execution: Execution) -> Doc:
    e = execution
    return {
        "status": e.status.value,
        "instance_id": e.instance_id,
        "executed_at": opt_unix_ms(e.executed_at),
        "finished_at": opt_unix_ms(e.finished_at),
        "finished_date": bson_date(e.finished_at),
        "duration_ms": e.duration_ms,
        "attempts": e.attempts,
        "response_status": e.response_status,
        "response_body": e.response_body,
        "response_truncated": bool(e.response_truncated),
        "error": None if e.error is None else {"type": e.error.type, "message": e.error.message},
        "attempt_log": attempt_documents(e.attempt_log),
    }


def execution_document(execution: Execution, *, slot: str) -> Doc:
    e = execution
    return {
        "_id": e.id,
        "job_id": e.job_id,
        "job_name": e.job_name,
        "trigger": e.trigger.value,
        "scheduled_at": unix_ms(e.scheduled_at),
        "slot": slot,
        **final_fields(e),
    }


def execution_from_document(document: Doc) -> Execution:
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


class MongoPart:
    def __init__(self, client: AsyncMongoClient[Doc], database: AsyncDatabase[Doc], url: str):
        self._client = client
        self._jobs: AsyncCollection[Doc] = database["jobs"]
        self._executions: AsyncCollection[Doc] = database["executions"]
        self._alert_states: AsyncCollection[Doc] = database["alert_states"]
        self._url = url
        """The URL with its secrets masked: the only form this object keeps."""
        self._closed = False

    @contextmanager
    def _calling(self) -> Iterator[None]:
        """Refused once closed; an unreachable server's errors become `StoreUnavailable`."""
        if self._closed:
            raise StoreUnavailable(f"the store on {self._url} is closed")
        try:
            yield
        except PyMongoError as e:
            if self._closed or is_unavailable(e):  # closed under a call: InvalidOperation
                raise StoreUnavailable(f"mongodb store {self._url}: {e}") from e
            raise

    async def _advance_last_ticks(self, last_ticks: Mapping[str, int]) -> None:
        """`$max` on `last_tick` as one update per distinct tick (a batch's jobs
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

    async def _insert_new(self, documents: list[Doc]) -> list[int]:
        """Insert every record whose unique keys are free; the indexes of the rest."""
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


def is_unavailable(error: PyMongoError) -> bool:
    """A server that cannot serve us right now, as opposed to a wrong request."""
    if isinstance(error, ConnectionFailure | ExecutionTimeout | WTimeoutError):
        return True
    return error.has_error_label("RetryableWriteError") or error.has_error_label(
        "TransientTransactionError"
    )


def is_name_conflict(error: DuplicateKeyError) -> bool:
    details = error.details or {}
    key_pattern = details.get("keyPattern")
    if isinstance(key_pattern, Mapping):
        return "name" in key_pattern
    message = str(details.get("errmsg", error))
    # MongoDB names the index; nx-27017 names its own ("idx_jobs_name").
    return JOB_NAME_INDEX in message or "idx_jobs_name" in message
