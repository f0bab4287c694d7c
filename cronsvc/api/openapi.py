"""GET /openapi.json: an OpenAPI 3.1 document built from the wire models.

Request bodies come from the same pydantic models that validate requests;
responses from the output models below, which tests check real responses
against, so the document cannot drift from the code unnoticed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from cronsvc import __version__
from cronsvc.api.schemas import JobIn, PreviewIn
from cronsvc.domain import ExecutionStatus, JsonValue, Trigger

routes = web.RouteTableDef()


class _Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, extra="forbid")


class RetryOut(_Out):
    max_attempts: int
    backoff_seconds: float
    max_backoff_seconds: float


class JobOut(_Out):
    id: str
    name: str
    cron_expression: str
    timezone: str
    webhook_url: str
    http_method: str
    headers: dict[str, str]
    body: JsonValue | None
    timeout_seconds: float
    retry: RetryOut
    concurrency_policy: str
    misfire_policy: str
    misfire_grace_seconds: int
    is_active: bool
    tags: list[str]
    has_secret: bool
    created_at: datetime
    updated_at: datetime
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_status: ExecutionStatus | None
    version: int


class ErrorOut(_Out):
    type: str
    message: str


class ExecutionOut(_Out):
    id: str
    cron_job_id: str
    job_name: str
    trigger: Trigger
    scheduled_at: datetime
    executed_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    status: ExecutionStatus
    attempts: int
    response_status: int | None
    response_body: str | None
    response_truncated: bool
    error: ErrorOut | None
    instance_id: str


class TriggeredOut(ExecutionOut):
    execution_id: str


class InstantOut(_Out):
    utc: datetime
    local: str


class ScheduleOut(_Out):
    cron_expression: str
    timezone: str
    after: datetime
    instants: list[InstantOut]


class NextRunsOut(ScheduleOut):
    cron_job_id: str
    is_active: bool


class FieldErrorOut(_Out):
    field: str
    message: str


class ProblemOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    detail: str | None = None
    errors: list[FieldErrorOut] | None = None


MODELS: dict[str, type[BaseModel]] = {
    m.__name__: m
    for m in (
        JobIn,
        PreviewIn,
        JobOut,
        ExecutionOut,
        TriggeredOut,
        ScheduleOut,
        NextRunsOut,
        ProblemOut,
    )
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


_PROBLEM = {"content": {"application/problem+json": {"schema": _ref("ProblemOut")}}}
_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-f]{24}$"},
}
_PAGE = [
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
    },
    {
        "name": "cursor",
        "in": "query",
        "schema": {"type": "string"},
        "description": "from the Link header",
    },
]
_LOG_FILTERS = [
    {"name": "status", "in": "query", "schema": {"enum": [s.value for s in ExecutionStatus]}},
    {
        "name": "since",
        "in": "query",
        "schema": {"type": "string", "format": "date-time"},
        "description": "inclusive, on scheduledAt",
    },
    {
        "name": "until",
        "in": "query",
        "schema": {"type": "string", "format": "date-time"},
        "description": "exclusive, on scheduledAt",
    },
    *_PAGE,
]
_LINK = {
    "Link": {
        "description": 'the next page: <URL>; rel="next" (RFC 8288)',
        "schema": {"type": "string"},
    }
}


def _op(
    summary: str,
    ok: int,
    response: dict[str, Any] | None,
    *,
    body: str | None = None,
    params: list[dict[str, Any]] | None = None,
    errors: tuple[int, ...] = (),
    headers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        str(ok): {"description": summary, **(_json(response) if response else {})}
    }
    if headers:
        responses[str(ok)]["headers"] = headers
    for status in (*errors, 500):
        responses[str(status)] = {"description": _ERROR_TEXT[status], **_PROBLEM}
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        operation["parameters"] = params
    if body:
        operation["requestBody"] = {"required": True, **_json(_ref(body))}
    return operation


_ERROR_TEXT = {
    400: "invalid input, field by field",
    404: "no such resource (also for malformed ids)",
    409: "duplicate name or stale version",
    413: "request body over 64 KiB",
    415: "request body is not JSON",
    500: "unexpected error (with a requestId to quote)",
    503: "not ready",
}
_WRITE = (400, 413, 415)
_JOB = _ref("JobOut")
_LOG = _ref("ExecutionOut")
_HEALTH = {"type": "object"}

PATHS: dict[str, dict[str, Any]] = {
    "/api/cron": {
        "post": _op("Create a job", 201, _JOB, body="JobIn", errors=(*_WRITE, 409)),
        "get": _op(
            "List jobs, newest first",
            200,
            {"type": "array", "items": _JOB},
            params=[
                {"name": "isActive", "in": "query", "schema": {"type": "boolean"}},
                {"name": "tag", "in": "query", "schema": {"type": "string"}},
                {
                    "name": "name",
                    "in": "query",
                    "schema": {"type": "string"},
                    "description": "name prefix",
                },
                *_PAGE,
            ],
            errors=(400,),
            headers=_LINK,
        ),
    },
    "/api/cron/{id}": {
        "get": _op("Read a job", 200, _JOB, params=[_ID], errors=(404,)),
        "put": _op(
            "Replace a job (secret kept unless sent as null)",
            200,
            _JOB,
            body="JobIn",
            params=[_ID],
            errors=(*_WRITE, 404, 409),
        ),
        "patch": _op(
            "Change some fields (JSON merge patch)",
            200,
            _JOB,
            params=[_ID],
            errors=(*_WRITE, 404, 409),
        )
        | {
            "requestBody": {
                "required": True,
                **_json({"type": "object", "description": "a partial JobIn"}),
            }
        },
        "delete": _op(
            "Delete a job; answers with it as it was", 200, _JOB, params=[_ID], errors=(404,)
        ),
    },
    "/api/cron/{id}/pause": {"post": _op("Stop firing", 200, _JOB, params=[_ID], errors=(404,))},
    "/api/cron/{id}/resume": {
        "post": _op("Fire again from now on", 200, _JOB, params=[_ID], errors=(404,))
    },
    "/api/cron/{id}/trigger": {
        "post": _op(
            "Run now (trigger manual)", 202, _ref("TriggeredOut"), params=[_ID], errors=(404,)
        )
    },
    "/api/cron/{id}/next": {
        "get": _op(
            "The next fire instants",
            200,
            _ref("NextRunsOut"),
            params=[
                _ID,
                {
                    "name": "count",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5},
                },
            ],
            errors=(400, 404),
        )
    },
    "/api/schedule/preview": {
        "post": _op(
            "Preview any expression", 200, _ref("ScheduleOut"), body="PreviewIn", errors=_WRITE
        ),
        "get": _op(
            "Preview any expression (query string)",
            200,
            _ref("ScheduleOut"),
            params=[
                {
                    "name": "cronExpression",
                    "in": "query",
                    "required": True,
                    "schema": {"type": "string"},
                },
                {"name": "timezone", "in": "query", "schema": {"type": "string", "default": "UTC"}},
                {
                    "name": "count",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                },
                {
                    "name": "after",
                    "in": "query",
                    "schema": {"type": "string", "format": "date-time"},
                },
            ],
            errors=(400,),
        ),
    },
    "/api/execution-logs": {
        "get": _op(
            "List execution logs, newest tick first",
            200,
            {"type": "array", "items": _LOG},
            params=[
                {"name": "cronJobId", "in": "query", "schema": {"type": "string"}},
                *_LOG_FILTERS,
            ],
            errors=(400,),
            headers=_LINK,
        )
    },
    "/api/execution-logs/job/{cronJobId}": {
        "get": _op(
            "List one job's execution logs",
            200,
            {"type": "array", "items": _LOG},
            params=[
                {"name": "cronJobId", "in": "path", "required": True, "schema": {"type": "string"}},
                *_LOG_FILTERS,
            ],
            errors=(400,),
            headers=_LINK,
        )
    },
    "/api/execution-logs/{id}": {
        "get": _op("Read an execution log", 200, _LOG, params=[_ID], errors=(404,)),
        "delete": _op("Delete an execution log", 200, _LOG, params=[_ID], errors=(404,)),
    },
    "/api/cluster": {"get": _op("Live instances and the leader", 200, _HEALTH)},
    "/healthz": {"get": _op("Liveness", 200, _HEALTH)},
    "/readyz": {
        "get": _op("Readiness of store, coordinator and scheduler", 200, _HEALTH, errors=(503,))
    },
    "/api/health-check": {
        "get": _op("Readiness (the Node.js service's path)", 200, _HEALTH, errors=(503,))
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "responses": {
                "200": {
                    "description": "text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/openapi.json": {"get": _op("This document", 200, {"type": "object"})},
    "/": {
        "get": {
            "summary": "The web dashboard (a static page; it calls this API like any client)",
            "responses": {"200": {"description": "the page", "content": {"text/html": {}}}},
        }
    },
    "/dashboard/{asset}": {
        "get": {
            "summary": "The dashboard's scripts and style sheet",
            "parameters": [
                {"name": "asset", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {"description": "the file (revalidated with its ETag)"},
                "304": {"description": "unchanged since the ETag sent in If-None-Match"},
                "404": {"description": "no such asset", **_PROBLEM},
            },
        }
    },
}


def build_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for name, model in MODELS.items():
        schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cronsvc",
            "version": __version__,
            "description": "A dynamic cron service.",
        },
        "paths": PATHS,
        "components": {"schemas": schemas},
    }


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(build_document())
