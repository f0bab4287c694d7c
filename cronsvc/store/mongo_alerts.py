"""Alert states on MongoDB (`AlertStates`): one document per job in
`alert_states`, changed by compare-and-set on its `version` (a first state is an
insert the `_id` fences), so two instances can never both effect one change. A
round's reads, and its writes, go out together; the losers go round again.
A retry after a lost answer counts its outcomes once (the state keeps what its
latest write applied), unless another writer changed the state in between.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from datetime import datetime

import structlog
from pymongo.errors import DuplicateKeyError

from cronsvc.alerts import NO_STATE, AlertChange, AlertState, AlertStep, apply_outcomes
from cronsvc.store import MAX_ALERT_CONFLICTS
from cronsvc.store.common import state_document, state_from_document
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
