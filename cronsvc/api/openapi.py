"""GET /openapi.json, built from the routes' declarations (`cronsvc.api.operations`)
and the pydantic models that validate requests and write answers, so the document
cannot drift from the code: a route without a declaration fails it."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from cronsvc import __version__
from cronsvc.api.auth import UNAUTHENTICATED_ROUTES, UNLIMITED_ROUTES
from cronsvc.api.operations import ANY_OBJECT, DECLARED, Operation, Schema
from cronsvc.api.problems import ProblemOut

routes = web.RouteTableDef()

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
_RETRY_AFTER = {"Retry-After": {"description": "whole seconds", "schema": {"type": "integer"}}}
_ERROR_HEADERS: dict[int, Schema] = {
    401: {
        "WWW-Authenticate": {
            "description": 'Bearer realm="cronsvc" (RFC 6750)',
            "schema": {"type": "string"},
        }
    },
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}
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


class Undocumented(LookupError):
    """A route whose handler declares no operation."""


def _schema(of: type[BaseModel] | Schema) -> Schema:
    return of if isinstance(of, dict) else {"$ref": f"#/components/schemas/{of.__name__}"}


def _error(status: int, text: str) -> Schema:
    response: Schema = {
        "description": text,
        "content": {"application/problem+json": {"schema": _schema(ProblemOut)}},
    }
    if status in _ERROR_HEADERS:
        response["headers"] = _ERROR_HEADERS[status]
    return response


def _operation(op: Operation, path: str, method: str) -> Schema:
    """`op` as the document writes it, guarded as the access middleware
    guards the route: no token on the exempt GETs (`security: []`), else
    401; 429 wherever requests are rate limited."""
    ok: Schema = {"description": op.summary}
    answer = None
    if op.answer is not None:
        answer = _schema(op.answer)
        answer = {"type": "array", "items": answer} if op.many else answer
        ok["content"] = {t: {"schema": answer} for t in sorted(op.media_types)}
    if op.headers:
        ok["headers"] = dict(op.headers)
    responses = {str(op.status): ok}
    for status, text in op.also.items():
        responses[str(status)] = {
            "description": text,
            "content": {"application/json": {"schema": answer}},
        }
    if op.other_answer is not None:
        _add_answer(responses, *op.other_answer)
    for status in (*op.errors, 500):
        responses[str(status)] = _error(status, op.error_text.get(status, _ERROR_TEXT[status]))
    operation: Schema = {"tags": [op.tag], "summary": op.summary}
    if method == "get" and path in UNAUTHENTICATED_ROUTES:
        operation["security"] = []
    else:
        responses["401"] = _error(401, _ERROR_TEXT[401])
    if not (method == "get" and path in UNLIMITED_ROUTES):
        responses["429"] = _error(429, _ERROR_TEXT[429])
    operation["responses"] = dict(sorted(responses.items()))
    if op.description:
        operation["description"] = op.description
    if op.params:
        operation["parameters"] = list(op.params)
    if op.body is not None:
        body = {"content": {"application/json": {"schema": _schema(op.body)}}}
        operation["requestBody"] = {"required": True, **body}
    return operation


def _add_answer(responses: Schema, status: int, text: str, model: type[BaseModel]) -> None:
    """`model` as the answer of `status`, beside the one already there, if any."""
    response = responses.get(str(status))
    if response is None or "content" not in response:
        content = {"application/json": {"schema": _schema(model)}}
        responses[str(status)] = {"description": text, "content": content}
        return
    response["description"] = f"{response['description']}; {text}"
    for media in response["content"].values():
        media["schema"] = {"oneOf": [media["schema"], _schema(model)]}


def build_document(app: web.Application) -> dict[str, Any]:
    paths: dict[str, Schema] = {}
    models: set[type[BaseModel]] = {ProblemOut}
    for route in app.router.routes():
        if route.method == "HEAD":  # aiohttp adds one to each GET
            continue
        path = route.resource.canonical if route.resource is not None else ""
        op = DECLARED.get(route.handler)
        if op is None:
            raise Undocumented(f"{route.method} {path} declares no operation")
        method = route.method.lower()
        paths.setdefault(path, {})[method] = _operation(op, path, method)
        models |= {m for m in (op.answer, op.body) if isinstance(m, type)}
        if op.other_answer is not None:
            models.add(op.other_answer[2])
    schemas: dict[str, Any] = {}
    for model in sorted(models, key=lambda m: m.__name__):
        schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
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
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearerAuth": _SECURITY_SCHEME}},
    }


@routes.get("/openapi.json")
@Operation("This document", tag="documentation", answer=ANY_OBJECT)
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(build_document(request.app))
