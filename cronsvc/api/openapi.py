"""GET /openapi.json: an OpenAPI 3.1 document built from the wire models.

Request bodies come from the same pydantic models that validate requests;
responses from the output models below, which tests check real responses
against, so the document cannot drift from the code unnoticed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.json_schema import SkipJsonSchema

from cronsvc import __version__
from cronsvc.api.auth import UNAUTHENTICATED_ROUTES, UNLIMITED_ROUTES
from cronsvc.api.dashboard import ASSETS as DASHBOARD_ASSETS
from cronsvc.api.docs import ASSETS
from cronsvc.api.jobs import UPDATE_DEADLINE_S
from cronsvc.api.problems import JOB_LIMIT_TYPE
from cronsvc.api.schemas import JobIn, PreviewIn
from cronsvc.domain import (
    MAX_ATTEMPTS,
    ConcurrencyPolicy,
    ExecutionStatus,
    JsonValue,
    MisfirePolicy,
    Trigger,
)
from cronsvc.ledger import EntryKind

routes = web.RouteTableDef()


class _Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, extra="forbid")


class RetryOut(_Out):
    max_attempts: int
    backoff_seconds: float
    max_backoff_seconds: float


def _absent_not_null(schema: dict[str, Any]) -> None:
    """For a field left out of the body when it has no value: no null default."""
    schema.pop("default", None)


_LEGACY_ID: Any = Field(
    default=None,
    alias="_id",
    description="equal to `id`; only with `api.legacy_ids = true`, for clients of the "
    "Node.js service",
    json_schema_extra=_absent_not_null,
)


class JobOut(_Out):
    id: str
    legacy_id: str | SkipJsonSchema[None] = _LEGACY_ID
    name: str
    cron_expression: str
    timezone: str
    webhook_url: str
    http_method: str
    headers: dict[str, str]
    body: JsonValue | None
    timeout_seconds: float
    retry: RetryOut
    concurrency_policy: ConcurrencyPolicy
    misfire_policy: MisfirePolicy
    misfire_grace_seconds: int
    is_active: bool
    tags: list[str]
    has_secret: bool = Field(description="whether requests are signed with a current secret")
    previous_secret_expires_at: datetime | None = Field(
        description="until when the secret the job replaced still signs beside the current "
        "one; null when there is none (or it has expired)"
    )
    secret: str | None = Field(
        default=None,
        description='only in the answer to the write that sent "generate": the secret made '
        "then, shown this once",
    )
    created_at: datetime
    updated_at: datetime
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_status: ExecutionStatus | None
    version: int
    paused_reason: str | None = Field(
        description="Why cronsvc paused the job itself (its target answered 410 Gone), or "
        'why `cronsvc import-legacy` imported it paused ("imported paused: ...": a '
        "schedule or target cronsvc refuses); null when a person paused it or it is "
        "active. Cleared by any update."
    )
    deferred_until: datetime | None = Field(
        description="Scheduled ticks before this instant are recorded SKIPPED "
        "(error.type deferred): the target answered 429 or 503 with Retry-After. "
        "Cleared by any update."
    )


class ErrorOut(_Out):
    type: str
    message: str


class AttemptOut(_Out):
    """One HTTP attempt of the webhook call."""

    attempt: int = Field(ge=1, description="1-based")
    started_at: datetime
    duration_ms: int
    response_status: int | None
    error: ErrorOut | None
    retry_after_ms: int | None = Field(
        description="the wait after this attempt before the next (backoff, or the receiver's "
        "Retry-After capped at retry.maxBackoffSeconds); null when none followed"
    )


class ExecutionOut(_Out):
    id: str
    legacy_id: str | SkipJsonSchema[None] = _LEGACY_ID
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
    attempt_log: list[AttemptOut] = Field(
        max_length=MAX_ATTEMPTS,
        description="every HTTP attempt, in order; empty while RUNNING and for records of "
        "no finished call (SKIPPED, MISSED, LOST, or cut off by a shutdown) and for "
        "imported ones",
    )
    instance_id: str = Field(
        description='the instance that ran it; "legacy" for a log `cronsvc import-legacy` '
        'brought over (its error, if any, then has type "legacy")'
    )


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


class LedgerEntryOut(_Out):
    scheduled_at: datetime
    kind: Annotated[
        EntryKind,
        Field(
            description="tick: an owed tick and its record; gap: an owed tick with no "
            "record; manual: a manual run; unscheduled: a record at an instant no "
            "schedule in force owed (one since changed, say); unknown: a record from "
            "before the kept schedule history"
        ),
    ]
    status: ExecutionStatus | None
    execution_id: str | None
    trigger: Trigger | None


class LedgerSummaryOut(_Out):
    ticks: int
    by_status: dict[str, int]
    gaps: int
    manual: int
    unscheduled: int
    unknown: int


class LedgerOut(_Out):
    cron_job_id: str
    since: datetime
    until: datetime
    complete: Annotated[
        bool,
        Field(description="false when the range reaches back before the kept schedule history"),
    ]
    known_from: Annotated[
        datetime | None,
        Field(
            description="when the schedule history was trimmed: the instant from which "
            "owed ticks are known; null when the whole history is kept"
        ),
    ]
    entries: list[LedgerEntryOut]
    summary: LedgerSummaryOut


_NEEDS_A_TOKEN = "only with a valid token, or when the server has no tokens"


def _token_only(description: str) -> Any:
    """A field sent only to a request with a token: absent otherwise, never null."""
    return Field(
        default=None,
        description=f"{description}; {_NEEDS_A_TOKEN}",
        json_schema_extra=_absent_not_null,
    )


class ReadinessChecksOut(_Out):
    store: str = Field(
        description='"ok", or "unavailable: <error type>" (or "unavailable: no answer '
        'within <n> s") once the background probe has failed twice in a row; then 503'
    )
    coordinator: str = Field(
        description='"ok", or "unavailable: ..." as for the store; then the instance is '
        "degraded, not unready (200)"
    )
    scheduler: str = Field(description='"ok", or "starting" until every job is loaded (503)')


class ReadinessOut(_Out):
    """What /readyz and /api/health-check answer: 200 while the API can serve
    (`ok`, or `degraded` with the parts that are not answering), 503 when the
    store does not answer or the scheduler is still loading (`unavailable`)."""

    status: Literal["ok", "degraded", "unavailable"]
    checks: ReadinessChecksOut
    degraded: list[Literal["coordinator"]] | SkipJsonSchema[None] = Field(
        default=None,
        description="present while degraded: the parts not answering (firing goes on, "
        "fenced by the store)",
        json_schema_extra=_absent_not_null,
    )
    instance_id: str | SkipJsonSchema[None] = _token_only("the instance that answered")
    version: str | SkipJsonSchema[None] = _token_only("its cronsvc version")
    started_at: datetime | SkipJsonSchema[None] = _token_only("when it started")


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
        LedgerOut,
        ReadinessOut,
        ProblemOut,
    )
}


def _query_of(model: type[BaseModel]) -> list[dict[str, Any]]:
    """Query parameters that take what `model` takes as a body (a nullable
    field is simply left out), so the two cannot disagree."""
    schema = model.model_json_schema(by_alias=True)
    params = []
    for name, field in schema["properties"].items():
        field = {k: v for k, v in field.items() if k != "title"}
        description = field.pop("description", None)
        for branch in field.pop("anyOf", ()):
            if branch.get("type") != "null":
                field.update(branch)
        if field.get("default", "") is None:
            del field["default"]
        param: dict[str, Any] = {"name": name, "in": "query", "schema": field}
        if name in schema.get("required", ()):
            param["required"] = True
        if description:
            param["description"] = description
        params.append(param)
    return params


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


_PROBLEM = {"content": {"application/problem+json": {"schema": _ref("ProblemOut")}}}
_INSTANT = {"type": "string", "format": "date-time", "minLength": 1}
"""A query instant: RFC 3339 with an offset or Z; empty is refused, not ignored."""
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
        "schema": {"type": "string", "minLength": 1},
        "description": "from the Link header; left out for the first page",
    },
]
_LOG_FILTERS = [
    {"name": "status", "in": "query", "schema": {"enum": [s.value for s in ExecutionStatus]}},
    {
        "name": "since",
        "in": "query",
        "schema": _INSTANT,
        "description": "inclusive, on scheduledAt",
    },
    {
        "name": "until",
        "in": "query",
        "schema": _INSTANT,
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
    tag: str,
    body: str | None = None,
    params: list[dict[str, Any]] | None = None,
    errors: tuple[int, ...] = (),
    error_text: dict[int, str] | None = None,
    headers: dict[str, Any] | None = None,
    media_type: str | Iterable[str] = "application/json",
) -> dict[str, Any]:
    """One operation. 401 and 429 are added by `_guard`, from the routes the
    access middleware exempts. `media_type`: what the answer is served as
    (several when it depends on what is asked for)."""
    responses: dict[str, Any] = {str(ok): {"description": summary}}
    if response:
        types = [media_type] if isinstance(media_type, str) else sorted(media_type)
        responses[str(ok)]["content"] = {t: {"schema": response} for t in types}
    if headers:
        responses[str(ok)]["headers"] = headers
    for status in (*errors, 500):
        text = (error_text or {}).get(status, _ERROR_TEXT[status])
        responses[str(status)] = _error(status, text)
    operation: dict[str, Any] = {"tags": [tag], "summary": summary, "responses": responses}
    if params:
        operation["parameters"] = params
    if body:
        operation["requestBody"] = {"required": True, **_json(_ref(body))}
    return operation


def _error(status: int, text: str) -> dict[str, Any]:
    response: dict[str, Any] = {"description": text, **_PROBLEM}
    if status in _ERROR_HEADERS:
        response["headers"] = _ERROR_HEADERS[status]
    return response


_ERROR_TEXT = {
    400: "invalid input, field by field",
    401: "no valid API token (send Authorization: Bearer <token>)",
    404: "no such resource (also for malformed ids)",
    409: "duplicate name or stale version",
    413: "request body over 64 KiB",
    415: "the Content-Type is not JSON (malformed JSON sent as JSON is a 400)",
    429: "too many requests from this token (or address); retry after Retry-After seconds",
    500: "unexpected error (with a requestId to quote)",
    503: "the store is unavailable; retry after Retry-After seconds",
}
_ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": 'Bearer realm="cronsvc" (RFC 6750)',
            "schema": {"type": "string"},
        }
    },
    429: {"Retry-After": {"description": "whole seconds", "schema": {"type": "integer"}}},
    503: {"Retry-After": {"description": "whole seconds", "schema": {"type": "integer"}}},
}
_UNVERSIONED_409 = (
    "other writes to the job kept winning for "
    f"{UPDATE_DEADLINE_S:g} s (a write without a version applies itself again to the job "
    "as it then is until then)"
)
_WRITE = (400, 413, 415, 503)
_READ = (404, 503)
_JOB = _ref("JobOut")
_LOG = _ref("ExecutionOut")
_HEALTH = {"type": "object"}
_TEXT = {"type": "string"}


def _readiness(summary: str) -> dict[str, Any]:
    """A readiness probe: the same body ready or not, never a token needed."""
    operation = _op(summary, 200, _ref("ReadinessOut"), tag="system")
    operation["description"] = (
        "Answered without a token, for load balancers. Which instance answered "
        f"(instanceId, version, startedAt) is in the body {_NEEDS_A_TOKEN}."
    )
    operation["responses"]["503"] = {
        "description": "not ready: the body says which check failed",
        **_json(_ref("ReadinessOut")),
    }
    return operation


_DASHBOARD_FILES = sorted(set(DASHBOARD_ASSETS) - {"index.html"})
PATHS: dict[str, dict[str, Any]] = {
    "/api/cron": {
        "post": _op(
            "Create a job",
            201,
            _JOB,
            tag="jobs",
            body="JobIn",
            errors=(*_WRITE, 409),
            error_text={
                409: "duplicate name; or limits.max_jobs reached "
                f"(type {JOB_LIMIT_TYPE}, with the limit)"
            },
        ),
        "get": _op(
            "List jobs, newest first",
            200,
            {"type": "array", "items": _JOB},
            tag="jobs",
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
            errors=(400, 503),
            headers=_LINK,
        ),
    },
    "/api/cron/{id}": {
        "get": _op("Read a job", 200, _JOB, tag="jobs", params=[_ID], errors=_READ),
        "put": _op(
            "Replace a job (secret kept unless sent; see JobIn.secret for rotation)",
            200,
            _JOB,
            tag="jobs",
            body="JobIn",
            params=[_ID],
            errors=(*_WRITE, 404, 409),
        ),
        "patch": _op(
            "Change some fields (JSON merge patch)",
            200,
            _JOB,
            tag="jobs",
            params=[_ID],
            errors=(*_WRITE, 404, 409),
            error_text={409: f"duplicate name or stale version; {_UNVERSIONED_409}"},
        )
        | {
            "requestBody": {
                "required": True,
                **_json({"type": "object", "description": "a partial JobIn"}),
            }
        },
        "delete": _op(
            "Delete a job; answers with it as it was",
            200,
            _JOB,
            tag="jobs",
            params=[_ID],
            errors=_READ,
        ),
    },
    "/api/cron/{id}/pause": {
        "post": _op(
            "Stop firing",
            200,
            _JOB,
            tag="jobs",
            params=[_ID],
            errors=(*_READ, 409),
            error_text={409: _UNVERSIONED_409},
        )
    },
    "/api/cron/{id}/resume": {
        "post": _op(
            "Fire again from now on",
            200,
            _JOB,
            tag="jobs",
            params=[_ID],
            errors=(400, *_READ, 409),
            error_text={
                400: "the job's cronExpression or webhookUrl would be refused if written now "
                "(an imported job paused for it, say): change it first",
                409: _UNVERSIONED_409,
            },
        )
    },
    "/api/cron/{id}/trigger": {
        "post": _op(
            "Run now (trigger manual)",
            202,
            _ref("TriggeredOut"),
            tag="jobs",
            params=[_ID],
            errors=_READ,
        )
    },
    "/api/cron/{id}/next": {
        "get": _op(
            "The next fire instants",
            200,
            _ref("NextRunsOut"),
            tag="schedules",
            params=[
                _ID,
                {
                    "name": "count",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5},
                },
            ],
            errors=(400, *_READ),
        )
    },
    "/api/cron/{id}/ledger": {
        "get": _op(
            "Every tick the job owed in a range, with the record that settled it",
            200,
            _ref("LedgerOut"),
            tag="jobs",
            params=[
                _ID,
                {
                    "name": "since",
                    "in": "query",
                    "schema": _INSTANT,
                    "description": "inclusive; default: an hour before until",
                },
                {
                    "name": "until",
                    "in": "query",
                    "schema": _INSTANT,
                    "description": "exclusive; default and latest: now. At most 31 days "
                    "after since, and at most 1000 owed ticks between them",
                },
            ],
            errors=(400, *_READ),
        )
    },
    "/api/schedule/preview": {
        "post": _op(
            "Preview any expression",
            200,
            _ref("ScheduleOut"),
            tag="schedules",
            body="PreviewIn",
            errors=(400, 413, 415),
        ),
        "get": _op(
            "Preview any expression (query string)",
            200,
            _ref("ScheduleOut"),
            tag="schedules",
            params=_query_of(PreviewIn),
            errors=(400,),
        ),
    },
    "/api/execution-logs": {
        "get": _op(
            "List execution logs, newest tick first",
            200,
            {"type": "array", "items": _LOG},
            tag="execution logs",
            params=[
                {"name": "cronJobId", "in": "query", "schema": {"type": "string"}},
                *_LOG_FILTERS,
            ],
            errors=(400, 503),
            headers=_LINK,
        )
    },
    "/api/execution-logs/job/{cronJobId}": {
        "get": _op(
            "List one job's execution logs",
            200,
            {"type": "array", "items": _LOG},
            tag="execution logs",
            params=[
                {"name": "cronJobId", "in": "path", "required": True, "schema": {"type": "string"}},
                *_LOG_FILTERS,
            ],
            errors=(400, 503),
            headers=_LINK,
        )
    },
    "/api/execution-logs/{id}": {
        "get": _op(
            "Read an execution log", 200, _LOG, tag="execution logs", params=[_ID], errors=_READ
        ),
        "delete": _op(
            "Delete an execution log", 200, _LOG, tag="execution logs", params=[_ID], errors=_READ
        ),
    },
    "/api/cluster": {
        "get": _op("Live instances and the leader", 200, _HEALTH, tag="system", errors=(503,))
    },
    "/healthz": {"get": _op("Liveness", 200, _HEALTH, tag="system")},
    "/readyz": {"get": _readiness("Readiness of store, coordinator and scheduler")},
    "/api/health-check": {"get": _readiness("Readiness (the Node.js service's path)")},
    "/metrics": {
        "get": _op(
            "Prometheus metrics (text exposition format)",
            200,
            _TEXT,
            tag="system",
            media_type="text/plain",
        )
    },
    "/openapi.json": {"get": _op("This document", 200, {"type": "object"}, tag="documentation")},
    "/docs": {
        "get": _op(
            "This document, rendered for people (HTML)",
            200,
            _TEXT,
            tag="documentation",
            media_type="text/html",
        )
    },
    "/docs/": {
        "get": _op(
            "Redirects to /docs, whose relative links work from there only",
            308,
            None,
            tag="documentation",
            headers={
                "Location": {
                    "description": "../docs (relative, so a proxy's path prefix is kept)",
                    "schema": {"type": "string"},
                }
            },
        )
    },
    "/docs/{asset}": {
        "get": _op(
            "The script and style sheet of /docs",
            200,
            _TEXT,
            tag="documentation",
            params=[
                {"name": "asset", "in": "path", "required": True, "schema": {"enum": list(ASSETS)}}
            ],
            errors=(404,),
            error_text={404: "no such asset"},
            media_type=set(ASSETS.values()),
        )
    },
    "/": {
        "get": _op(
            "The web dashboard (a static page; it calls this API like any client)",
            200,
            _TEXT,
            tag="dashboard",
            media_type="text/html",
        )
    },
    "/dashboard/{asset}": {
        "get": _op(
            "The dashboard's scripts and style sheet (revalidated with their ETag)",
            200,
            _TEXT,
            tag="dashboard",
            params=[
                {
                    "name": "asset",
                    "in": "path",
                    "required": True,
                    "schema": {"enum": _DASHBOARD_FILES},
                }
            ],
            errors=(404,),
            error_text={404: "no such asset"},
            media_type={DASHBOARD_ASSETS[name] for name in _DASHBOARD_FILES},
        )
    },
}


def _guard(paths: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mark what the access middleware does, from the same route sets: no
    token on the exempt GETs (`security: []`), else 401; 429 on every route
    that is rate limited."""
    guarded: dict[str, dict[str, Any]] = {}
    for path, operations in paths.items():
        guarded[path] = {}
        for method, operation in operations.items():
            extra: dict[str, Any] = {}
            exempt = method == "get" and path in UNAUTHENTICATED_ROUTES
            if exempt:
                operation = {**operation, "security": []}
            else:
                extra["401"] = _error(401, _ERROR_TEXT[401])
            if not (method == "get" and path in UNLIMITED_ROUTES):
                extra["429"] = _error(429, _ERROR_TEXT[429])
            responses = dict(sorted({**operation["responses"], **extra}.items()))
            guarded[path][method] = {**operation, "responses": responses}
    return guarded


_SECURITY_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": (
        "One of the server's API tokens (server.api_tokens, server.api_tokens_file), "
        "as Authorization: Bearer <token>. Required by every operation without "
        "`security: []` when the server has tokens; without tokens the server "
        "listens on loopback only, unless told otherwise."
    ),
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
            "description": (
                "A dynamic cron service. Errors are RFC 9457 application/problem+json."
            ),
        },
        "security": [{"bearerAuth": []}],
        "paths": _guard(PATHS),
        "components": {"schemas": schemas, "securitySchemes": {"bearerAuth": _SECURITY_SCHEME}},
    }


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(build_document())
