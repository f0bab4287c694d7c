"""Notices to every instance that never fail their sender: what a notice
tells is already in the store when it goes out (a job change is picked up at
the next resync; a run replaced under `replace` has its result ignored), so one
that cannot go out is counted and logged, never raised.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from cronsvc.coord import Coordinator
from cronsvc.metrics import Metrics
from cronsvc.retry import TRANSIENT

log = structlog.get_logger(__name__)


class Notices:
    def __init__(self, *, coordinator: Coordinator, metrics: Metrics) -> None:
        self._coordinator = coordinator
        self._metrics = metrics

    async def job_changed(self, job_id: str) -> None:
        try:
            await self._coordinator.publish_job_change(job_id)
        except TRANSIENT as exc:
            self._metrics.inc("cronsvc_coordinator_errors_total", op="notice")
            log.warning("job_change_notice_failed", job_id=job_id, error=str(exc))

    async def runs_replaced(self, execution_ids: Sequence[str]) -> None:
        try:
            await self._coordinator.publish_cancel(execution_ids)
        except TRANSIENT as exc:
            self._metrics.inc("cronsvc_coordinator_errors_total", op="cancel")
            log.warning(
                "cancel_notice_failed", execution_ids=list(execution_ids[:20]), error=str(exc)
            )
