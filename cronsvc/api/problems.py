"""RFC 9457 problem documents: the model that writes them and that
/openapi.json documents every error answer with, and the one middleware that
maps errors to them."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict

from cronsvc.api.context import CONTEXT
from cronsvc.errors import (
    CoordinatorUnavailable,
    CronSvcError,
    DuplicateJobName,
    ExecutionNotFound,
    FieldError,
    InvalidCronExpression,
    InvalidCursor,
    InvalidTimezone,
    JobLimitReached,
    JobNotFound,
    RateLimited,
    StoreUnavailable,
    Unauthorized,
    ValidationFailed,
    VersionConflict,
)
from cronsvc.ids import new_id

log = structlog.get_logger(__name__)

PROBLEM_TYPE = "application/problem+json"
JOB_LIMIT_TYPE = "urn:cronsvc:problem:job-limit"
"""The `type` of the 409 that `limits.max_jobs` answers (a name, not a page)."""
REJECTED = "cronsvc_api_rejected_total"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FieldErrorOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str
    message: str


# Every error answer, as written and as documented. Members beyond these are
# the problem type's own (`limit`, `requestId`); null ones are left out.
class ProblemOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    detail: str | None = None
    errors: list[FieldErrorOut] | None = None


def problem(
    status: int,
    detail: str | None = None,
    *,
    type: str = "about:blank",
    title: str | None = None,
    errors: Sequence[FieldError] = (),
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    """A problem document. Its title is the status's phrase ("Not Found"), as
    RFC 9457 asks of type about:blank, whichever path answers; a type of its
    own brings a title of its own."""
    body = ProblemOut(
        type=type,
        title=HTTPStatus(status).phrase if title is None else title,
        status=status,
        detail=detail or None,
        errors=[FieldErrorOut(field=e.field, message=e.message) for e in errors] or None,
        **extra,
    )
    return web.Response(
        status=status,
        text=json.dumps(body.model_dump(exclude_none=True)),
        content_type=PROBLEM_TYPE,
        headers=headers,
    )


def problem_for(exc: CronSvcError) -> web.Response:
    """The response for an error raised on purpose."""
    if isinstance(exc, ValidationFailed):
        return problem(400, "the request has invalid fields", errors=exc.errors)
    if isinstance(exc, InvalidCronExpression):
        return problem(400, str(exc), errors=[FieldError("cronExpression", str(exc))])
    if isinstance(exc, InvalidTimezone):
        return problem(400, str(exc), errors=[FieldError("timezone", str(exc))])
    if isinstance(exc, InvalidCursor):
        return problem(400, str(exc), errors=[FieldError("cursor", str(exc))])
    if isinstance(exc, JobNotFound | ExecutionNotFound):
        return problem(404, str(exc))
    if isinstance(exc, DuplicateJobName):
        return problem(409, str(exc), errors=[FieldError("name", str(exc))])
    if isinstance(exc, VersionConflict):
        return problem(409, str(exc), errors=[FieldError("version", str(exc))])
    if isinstance(exc, JobLimitReached):
        return problem(
            409, str(exc), type=JOB_LIMIT_TYPE, title="Job limit reached", limit=exc.limit
        )
    if isinstance(exc, Unauthorized):
        challenge = 'Bearer realm="cronsvc"'
        if exc.presented:
            challenge += ', error="invalid_token"'  # RFC 6750, section 3
        return problem(401, str(exc), headers={"WWW-Authenticate": challenge})
    if isinstance(exc, RateLimited):
        return problem(429, str(exc), headers={"Retry-After": str(exc.retry_after_s)})
    if isinstance(exc, StoreUnavailable | CoordinatorUnavailable):
        part = "store" if isinstance(exc, StoreUnavailable) else "coordinator"
        return problem(503, f"the {part} is unavailable; try again", headers={"Retry-After": "1"})
    return _internal_error(exc)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except CronSvcError as exc:
        reason = _REJECTIONS.get(type(exc))
        if reason is not None:
            _count_rejection(request, reason)
        return problem_for(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 413:
            _count_rejection(request, "too_large")
        detail = {
            404: f"no route for {request.path}",
            405: f"{request.method} is not allowed on {request.path}",
            413: "the request body is larger than the limit",
        }.get(exc.status, exc.text or exc.reason)
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return problem(exc.status, detail, headers=headers)
    except ConnectionResetError as exc:
        if not _client_gone(request):
            return _internal_error(exc)
        # The client hung up before its request was whole (reading the body
        # raises this): its doing, not ours. The answer reaches no one.
        log.info("request_aborted", method=request.method, path=request.path)
        return problem(400, "the connection closed before the request was complete")
    except Exception as exc:
        return _internal_error(exc)


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


_REJECTIONS: dict[type[CronSvcError], str] = {
    Unauthorized: "unauthorized",
    RateLimited: "rate_limited",
    JobLimitReached: "job_limit",
}


def _count_rejection(request: web.Request, reason: str) -> None:
    """Requests turned away by a limit or for want of a token: counted, and
    logged at debug level (never with their headers)."""
    api = request.app.get(CONTEXT)
    if api is not None:
        api.metrics.inc(REJECTED, reason=reason)
    log.debug(
        "request_rejected",
        reason=reason,
        method=request.method,
        path=request.path,
        remote=request.remote,
    )


def _internal_error(exc: BaseException) -> web.Response:
    request_id = new_id()
    log.error("request_failed", request_id=request_id, exc_info=exc)
    return problem(500, "an unexpected error occurred", requestId=request_id)
