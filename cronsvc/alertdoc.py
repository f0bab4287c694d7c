"""What an alert says: the JSON document a state change is sent as, in
cronsvc's standard form or the `{"text": ...}` a Slack-compatible incoming
webhook takes. Pure: the sender (`cronsvc.alertsend`) only posts it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cronsvc.alerts import AlertChange, AlertKind, AlertState
from cronsvc.domain import AlertFormat
from cronsvc.instants import rfc3339

_TYPES = {
    AlertKind.FAILING: "job.failing",
    AlertKind.RECOVERED: "job.recovered",
    AlertKind.PAUSED: "job.paused",
    AlertKind.UNRECORDED: "job.unrecorded",
}
_WORDS = {
    AlertKind.FAILING: "is failing",
    AlertKind.RECOVERED: "has recovered",
    AlertKind.PAUSED: "was paused: its target answered 410 Gone",
    AlertKind.UNRECORDED: "has ticks that could not be recorded",
}


def job_link(dashboard_url: str, job_id: str) -> str:
    """The job's page in the dashboard (served at the root: `/#/jobs/<id>`)."""
    return f"{dashboard_url.rstrip('/')}/#/jobs/{job_id}"


def _state_name(state: AlertState, kind: AlertKind, after: bool) -> str:
    if after and kind is AlertKind.PAUSED:
        return "paused"
    if after and kind is AlertKind.UNRECORDED:
        return "unrecorded"
    return "alerting" if state.alerting else "ok"


def alert_document(
    change: AlertChange, *, job_name: str, dashboard_url: str, sent_at: datetime
) -> dict[str, Any]:
    """The alert in the format its policy names."""
    if change.policy.format is AlertFormat.SLACK:
        return {"text": slack_text(change, job_name=job_name, dashboard_url=dashboard_url)}
    return standard_document(
        change, job_name=job_name, dashboard_url=dashboard_url, sent_at=sent_at
    )


def standard_document(
    change: AlertChange, *, job_name: str, dashboard_url: str, sent_at: datetime
) -> dict[str, Any]:
    outcome = change.outcome
    error = outcome.error
    return {
        "type": _TYPES[change.kind],
        "job": {"id": change.job_id, "name": job_name},
        "state": {
            "from": _state_name(change.before, change.kind, after=False),
            "to": _state_name(change.after, change.kind, after=True),
        },
        "consecutiveFailures": change.after.streak,
        "lastRun": {
            "executionId": outcome.execution_id,
            "status": _status(change),
            "scheduledAt": _instant(outcome.scheduled_at),
            "finishedAt": _instant(outcome.finished_at),
            "error": None if error is None else {"type": error.type, "message": error.message},
        },
        "dashboardUrl": job_link(dashboard_url, change.job_id),
        "sentAt": rfc3339(sent_at),
    }


def slack_text(change: AlertChange, *, job_name: str, dashboard_url: str) -> str:
    """One line: the job, what changed, the last run's status and error, the link."""
    outcome = change.outcome
    parts = [f"cronsvc: job {job_name!r} {_WORDS[change.kind]}"]
    if change.kind is AlertKind.FAILING:
        parts.append(f"after {change.after.streak} failed runs")
    detail = f"last run {_status(change) or 'not recorded'}"
    if outcome.error is not None:
        detail += f" ({outcome.error.type}: {outcome.error.message})"
    if outcome.scheduled_at is not None:
        detail += f" at {rfc3339(outcome.scheduled_at)}"
    parts.append(f"- {detail}")
    parts.append(f"<{job_link(dashboard_url, change.job_id)}|open in the dashboard>")
    return " ".join(parts).replace("\n", " ")


def _status(change: AlertChange) -> str | None:
    status = change.outcome.last_run_status
    return None if status is None else status.value


def _instant(instant: datetime | None) -> str | None:
    return None if instant is None else rfc3339(instant)
