"""The MongoDB backend's alert states (`AlertStates`): one document per job
in `alert_states` (`_id` the job id), changed by compare-and-set on its
`version`: a state read, folded, and written only if no one changed it
since (a first state is an insert the `_id` fences). A writer that loses
reads again and folds its outcomes into the new state, so two instances
recording runs of one job can never both effect one change.

A retry after a lost answer can apply a step twice; the order check in
`cronsvc.alerts.transition` leaves out an outcome already applied (its
tick is not newer), signals aside.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

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
            changes: list[AlertChange] = []
            for step in steps:
                if step.job_id in existing:
                    changes.extend(await self._apply_step(step, now))
            return changes

    async def _apply_step(self, step: AlertStep, now: datetime) -> list[AlertChange]:
        for _ in range(MAX_ALERT_CONFLICTS):
            doc = await self._alert_states.find_one({"_id": step.job_id})
            state = NO_STATE if doc is None else state_from_document(doc["state"], doc["version"])
            new, changes = apply_outcomes(state, step, now)
            if new is state:
                return []
            document = {"version": new.version, "state": state_document(new)}
            if doc is None:
                try:
                    await self._alert_states.insert_one({"_id": step.job_id, **document})
                except DuplicateKeyError:
                    continue  # another writer stored the first state
                return changes
            written = await self._alert_states.update_one(
                {"_id": step.job_id, "version": state.version}, {"$set": document}
            )
            if written.matched_count == 1:
                return changes
        log.error("alert_state_conflicts", job_id=step.job_id, tries=MAX_ALERT_CONFLICTS)
        return []

    async def alert_states(self, job_ids: Collection[str]) -> dict[str, AlertState]:
        with self._calling():
            ids = list(job_ids)
            if not ids:
                return {}
            return {
                doc["_id"]: state_from_document(doc["state"], doc["version"])
                async for doc in self._alert_states.find({"_id": {"$in": ids}})
            }
