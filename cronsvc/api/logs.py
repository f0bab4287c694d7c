"""/api/execution-logs: the record of every run, newest tick first."""

from __future__ import annotations

from aiohttp import web

from cronsvc.api.context import ctx, json_response, next_link, query_limit, query_text
from cronsvc.api.schemas import execution_to_wire, parse_instant, with_legacy_id
from cronsvc.domain import ExecutionStatus
from cronsvc.errors import FieldError, ValidationFailed
from cronsvc.store import ExecutionQuery

routes = web.RouteTableDef()


def _query(request: web.Request, job_id: str | None) -> ExecutionQuery:
    status_text = request.query.get("status")
    status = None
    if status_text is not None:
        try:
            status = ExecutionStatus(status_text.upper())
        except ValueError:
            allowed = ", ".join(s.value for s in ExecutionStatus)
            raise ValidationFailed([FieldError("status", f"must be one of {allowed}")]) from None
    since = query_text(request, "since")
    until = query_text(request, "until")
    return ExecutionQuery(
        job_id=job_id,
        status=status,
        since=None if since is None else parse_instant("since", since),
        until=None if until is None else parse_instant("until", until),
        cursor=query_text(request, "cursor"),
        limit=query_limit(request),
    )


async def _list(request: web.Request, job_id: str | None) -> web.Response:
    api = ctx(request)
    page = await api.store.list_executions(_query(request, job_id))
    return json_response(
        [with_legacy_id(execution_to_wire(e), api.config.api.legacy_ids) for e in page.items],
        headers=next_link(request, page.next_cursor),
    )


@routes.get("/api/execution-logs")
async def list_logs(request: web.Request) -> web.Response:
    """Filters: cronJobId, status, since (inclusive), until (exclusive) on the
    tick (`scheduledAt`); cursor pagination."""
    return await _list(request, request.query.get("cronJobId"))


@routes.get("/api/execution-logs/job/{cronJobId}")
async def list_job_logs(request: web.Request) -> web.Response:
    return await _list(request, request.match_info["cronJobId"])


@routes.get("/api/execution-logs/{id}")
async def get_log(request: web.Request) -> web.Response:
    api = ctx(request)
    execution = await api.store.get_execution(request.match_info["id"])
    return json_response(with_legacy_id(execution_to_wire(execution), api.config.api.legacy_ids))


@routes.delete("/api/execution-logs/{id}")
async def delete_log(request: web.Request) -> web.Response:
    api = ctx(request)
    execution = await api.store.get_execution(request.match_info["id"])
    await api.store.delete_execution(execution.id)
    return json_response(with_legacy_id(execution_to_wire(execution), api.config.api.legacy_ids))
