"""Tick claims on the MongoDB store (`TickClaims`). `decide_claims` (common.py)
decides as for SQLite; the unique tick key fences what matters most, one tick
never claimed twice, and a claim retried after a lost answer gets its first
answer again. Weaker than SQLite's one transaction: a job changed between the
read and the insert still gets a claim for its old version (the dispatched
marks re-read `current_versions`); two `forbid`/`replace` claims of one job for
different ticks racing from two instances can both win; a claimer dying before
its replacing write leaves the superseded run RUNNING until it ends or is LOST.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Collection, Mapping, Sequence

from pymongo import UpdateOne

from cronsvc.domain import ConcurrencyPolicy, ExecutionStatus
from cronsvc.ids import is_valid_id
from cronsvc.store import ClaimOutcome, ClaimResult, TickClaim
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
    check_claims,
    decide_claims,
    from_unix_ms,
    inserted_dispatched,
    replaced_message,
    unix_ms,
    watched_jobs,
)
from cronsvc.store.mongo_docs import (
    RUNNING,
    Doc,
    MongoPart,
    bson_date,
    execution_document,
    execution_from_document,
)

_CLAIM_JOB_FIELDS = {
    "version": 1,
    "is_active": 1,
    "name": 1,
    "concurrency_policy": 1,
    "deferred_until": 1,
}


class MongoClaims(MongoPart):
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
        # Lost its key to a concurrent writer: DUPLICATE. A later claim SKIPPED
        # on its account stands (the tick was claimed elsewhere).
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
        self, live: list[CheckedClaim]
    ) -> tuple[StoredClaims, dict[str, int | None]]:
        """Up to three queries sent together (not one `$or`: nx-27017 answers that
        by a full scan); and each RUNNING execution's `executed_at`."""
        by_id = {entry.claim.execution_id: entry for entry in live}
        queries: list[Doc] = [{"_id": {"$in": list(by_id)}}]
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
            queries.append({"job_id": {"$in": list(watched)}, "status": RUNNING})
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
