"""Tick claims on the MongoDB store (`TickClaims`): the claim path, and the
mark that a claimed tick's webhook is being sent.

`claim_ticks` reads the batch's jobs in one query, then (three queries sent
together) the tick keys already taken, the records these very claims may have
written on an earlier attempt, and the RUNNING executions of its `forbid`
and `replace` jobs; `decide_claims` (store/common.py) decides each claim in
order, later claims seeing earlier ones, as for the SQLite store; it inserts the
RUNNING and SKIPPED records with one unordered ``insert_many``, a duplicate-key error on
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
its old version is then still written. The claim pipeline's dispatched
marks (`cronsvc.marks`) close that window for ticks claimed ahead of time:
they re-read `current_versions` at the tick and do not fire a claim whose
job changed. Likewise two claims of one `forbid`
or `replace` job racing from two instances for *different* ticks can both be
CLAIMED, neither seeing the other; and a claimer that dies between its insert
and the replacing write leaves the superseded run RUNNING until it ends by
itself (or is marked LOST with its instance). The unique tick key fences the
case that matters most: one tick is never claimed twice.
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
from cronsvc.store.mongo_base import MongoPart
from cronsvc.store.mongo_docs import (
    RUNNING,
    Doc,
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
    """`TickClaims` on MongoDB."""

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
            order = {old_id: n for n, old_id in enumerate(replacing[position])}
            ids.sort(key=order.__getitem__)
            results[position] = dataclasses.replace(results[position], replaced=tuple(ids))

    async def _claim_context(
        self, live: list[CheckedClaim]
    ) -> tuple[StoredClaims, dict[str, int | None]]:
        """What the batch's decisions depend on, in up to three queries sent
        together (not one `$or`: nx-27017 answers that by a full scan); and
        when each RUNNING execution found started (`executed_at`, Unix ms)."""
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
