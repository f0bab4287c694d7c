"""The leader's duties on the MongoDB store (`Reaper`): adopting the unsent
ticks of instances that are gone, marking their sent ones LOST, and pruning
records past their retention."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from pymongo import ReturnDocument

from cronsvc.domain import Execution, ExecutionStatus
from cronsvc.store.common import unix_ms
from cronsvc.store.mongo_base import MongoPart
from cronsvc.store.mongo_docs import RUNNING, bson_date, execution_from_document

_PRUNE_BATCH = 5000


class MongoReaper(MongoPart):
    """`Reaper` on MongoDB."""

    async def adopt_unsent(
        self, *, live_instances: Collection[str], instance_id: str
    ) -> list[Execution]:
        with self._calling():
            selector = {
                "status": RUNNING,
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
                    adopted.append(execution_from_document(document))
            return sorted(adopted, key=lambda execution: (execution.scheduled_at, execution.id))

    async def mark_lost(
        self, *, live_instances: Collection[str], now: datetime, reason: str
    ) -> list[Execution]:
        with self._calling():
            selector = {
                "status": RUNNING,
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
                "finished_date": bson_date(now),
                "error": {"type": "lost", "message": reason},
            }
            await self._executions.update_many(
                {"_id": {"$in": ids}, "status": RUNNING}, {"$set": lost}
            )
            # Read back what this call wrote; a record finished in between is not lost.
            found = self._executions.find({"_id": {"$in": ids}})
            marked = [
                execution_from_document(document)
                for document in await found.to_list()
                if document["status"] == lost["status"]
                and document["finished_at"] == lost["finished_at"]
                and document["error"] == lost["error"]
            ]
            return sorted(marked, key=lambda execution: (execution.scheduled_at, execution.id))

    async def prune_executions(self, older_than: datetime) -> int:
        # In batches, so no single delete holds a server (or nx-27017's lock) for long.
        with self._calling():
            selector = {"scheduled_at": {"$lt": unix_ms(older_than)}, "status": {"$ne": RUNNING}}
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
