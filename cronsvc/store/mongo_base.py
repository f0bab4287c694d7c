"""What every part of `MongoStore` stands on: its collections, the guard of each
public call, the writes more than one role makes, and which errors mean what.
The parts are mixins, so a call costs no hop between objects. In every document,
instants are int64 Unix ms, not BSON dates: nx-27017 compares dates to the
second and turns one written by ``$set`` into a string; fields absent in
documents written before they existed read as None. An update's `$or`
beside other fields sits inside an `$and` with them: nx-27017 joins it to them
unbracketed there, so it would update a document the other fields exclude.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
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

from cronsvc.domain import ExecutionStatus
from cronsvc.errors import StoreUnavailable

Doc = dict[str, Any]

RUNNING = ExecutionStatus.RUNNING.value
_DUPLICATE_KEY = 11000
JOB_NAME_INDEX = "name_unique"


class MongoPart:
    def __init__(self, client: AsyncMongoClient[Doc], database: AsyncDatabase[Doc], url: str):
        self._client = client
        self._jobs: AsyncCollection[Doc] = database["jobs"]
        self._executions: AsyncCollection[Doc] = database["executions"]
        self._alert_states: AsyncCollection[Doc] = database["alert_states"]
        self._url = url
        """The URL with its secrets masked: the only form this object keeps."""
        self._closed = False
        self._answered = 0

    @property
    def answered(self) -> int:
        return self._answered

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
        self._answered += 1

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
