"""What a scheduler reads of the MongoDB store (`ScheduleSource`): the active
jobs' schedules and versions, page by page, and whole jobs when due."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from pymongo import ASCENDING

from cronsvc.domain import ConcurrencyPolicy, Job, MisfirePolicy
from cronsvc.ids import is_valid_id
from cronsvc.store import ActiveSchedule
from cronsvc.store.common import cached_instant, check_limit
from cronsvc.store.mongo_base import MongoPart
from cronsvc.store.mongo_docs import WITHOUT_HISTORY, Doc, job_from_document

_SCHEDULE_FIELDS = {
    "version": 1,
    "cron_expression": 1,
    "timezone": 1,
    "last_tick": 1,
    "concurrency_policy": 1,
    "misfire_policy": 1,
    "misfire_grace_seconds": 1,
}


class MongoSchedules(MongoPart):
    """`ScheduleSource` on MongoDB."""

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
            selector: Doc = {"is_active": True}
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

    async def current_versions(self, job_ids: Collection[str]) -> dict[str, int]:
        with self._calling():
            wanted = [job_id for job_id in job_ids if is_valid_id(job_id)]
            if not wanted:
                return {}
            found = self._jobs.find({"_id": {"$in": wanted}, "is_active": True}, {"version": 1})
            return {document["_id"]: document["version"] for document in await found.to_list()}
