"""The execution records of the MongoDB store besides claims: MISSED records,
results, reads and imports (`MongoLedger`), and the leader's reaping
(`MongoReaper`). `finish_executions` and `record_missed` write record by record,
each atomic and idempotent, so a batch cut short is finished by its retry.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from pymongo import DESCENDING, ReturnDocument, UpdateOne

from cronsvc.domain import Execution, ExecutionStatus, Job
from cronsvc.errors import ExecutionNotFound
from cronsvc.ids import is_valid_id
from cronsvc.store import ExecutionQuery, FinishReport, Page
from cronsvc.store.common import (
    TICK_SLOT,
    check_importable,
    check_limit,
    decode_execution_cursor,
    encode_cursor,
    missed_tick_record,
    tick_slot,
    unix_ms,
)
from cronsvc.store.mongo_docs import (
    RUNNING,
    Doc,
    MongoPart,
    bson_date,
    execution_document,
    execution_from_document,
    final_fields,
)

_PRUNE_BATCH = 5000


class MongoLedger(MongoPart):
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
                execution_document(
                    missed_tick_record(job, tick, instance_id=instance_id, now=now, reason=reason),
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
            stored: dict[str, Doc] = {}
            if valid:
                # Ordered: an id twice in one batch is finished by its first entry.
                await self._executions.bulk_write(
                    [
                        UpdateOne(
                            {"_id": execution.id, "status": RUNNING},
                            {"$set": final_fields(execution)},
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
            return execution_from_document(document)

    async def import_executions(self, executions: Sequence[Execution]) -> list[str]:
        with self._calling():
            check_importable(executions)
            if not executions:
                return []
            documents = [execution_document(e, slot=tick_slot(e)) for e in executions]
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
            selector: Doc = {}
            if query.job_id is not None:
                selector["job_id"] = query.job_id
            if query.status is not None:
                selector["status"] = query.status.value
            window: Doc = {}
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
            items = [execution_from_document(document) for document in page]
            return Page(items=items, next_cursor=next_cursor)


def _last_run_update(job_id: str, execution: Execution) -> UpdateOne:
    """Unless a later-started run already set it: runs may finish out of order."""
    status = execution.status.value
    if execution.executed_at is None:
        return UpdateOne({"_id": job_id}, {"$set": {"last_status": status}})
    executed_ms = unix_ms(execution.executed_at)
    return UpdateOne(
        {"_id": job_id, "$or": [{"last_run_at": None}, {"last_run_at": {"$lte": executed_ms}}]},
        {"$set": {"last_run_at": executed_ms, "last_status": status}},
    )


def _holds_final_state(document: Doc, execution: Execution) -> bool:
    """Written by this call, or by an identical earlier one."""
    wanted = final_fields(execution)
    del wanted["finished_date"]  # written, never read back
    return all(document.get(name) == value for name, value in wanted.items())


class MongoReaper(MongoPart):
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
            return sorted(adopted, key=_in_order)

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
            return sorted(marked, key=_in_order)

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


def _in_order(execution: Execution) -> tuple[datetime, str]:
    return (execution.scheduled_at, execution.id)
