"""The execution records of the MongoDB store: tick claims (`MongoClaims`),
MISSED records, results, reads and imports (`MongoLedger`), and the leader's
reaping (`MongoReaper`). `finish_executions` and `record_missed` write record
by record, each atomic and idempotent, so a batch cut short is finished by its
retry. The one BSON date, `finished_date`, is only written, for the optional
TTL index; RUNNING records lack it, so they never expire.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

from pymongo import DESCENDING, ReturnDocument, UpdateOne

from cronsvc.domain import (
    ConcurrencyPolicy,
    Execution,
    ExecutionStatus,
    Job,
    Trigger,
)
from cronsvc.errors import ExecutionNotFound
from cronsvc.ids import is_valid_id
from cronsvc.store import ClaimOutcome, ClaimResult, ExecutionQuery, FinishReport, Page, TickClaim
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
    check_claims,
    check_importable,
    check_limit,
    decide_claims,
    decode_execution_cursor,
    encode_cursor,
    error_document,
    error_from_document,
    from_unix_ms,
    inserted_dispatched,
    missed_tick_record,
    opt_from_unix_ms,
    opt_unix_ms,
    replaced_message,
    tick_slot,
    unix_ms,
    watched_jobs,
)
from cronsvc.store.mongo_base import RUNNING, Doc, MongoPart

_PRUNE_BATCH = 5000
_CLAIM_JOB_FIELDS = dict.fromkeys(
    ("version", "is_active", "name", "concurrency_policy", "deferred_until"), 1
)


class MongoClaims(MongoPart):
    """`decide_claims` decides as for SQLite; the unique tick key fences what
    matters most, one tick never claimed twice, and a claim retried after a lost
    answer gets its first answer again. Weaker than SQLite's one transaction: a
    job changed between the read and the insert still gets a claim for its old
    version (the dispatched marks re-read `current_versions`); two
    `forbid`/`replace` claims of one job for different ticks racing from two
    instances can both win; a claimer dying before its replacing write leaves
    the superseded run RUNNING until it ends or is LOST."""

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
        # Unless a job's policy looks at its running executions, nothing stored
        # changes a claim's decision that the unique keys do not fence: the
        # records are inserted unread, and only a key found taken is looked up.
        watched = watched_jobs(live)
        stored, started = (
            await self._claim_context(live, watched) if watched else (StoredClaims(), {})
        )
        decision = decide_claims(checked, stored)
        results = list(decision.results)
        for position in decision.replacing:
            if results[position].replaced:  # named once their end is read back
                results[position] = dataclasses.replace(results[position], replaced=())
        # Lost its key to a concurrent writer: DUPLICATE. A later claim SKIPPED
        # on its account stands (the tick was claimed elsewhere).
        lost = await self._insert_claimed(claims, checked, decision)
        answers = {} if watched else await self._answers_again(checked, lost)
        for position in lost:
            results[position] = answers.get(position, DUPLICATE)
        if decision.replacing:
            await self._replace_running(claims, results, decision.replacing, started)
        await self._advance_last_ticks(
            advanced_ticks(checked, results) if lost else decision.last_ticks
        )
        return results

    async def _answers_again(
        self, checked: list[CheckedClaim | None], lost: list[int]
    ) -> dict[int, ClaimResult]:
        """Of the claims inserted unread whose key was taken, those an earlier
        attempt wrote (its answer lost) get that answer again."""
        by_id: dict[str, int] = {}
        for position in lost:
            entry = checked[position]
            assert entry is not None
            by_id[entry.claim.execution_id] = position
        if not by_id:
            return {}
        found = self._executions.find({"_id": {"$in": list(by_id)}})
        answers: dict[int, ClaimResult] = {}
        for document in await found.to_list():
            position = by_id[document["_id"]]
            entry = checked[position]
            assert entry is not None
            record = execution_from_document(document)
            answers[position] = answer_again(entry, record, document["slot"])
        return answers

    async def _insert_claimed(
        self, claims: list[TickClaim], checked: list[CheckedClaim | None], decision: ClaimDecision
    ) -> list[int]:
        """The positions of the records whose key another writer took first."""
        if not decision.inserts:
            return []
        documents: list[Doc] = []
        for position in decision.inserts:
            result, entry = decision.results[position], checked[position]
            assert result.execution is not None and entry is not None
            document = execution_document(result.execution, slot=entry.slot)
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
        """End the runs CLAIMED `replace` claims supersede; each result names those
        it ended, read back (a run may have finished on its own meanwhile)."""
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
                    "finished_date": bson_date(from_unix_ms(finished_ms)),
                    "duration_ms": duration,
                    "error": {"type": "replaced", "message": message},
                }
                updates.append(UpdateOne({"_id": old_id, "status": RUNNING}, {"$set": replaced}))
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
            ids.sort(key=replacing[position].index)
            results[position] = dataclasses.replace(results[position], replaced=tuple(ids))

    async def _claim_context(
        self, live: list[CheckedClaim], watched: set[str]
    ) -> tuple[StoredClaims, dict[str, int | None]]:
        """Two queries sent together (not one `$or`: nx-27017 answers that
        by a full scan); and each RUNNING execution's `executed_at`. The first
        finds both a claim's own record (an earlier attempt that landed) and
        another's of the same tick: each is a record of one of the batch's jobs
        at or after its earliest instant. One range on the tick key, not a
        query by id and another by tick: nx-27017 scans for each, so its cost
        per batch grows with the log."""
        by_id = {entry.claim.execution_id: entry for entry in live}
        queries: list[Doc] = [
            {
                "job_id": {"$in": list({entry.claim.job_id for entry in live})},
                "scheduled_at": {"$gte": min(entry.scheduled_ms for entry in live)},
            },
            {"job_id": {"$in": list(watched)}, "status": RUNNING},
        ]
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
                record = execution_from_document(document)
                earlier[document["_id"]] = answer_again(entry, record, document["slot"])
            if document["status"] == RUNNING and document["job_id"] in watched:
                runs = running.setdefault(document["job_id"], [])
                if document["_id"] not in runs:  # found by two of the queries
                    runs.append(document["_id"])
                    started[document["_id"]] = document["executed_at"]
        return StoredClaims(taken=taken, running=running, earlier=earlier), started

    async def mark_dispatched(self, instance_id: str, execution_ids: Collection[str]) -> set[str]:
        if not execution_ids:
            return set()
        with self._calling():
            ids = list(execution_ids)
            selector = {"_id": {"$in": ids}, "instance_id": instance_id, "status": RUNNING}
            result = await self._executions.update_many(selector, {"$set": {"dispatched": True}})
            if result.matched_count == len(ids):
                return set(ids)
            found = self._executions.find(selector, {"_id": 1})
            return {document["_id"] for document in await found.to_list()}


def _claim_job(document: Doc) -> ClaimJob:
    return ClaimJob(
        document["version"],
        bool(document["is_active"]),
        document["name"],
        ConcurrencyPolicy(document["concurrency_policy"]),
        document.get("deferred_until"),
    )


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
            if valid and len(valid) == len(executions) and await self._finish_own(valid):
                await self._jobs.bulk_write(
                    [_last_run_update(e.job_id, e) for e in executions], ordered=True
                )
                return FinishReport(missing=(), already_final=())
            stored: dict[str, Doc] = {}
            if valid:
                # Unfenced by job (any the first write finished are no longer
                # RUNNING): the stored record's job is the one whose last run is set.
                await self._finish(valid, own_job=False)
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

    async def _finish_own(self, executions: list[Execution]) -> bool:
        """True if every record was RUNNING under its execution's own job and is
        now final: then nothing needs reading back."""
        return await self._finish(executions, own_job=True) == len(executions)

    async def _finish(self, executions: list[Execution], *, own_job: bool) -> int:
        """How many records were RUNNING (under their execution's job, if
        `own_job`) and now are final. Ordered: an id twice in one batch is
        finished by its first entry."""
        updates = []
        for e in executions:
            selector: Doc = {"_id": e.id, "status": RUNNING}
            if own_job:
                selector["job_id"] = e.job_id
            updates.append(UpdateOne(selector, {"$set": final_fields(e)}))
        result = await self._executions.bulk_write(updates, ordered=True)
        return result.matched_count

    async def get_execution(self, execution_id: str) -> Execution:
        with self._calling():
            valid = is_valid_id(execution_id)
            document = await self._executions.find_one({"_id": execution_id}) if valid else None
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
                next_cursor = encode_cursor(["e", page[-1]["scheduled_at"], page[-1]["_id"]])
            items = [execution_from_document(document) for document in page]
            return Page(items=items, next_cursor=next_cursor)


def _last_run_update(job_id: str, execution: Execution) -> UpdateOne:
    """Unless a later-started run already set it: runs may finish out of order."""
    status = execution.status.value
    if execution.executed_at is None:
        return UpdateOne({"_id": job_id}, {"$set": {"last_status": status}})
    executed_ms = unix_ms(execution.executed_at)
    earlier = [{"last_run_at": None}, {"last_run_at": {"$lte": executed_ms}}]
    return UpdateOne(
        {"$and": [{"_id": job_id}, {"$or": earlier}]},  # `$or` inside `$and`: see mongo_base
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


def bson_date(instant: datetime | None) -> datetime | None:
    return None if instant is None else from_unix_ms(unix_ms(instant))


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
        "error": error_document(e.error),
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
        error=error_from_document(document["error"]),
        attempt_log=attempts_from_documents(document.get("attempt_log")),
    )
