"""The `alertState` of job answers: each job's alert state, read in one
store call per answer (a page of jobs included), never one per job."""

from __future__ import annotations

from collections.abc import Sequence

from cronsvc.alertpolicy import effective_policy
from cronsvc.alerts import NO_STATE
from cronsvc.api.context import ApiContext
from cronsvc.api.schemas import AlertStateOut
from cronsvc.domain import Job


async def alert_states(api: ApiContext, jobs: Sequence[Job]) -> dict[str, AlertStateOut | None]:
    """Job id -> its `alertState`: None for a job no alerts apply to."""
    answers: dict[str, AlertStateOut | None] = {job.id: None for job in jobs}
    watched = [job.id for job in jobs if effective_policy(job.spec, api.config.alerts)]
    if not watched:
        return answers
    stored = await api.store.alert_states(watched)
    for job_id in watched:
        state = stored.get(job_id, NO_STATE)
        answers[job_id] = AlertStateOut.of(
            alerting=state.alerting, consecutive_failures=state.streak, since=state.changed_at
        )
    return answers
