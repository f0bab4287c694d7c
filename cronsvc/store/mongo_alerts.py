"""The MongoDB backend's alert states (`AlertStates`): one document per job
in `alert_states` (`_id` the job id), changed by compare-and-set on its
`version`: a state read, folded, and written only if no one changed it
since (a first state is an insert the `_id` fences). A writer that loses
reads again and folds its outcomes into the new state, so two instances
recording runs of one job can never both effect one change.

A call costs a few round trips whatever the number of jobs: the states are
read together, and the conditional writes, one per job, go out together.
The losers go round again.

A retry after a lost answer applies its step again. The state keeps what
its latest write applied (`AlertState.applied`, `previous`), so the retry
counts those outcomes once and tells that write's alerts again with the
same ids (`cronsvc.alerts.apply_outcomes`); if another writer changed the
state in between, its outcomes may count twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog
from pymongo.errors import DuplicateKeyError

from cronsvc.alerts import NO_STATE, AlertChange, AlertState, AlertStep, apply_outcomes
from cronsvc.store import MAX_ALERT_CONFLICTS
from cronsvc.store.alert_docs import state_document, state_from_document
from cronsvc.store.mongo_base import MongoPart

log = structlog.get_logger(__name__)


class MongoAlerts(MongoPart):
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
        """One round: fold and write every step (numbered in the call's
        order); the steps whose writes lost."""
        stored = await self._states_of([step.job_id for _, step in steps])
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
        # Concurrently: a batch costs about one round trip, not one per job.
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
        """Store `new` if the stored state is still `state`; whether it was."""
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

    async def _states_of(self, job_ids: list[str]) -> dict[str, Mapping[str, Any]]:
        return {doc["_id"]: doc async for doc in self._alert_states.find({"_id": {"$in": job_ids}})}

    async def alert_states(self, job_ids: Collection[str]) -> dict[str, AlertState]:
        with self._calling():
            ids = list(job_ids)
            if not ids:
                return {}
            return {
                doc["_id"]: state_from_document(doc["state"], doc["version"])
                async for doc in self._alert_states.find({"_id": {"$in": ids}})
            }
