"""GET /api/cron/{id}/ledger: every tick a job owed in a range, each with the
record that settled it or marked as a gap, and the records that settled no
owed tick. What an operator asks first after an outage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web

from cronsvc.api.context import ctx, json_response, query_text
from cronsvc.api.operations import ID, INSTANT, Operation
from cronsvc.api.schemas import LedgerOut, parse_instant
from cronsvc.domain import Execution
from cronsvc.errors import FieldError, TooManyTicks, ValidationFailed
from cronsvc.ledger import build_ledger, owed_ticks
from cronsvc.store import ExecutionQuery, ExecutionRecords

routes = web.RouteTableDef()

DEFAULT_SPAN = timedelta(hours=1)
MAX_SPAN = timedelta(days=31)
MAX_RECORDS = 5000
"""Execution records one ledger may look at (ticks, manual runs and the rest)."""
_PAGE = 500
_FIRST_INSTANT = datetime.min.replace(tzinfo=UTC)


@routes.get("/api/cron/{id}/ledger")
@Operation(
    "Every tick the job owed in a range, with the record that settled it",
    tag="jobs",
    answer=LedgerOut,
    params=[
        ID,
        {
            "name": "since",
            "in": "query",
            "schema": INSTANT,
            "description": "inclusive; default: an hour before until",
        },
        {
            "name": "until",
            "in": "query",
            "schema": INSTANT,
            "description": "exclusive; default and latest: now. At most 31 days "
            "after since, and at most 1000 owed ticks between them",
        },
    ],
    errors=(400, 404, 503),
)
async def job_ledger(request: web.Request) -> web.Response:
    """`since` (inclusive) defaults to an hour before `until` (exclusive),
    which defaults to now; ticks after now are not listed."""
    api = ctx(request)
    now = api.clock.now()
    until = _query_instant(request, "until") or now
    since = _query_instant(request, "since") or until - min(DEFAULT_SPAN, until - _FIRST_INSTANT)
    if since >= until:
        message = "must be before until (which defaults to now)"
        raise ValidationFailed([FieldError("since", message)])
    if until - since > MAX_SPAN:
        raise ValidationFailed([FieldError("since", "the range must span at most 31 days")])
    job = await api.store.get_job(request.match_info["id"])
    history = await api.store.schedule_history(job.id)
    # Ticks after now are not listed: the range answered ends at now at the latest.
    until = min(until, now)
    since = min(since, until)
    try:
        owed = owed_ticks(history, since=since, until=until)
    except TooManyTicks as exc:
        raise ValidationFailed([FieldError("since", str(exc))]) from None
    records = await _records(api.store, job.id, since, until)
    ledger = build_ledger(
        owed, records, history=history, created_at=job.created_at, since=since, until=until
    )
    return json_response(LedgerOut.from_domain(job.id, ledger).wire())


def _query_instant(request: web.Request, name: str) -> datetime | None:
    text = query_text(request, name)
    return None if text is None else parse_instant(name, text)


async def _records(
    store: ExecutionRecords, job_id: str, since: datetime, until: datetime
) -> list[Execution]:
    records: list[Execution] = []
    cursor = None
    while True:
        page = await store.list_executions(
            ExecutionQuery(job_id=job_id, since=since, until=until, cursor=cursor, limit=_PAGE)
        )
        records += page.items
        if len(records) > MAX_RECORDS:
            message = f"the range holds more than {MAX_RECORDS} execution records; narrow it"
            raise ValidationFailed([FieldError("since", message)])
        if page.next_cursor is None:
            return records
        cursor = page.next_cursor
