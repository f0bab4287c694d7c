"""/api/execution-logs: the record of every run, newest tick first."""

from __future__ import annotations

import dataclasses

from aiohttp import web

from cronsvc.api.context import ApiContext, ctx, json_response, next_link, query_limit, query_text
from cronsvc.api.operations import ID, INSTANT, LINK, PAGE, Operation
from cronsvc.api.schemas import ExecutionOut, parse_instant
from cronsvc.domain import Execution, ExecutionStatus
from cronsvc.errors import FieldError, ValidationFailed
from cronsvc.store import ExecutionQuery

routes = web.RouteTableDef()

_FILTERS = [
    {"name": "status", "in": "query", "schema": {"enum": [s.value for s in ExecutionStatus]}},
    {"name": "since", "in": "query", "schema": INSTANT, "description": "inclusive, on scheduledAt"},
    {"name": "until", "in": "query", "schema": INSTANT, "description": "exclusive, on scheduledAt"},
    *PAGE,
]
_READ = (404, 503)
_LIST = Operation(
    "List execution logs, newest tick first",
    tag="execution logs",
    answer=ExecutionOut,
    many=True,
    headers=LINK,
    params=[{"name": "cronJobId", "in": "query", "schema": {"type": "string"}}, *_FILTERS],
    errors=(400, 503),
)


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
    legacy = api.config.api.legacy_ids
    # Pages of hundreds: written to JSON bytes in one pass, not via json.dumps.
    return web.Response(
        body=ExecutionOut.json_list(ExecutionOut.fields(e, legacy_ids=legacy) for e in page.items),
        content_type="application/json",
        charset="utf-8",
        headers=next_link(request, page.next_cursor),
    )


@routes.get("/api/execution-logs")
@_LIST
async def list_logs(request: web.Request) -> web.Response:
    """Filters: cronJobId, status, since (inclusive), until (exclusive) on the
    tick (`scheduledAt`); cursor pagination."""
    return await _list(request, request.query.get("cronJobId"))


@routes.get("/api/execution-logs/job/{cronJobId}")
@dataclasses.replace(
    _LIST,
    summary="List one job's execution logs",
    params=[
        {"name": "cronJobId", "in": "path", "required": True, "schema": {"type": "string"}},
        *_FILTERS,
    ],
)
async def list_job_logs(request: web.Request) -> web.Response:
    return await _list(request, request.match_info["cronJobId"])


@routes.get("/api/execution-logs/{id}")
@Operation(
    "Read an execution log", tag="execution logs", answer=ExecutionOut, params=[ID], errors=_READ
)
async def get_log(request: web.Request) -> web.Response:
    api = ctx(request)
    execution = await api.store.get_execution(request.match_info["id"])
    return json_response(_out(api, execution).wire())


@routes.delete("/api/execution-logs/{id}")
@Operation(
    "Delete an execution log", tag="execution logs", answer=ExecutionOut, params=[ID], errors=_READ
)
async def delete_log(request: web.Request) -> web.Response:
    api = ctx(request)
    execution = await api.store.get_execution(request.match_info["id"])
    await api.store.delete_execution(execution.id)
    return json_response(_out(api, execution).wire())


def _out(api: ApiContext, execution: Execution) -> ExecutionOut:
    return ExecutionOut.from_domain(execution, legacy_ids=api.config.api.legacy_ids)
