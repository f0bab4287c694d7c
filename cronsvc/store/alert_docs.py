"""A job's alert state as both backends store it: one JSON-able document
(instants as Unix milliseconds), and the fold each backend runs inside its
own compare-and-set (`cronsvc.alerts.apply_outcomes`)."""

from __future__ import annotations

from typing import Any

from cronsvc.alerts import AlertState
from cronsvc.domain import ErrorInfo, ExecutionStatus
from cronsvc.store.common import opt_from_unix_ms, opt_unix_ms

_STATUSES = {status.value: status for status in ExecutionStatus}


def state_document(state: AlertState) -> dict[str, Any]:
    """Everything but the version, which each backend keeps beside it."""
    error = state.last_error
    return {
        "alerting": state.alerting,
        "streak": state.streak,
        "changed_at": opt_unix_ms(state.changed_at),
        "last_status": None if state.last_status is None else state.last_status.value,
        "last_error": None if error is None else {"type": error.type, "message": error.message},
        "last_at": opt_unix_ms(state.last_at),
        "last_finished_at": opt_unix_ms(state.last_finished_at),
        "last_execution_id": state.last_execution_id,
        "unrecorded": state.unrecorded,
        "applied": list(state.applied),
        "previous": None
        if state.previous is None
        else {**state_document(state.previous), "version": state.previous.version},
    }


def state_from_document(document: dict[str, Any], version: int) -> AlertState:
    error = document.get("last_error")
    status = document.get("last_status")
    previous = document.get("previous")
    return AlertState(
        alerting=bool(document.get("alerting")),
        streak=int(document.get("streak") or 0),
        changed_at=opt_from_unix_ms(document.get("changed_at")),
        last_status=None if status is None else _STATUSES.get(status),
        last_error=None
        if error is None
        else ErrorInfo(type=error["type"], message=error["message"]),
        last_at=opt_from_unix_ms(document.get("last_at")),
        last_finished_at=opt_from_unix_ms(document.get("last_finished_at")),
        last_execution_id=document.get("last_execution_id"),
        unrecorded=bool(document.get("unrecorded")),
        version=version,
        applied=tuple(document.get("applied") or ()),
        previous=None if previous is None else state_from_document(previous, previous["version"]),
    )
