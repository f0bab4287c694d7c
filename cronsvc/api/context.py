"""What the API handlers reach: typed application state, and request helpers."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from aiohttp import web

from cronsvc.claims import JobService
from cronsvc.clock import Clock
from cronsvc.config import Config
from cronsvc.coord import Coordinator
from cronsvc.errors import FieldError, ValidationFailed
from cronsvc.health import HealthMonitor
from cronsvc.leader import LeaderDuties
from cronsvc.metrics import Metrics
from cronsvc.netguard import TargetPolicy
from cronsvc.store import AlertStates, ExecutionRecords, JobStore


class ApiStore(JobStore, ExecutionRecords, AlertStates, Protocol):
    """What the API uses of the store: the jobs, the execution records it
    lists, shows and deletes, and the jobs' alert states it shows."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiContext:
    config: Config
    store: ApiStore
    coordinator: Coordinator
    jobs: JobService
    """Job-change notices and runs now."""
    leader: LeaderDuties
    clock: Clock
    metrics: Metrics
    scheduler_ready: asyncio.Event
    health: HealthMonitor
    """The store and the coordinator as last probed."""
    target_policy: TargetPolicy
    """The SSRF guard's policy: which webhook targets a job may name."""
    instance_id: str
    started_at: datetime
    create_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held from counting the jobs to inserting one, so that concurrent creates
    on one instance cannot pass `limits.max_jobs` together."""


CONTEXT = web.AppKey("context", ApiContext)

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_JSON_DEPTH = 64
"""How deeply a request body's JSON may nest (the object itself is level 1).
Everything that walks client JSON afterwards (validation, merge patch, the
webhook encoding, the store) then stays far from Python's recursion limit."""


def ctx(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object: 415 unless JSON, 413 over the limit
    (enforced by the application's client_max_size), 400 if malformed, nested
    deeper than `MAX_JSON_DEPTH` or holding an integer too long to read."""
    if request.content_type != "application/json" and not request.content_type.endswith("+json"):
        raise web.HTTPUnsupportedMediaType(
            text=f"send application/json, not {request.content_type or 'no content type'}"
        )
    raw = await request.read()
    too_deep = FieldError("body", f"is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationFailed([FieldError("body", f"is not valid JSON: {exc}")]) from None
    except RecursionError:  # far deeper than the limit: the parser gave up first
        raise ValidationFailed([too_deep]) from None
    except ValueError:  # the only other one: an integer past int_max_str_digits
        digits = sys.get_int_max_str_digits()
        message = f"holds an integer of more than {digits} digits"
        raise ValidationFailed([FieldError("body", message)]) from None
    if not isinstance(data, dict):
        raise ValidationFailed([FieldError("body", "must be a JSON object")])
    if _nested_deeper(data, MAX_JSON_DEPTH):
        raise ValidationFailed([too_deep])
    return data


def _nested_deeper(document: dict[str, Any], limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` levels in `document`
    (walked without recursion)."""
    pending: list[tuple[dict[str, Any] | list[Any], int]] = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > limit:
            return True
        children: Iterable[Any] = value.values() if isinstance(value, dict) else value
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def query_text(request: web.Request, name: str) -> str | None:
    """A query parameter, None when absent. Present but empty (`cursor=`) is
    a 400 naming it rather than read as absent: a client that sends an empty
    value meant something, and should leave the parameter out instead."""
    text = request.query.get(name)
    if text == "":
        raise ValidationFailed(
            [FieldError(name, "must not be empty; leave it out for its default")]
        )
    return text


def query_limit(request: web.Request) -> int:
    text = request.query.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed([FieldError("limit", f"must be an integer from 1 to {MAX_LIMIT}")])
    return limit


def query_bool(request: web.Request, name: str) -> bool | None:
    text = request.query.get(name)
    if text is None:
        return None
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0"):
        return False
    raise ValidationFailed([FieldError(name, "must be true or false")])


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=_dumps)


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def next_link(request: web.Request, cursor: str | None) -> dict[str, str]:
    """A `Link: <...>; rel="next"` header (RFC 8288) for the next page, if any."""
    if cursor is None:
        return {}
    url = request.url.relative().update_query({"cursor": cursor})
    return {"Link": f'<{url}>; rel="next"'}
