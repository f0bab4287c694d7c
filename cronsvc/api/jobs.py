"""/api/cron: create, read, change, pause, resume, trigger and delete jobs;
/api/schedule/preview.

A create, replace or patch with `?dryRun=true` is checked as the write
would be (the same problems, 404 and 409) and answers what it would do
(`DryRunOut`): nothing is written and no instance is told.

Secrets: a write may set a job's `secret` to a whsec_ secret or to
"generate", which makes one and returns it in that answer only. When the
secret changes (to another, to a generated one, or to null) the old one
stays on the job as its previous secret, signing beside the new one for
`webhook.secret_rotation_grace_s`, so receivers can switch without refusing
calls. Setting null therefore stops signatures only once that grace is over.

A job's `alerts` policy has a secret of its own, write-only too, kept when a
write that keeps `alerts` leaves `alerts.secret` out; a new one takes over at
once (there is no grace period, as there is for the job's secret).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from aiohttp import web
from yarl import URL

from cronsvc.api.alertstate import alert_states
from cronsvc.api.context import (
    MAX_LIMIT,
    ApiContext,
    ctx,
    json_response,
    next_link,
    query_bool,
    query_limit,
    query_text,
    read_json_object,
)
from cronsvc.api.operations import ID, LINK, PAGE, Operation, Schema, query_of
from cronsvc.api.problems import JOB_LIMIT_TYPE
from cronsvc.api.schemas import (
    ABSENT,
    GENERATE_SECRET,
    LEGACY_ID_FIELDS,
    READ_ONLY_FIELDS,
    Absent,
    AlertStateOut,
    ChangeOut,
    DryRunOut,
    FiresOut,
    JobIn,
    JobOut,
    NextRunsOut,
    PreviewIn,
    ScheduleOut,
    TriggeredOut,
    spec_to_wire,
    validate,
)
from cronsvc.cron import CronSchedule, parse_schedule
from cronsvc.domain import AlertPolicy, Job, JobSpec, PreviousSecret
from cronsvc.dryrun import changes, plan_fires
from cronsvc.errors import (
    BeforeCalendar,
    CronSvcError,
    DuplicateJobName,
    FieldError,
    InvalidCronExpression,
    InvalidTimezone,
    JobLimitReached,
    TargetNotAllowed,
    ValidationFailed,
    VersionConflict,
)
from cronsvc.ids import new_id
from cronsvc.retry import backoff_delay
from cronsvc.signing import generate_secret, is_valid_secret
from cronsvc.store import KEEP, JobQuery, Keep

routes = web.RouteTableDef()
log = structlog.get_logger(__name__)
UPDATE_DEADLINE_S = 5.0
"""How long a write without a `version` (PATCH, pause, resume) that loses a
race to another write keeps applying itself again to the job as it now is,
before it gives up with 409."""
_UNVERSIONED_409 = (
    "other writes to the job kept winning for "
    f"{UPDATE_DEADLINE_S:g} s (a write without a version applies itself again to the job "
    "as it then is until then)"
)
_WRITE = (400, 413, 415, 503)
_READ = (404, 503)
_RETRY_BASE_S = 0.005
_RETRY_CAP_S = 0.1
_DIGITS = re.compile(r"[0-9]{1,9}")
ALERTS_URL = "alerts.url"
DRY_RUN_FIRES = 10
"""How many next fires a dry run lists before and after, unless `fires` says."""
_DRY_RUN: list[Schema] = [
    {
        "name": "dryRun",
        "in": "query",
        "schema": {"type": "boolean", "default": False},
        "description": "true (or 1): check the write as it would be made and answer what it "
        "would do (DryRunOut, 200), writing nothing and telling no instance",
    },
    {
        "name": "fires",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": DRY_RUN_FIRES},
        "description": "with dryRun: how many next fires to list before and after",
    },
]


def _schedule(api: ApiContext, expression: str, timezone: str) -> CronSchedule:
    """Parse a schedule, reporting a bad zone or expression as field errors."""
    try:
        return parse_schedule(
            expression, timezone, min_interval_s=api.config.scheduler.min_interval_s
        )
    except InvalidTimezone as exc:
        raise ValidationFailed([FieldError("timezone", str(exc))]) from None
    except InvalidCronExpression as exc:
        raise ValidationFailed([FieldError("cronExpression", str(exc))]) from None


def _schedule_errors(
    api: ApiContext, payload: dict[str, Any], failed: ValidationFailed
) -> list[FieldError]:
    expression, timezone = payload.get("cronExpression"), payload.get("timezone", "UTC")
    reported = {e.field for e in failed.errors}
    if (
        not isinstance(expression, str)
        or not isinstance(timezone, str)
        or "cronExpression" in reported
    ):
        return []
    try:
        _schedule(api, expression, timezone)
    except ValidationFailed as bad:
        return [e for e in bad.errors if e.field not in reported]
    return []


def _target_errors(api: ApiContext, url: object, field: str = "webhookUrl") -> list[FieldError]:
    """A URL cronsvc calls (`field`: the webhookUrl, or alerts.url) whose host
    is an IP literal or `localhost` the SSRF guard would refuse, reported now
    rather than at every call. Names are judged when the URL is called: DNS
    can change in between."""
    if not isinstance(url, str):
        return []
    try:
        host = URL(url).host
    except (TypeError, ValueError):
        return []
    if not host:
        return []
    try:
        api.target_policy.check_host(host)
    except TargetNotAllowed as exc:
        return [FieldError(field, str(exc))]
    return []


def _alert_target_errors(
    api: ApiContext, alerts: object, reported: frozenset[str] = frozenset()
) -> list[FieldError]:
    """`_target_errors` of a job's alerts.url (as sent, or as parsed), unless
    it was reported already."""
    if isinstance(alerts, AlertPolicy):
        url: object = alerts.url
    elif isinstance(alerts, dict):
        url = alerts.get("url")
    else:
        return []
    return [] if ALERTS_URL in reported else _target_errors(api, url, ALERTS_URL)


def _check_runnable(api: ApiContext, spec: JobSpec, more: list[FieldError] | None = None) -> None:
    """Raise `ValidationFailed` if the job's schedule or target would be
    refused were it written now, with the `more` errors found besides."""
    errors = [*_target_errors(api, spec.webhook_url), *(more or [])]
    try:
        _schedule(api, spec.cron_expression, spec.timezone)
    except ValidationFailed as bad:
        errors = [*bad.errors, *errors]
    if errors:
        raise ValidationFailed(errors)


async def _announce(api: ApiContext, job_id: str) -> None:
    """Tell every instance a job changed; the request succeeds even if the
    notice cannot go out (see `JobService.announce`)."""
    await api.jobs.announce(job_id)


def _next_run(api: ApiContext, job: Job) -> datetime | None:
    if not job.spec.is_active:
        return None
    try:
        schedule = parse_schedule(job.spec.cron_expression, job.spec.timezone)
    except CronSvcError:
        return None
    return schedule.next_after(max(api.clock.now(), job.last_tick))


async def _job_response(
    api: ApiContext, job: Job, *, status: int = 200, secret: str | None = None, **headers: str
) -> web.Response:
    alerts = await alert_states(api, [job])
    answer = _job_out(api, job, _next_run(api, job), secret=secret, alert_state=alerts[job.id])
    return json_response(answer.wire(), status=status, headers=headers or None)


def _job_out(
    api: ApiContext,
    job: Job,
    next_run_at: datetime | None,
    *,
    now: datetime | None = None,
    secret: str | None = None,
    alert_state: AlertStateOut | Absent | None = ABSENT,
) -> JobOut:
    now = now or api.clock.now()
    legacy_ids = api.config.api.legacy_ids
    return JobOut.from_domain(
        job, next_run_at, now=now, secret=secret, legacy_ids=legacy_ids, alert_state=alert_state
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Parsed:
    spec: JobSpec
    version: int | None
    """The `version` precondition, if the client sent one."""
    generated_secret: str | None = field(default=None, repr=False)
    """The secret made for "generate", to answer once."""


def _parse_job(
    api: ApiContext,
    data: dict[str, Any],
    *,
    keep_secret: str | None = None,
    keep_alert_secret: str | None = None,
) -> _Parsed:
    """Validate a whole job document. A `secret` left out is `keep_secret`;
    "generate" is replaced by a new secret. An `alerts.secret` left out of
    the `alerts` sent is `keep_alert_secret`."""
    payload = {k: v for k, v in data.items() if k not in _ignored(api)}
    try:
        model = validate(JobIn, payload)
    except ValidationFailed as failed:
        # Report a bad schedule or target along with the other fields, not on the next try.
        reported = frozenset(e.field for e in failed.errors)
        target = [] if "webhookUrl" in reported else _target_errors(api, payload.get("webhookUrl"))
        alert_target = _alert_target_errors(api, payload.get("alerts"), reported)
        raise ValidationFailed(
            [*failed.errors, *_schedule_errors(api, payload, failed), *target, *alert_target]
        ) from None
    spec = model.to_spec(default_timeout_s=api.config.webhook.timeout_s)
    _check_runnable(api, spec, _alert_target_errors(api, spec.alerts))
    generated = None
    if "secret" not in payload:
        spec = _with(spec, secret=keep_secret)
    elif spec.secret == GENERATE_SECRET:
        generated = generate_secret()
        spec = _with(spec, secret=generated)
    alerts = payload.get("alerts")
    if spec.alerts is not None and isinstance(alerts, dict) and "secret" not in alerts:
        spec = _with(spec, alerts=dataclasses.replace(spec.alerts, secret=keep_alert_secret))
    return _Parsed(spec=spec, version=model.version, generated_secret=generated)


def _alert_secret(spec: JobSpec) -> str | None:
    return None if spec.alerts is None else spec.alerts.secret


def _ignored(api: ApiContext) -> frozenset[str]:
    """The fields a job write may carry and that are left out of it."""
    if api.config.api.legacy_ids:
        return READ_ONLY_FIELDS | LEGACY_ID_FIELDS
    return READ_ONLY_FIELDS


def _with(spec: JobSpec, **changes: Any) -> JobSpec:
    return dataclasses.replace(spec, **changes)


@routes.post("/api/cron")
@Operation(
    "Create a job",
    tag="jobs",
    status=201,
    answer=JobOut,
    other_answer=(200, "the dry run (dryRun=true): nothing created", DryRunOut),
    body=JobIn,
    params=_DRY_RUN,
    errors=(*_WRITE, 409),
    error_text={
        409: f"duplicate name; or limits.max_jobs reached (type {JOB_LIMIT_TYPE}, with the limit)"
    },
)
async def create_job(request: web.Request) -> web.Response:
    """Create a job; 409 once the store holds `limits.max_jobs`. Instances of
    a cluster each check the shared count, so together they may pass the limit
    by the creates that race on other instances, never by more."""
    api = ctx(request)
    fire_count = _dry_run_fires(request)
    parsed = _parse_job(api, await read_json_object(request))
    if fire_count is not None:
        if await api.store.count_jobs() >= api.config.limits.max_jobs:
            raise JobLimitReached(api.config.limits.max_jobs)
        return await _dry_run(api, None, parsed, fire_count)
    async with api.create_lock:
        if await api.store.count_jobs() >= api.config.limits.max_jobs:
            raise JobLimitReached(api.config.limits.max_jobs)
        now = api.clock.now()
        job = Job(
            id=new_id(), spec=parsed.spec, created_at=now, updated_at=now, version=1, last_tick=now
        )
        job = await api.store.create_job(job)
    await _announce(api, job.id)
    return await _job_response(
        api, job, status=201, secret=parsed.generated_secret, Location=f"/api/cron/{job.id}"
    )


@routes.get("/api/cron")
@Operation(
    "List jobs, newest first",
    tag="jobs",
    answer=JobOut,
    many=True,
    headers=LINK,
    params=[
        {"name": "isActive", "in": "query", "schema": {"type": "boolean"}},
        {"name": "tag", "in": "query", "schema": {"type": "string"}},
        {"name": "name", "in": "query", "schema": {"type": "string"}, "description": "name prefix"},
        *PAGE,
    ],
    errors=(400, 503),
)
async def list_jobs(request: web.Request) -> web.Response:
    api = ctx(request)
    query = JobQuery(
        is_active=query_bool(request, "isActive"),
        tag=request.query.get("tag"),
        name_prefix=request.query.get("name"),
        cursor=query_text(request, "cursor"),
        limit=query_limit(request),
    )
    page = await api.store.list_jobs(query)
    now = api.clock.now()
    alerts = await alert_states(api, page.items)
    return json_response(
        JobOut.wire_list(
            _job_out(api, job, _next_run(api, job), now=now, alert_state=alerts[job.id])
            for job in page.items
        ),
        headers=next_link(request, page.next_cursor),
    )


@routes.get("/api/cron/{id}")
@Operation("Read a job", tag="jobs", answer=JobOut, params=[ID], errors=_READ)
async def get_job(request: web.Request) -> web.Response:
    api = ctx(request)
    return await _job_response(api, await api.store.get_job(request.match_info["id"]))


async def _write(api: ApiContext, current: Job, spec: JobSpec, precondition: int | None) -> Job:
    _check_version(current, precondition)
    now = api.clock.now()
    job = await api.store.update_job(
        current.id,
        spec,
        now=now,
        expected_version=current.version,
        restart_schedule=_restarts(current.spec, spec),
        previous_secret=_retired_secret(api, current, spec.secret, now),
    )
    await _announce(api, job.id)
    return job


def _check_version(current: Job, precondition: int | None) -> None:
    if precondition is not None and precondition != current.version:
        raise VersionConflict(current.id, precondition, current.version)


def _restarts(old: JobSpec, new: JobSpec) -> bool:
    """Whether a write from `old` to `new` runs the schedule from now on."""
    return (
        old.cron_expression != new.cron_expression
        or old.timezone != new.timezone
        or (new.is_active and not old.is_active)
    )


def _dry_run_fires(request: web.Request) -> int | None:
    """None for a write; for its dry run, how many fires to list."""
    if not query_bool(request, "dryRun"):
        return None
    return _count(request.query.get("fires", str(DRY_RUN_FIRES)), name="fires")


async def _dry_run(
    api: ApiContext, current: Job | None, parsed: _Parsed, count: int
) -> web.Response:
    """What writing `parsed` over `current` (None: creating it) would do,
    refused as the write would be: a stale version, a name taken."""
    if current is not None:
        _check_version(current, parsed.version)
    await _check_name_free(api, parsed.spec.name, current.id if current else None)
    now = api.clock.now()
    job = _would_be(api, current, parsed.spec, now)
    plan = plan_fires(
        _firing(current),
        _runs_from(api, current or job),
        _firing(job),
        _runs_from(api, job),
        count,
    )
    answer = _job_out(api, job, _next_run(api, job), now=now).wire()
    if current is None:
        answer.pop("id")
        answer.pop("_id", None)
    before = None if current is None else spec_to_wire(current.spec)
    found = changes(
        before,
        spec_to_wire(job.spec),
        secret_before=current.spec.secret if current else None,
        secret_after=job.spec.secret,
        alert_secret_before=_alert_secret(current.spec) if current else None,
        alert_secret_after=_alert_secret(job.spec),
    )
    return json_response(
        DryRunOut.of(
            dry_run=True,
            job=answer,
            changes=[ChangeOut.from_change(c) for c in found],
            fires=FiresOut.from_plan(plan),
        ).wire()
    )


async def _check_name_free(api: ApiContext, name: str, job_id: str | None) -> None:
    """Raise `DuplicateJobName` as the store would if another job has `name`."""
    cursor = None
    while True:
        query = JobQuery(name_prefix=name, cursor=cursor, limit=MAX_LIMIT)
        page = await api.store.list_jobs(query)
        if any(job.spec.name == name and job.id != job_id for job in page.items):
            raise DuplicateJobName(name)
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def _would_be(api: ApiContext, current: Job | None, spec: JobSpec, now: datetime) -> Job:
    """The job as the store would hold it after the write (see `update_job`)."""
    if current is None:
        return Job(id="", spec=spec, created_at=now, updated_at=now, version=1, last_tick=now)
    retired = _retired_secret(api, current, spec.secret, now)
    return dataclasses.replace(
        current,
        spec=spec,
        version=current.version + 1,
        updated_at=now,
        last_tick=now if _restarts(current.spec, spec) else current.last_tick,
        paused_reason=None,
        deferred_until=None,
        previous_secret=current.previous_secret if isinstance(retired, Keep) else retired,
    )


def _firing(job: Job | None) -> CronSchedule | None:
    """The schedule `job` fires on; None if it does not fire (absent, paused,
    or a schedule kept from before today's rules that no longer parses)."""
    if job is None or not job.spec.is_active:
        return None
    try:
        return parse_schedule(job.spec.cron_expression, job.spec.timezone)
    except CronSvcError:
        return None


def _runs_from(api: ApiContext, job: Job) -> datetime:
    return max(api.clock.now(), job.last_tick)


def _retired_secret(
    api: ApiContext, current: Job, new_secret: str | None, now: datetime
) -> PreviousSecret | Keep | None:
    """What the job's previous secret becomes when its secret is set to
    `new_secret`: the secret it replaces, for the grace period. Unchanged, or
    replacing no secret at all (a previous one keeps its own grace), it stays."""
    old = current.spec.secret
    if old is None or old == new_secret:
        return KEEP
    grace_s = api.config.webhook.secret_rotation_grace_s
    if grace_s <= 0 or not is_valid_secret(old):
        # No overlap wanted; or a secret kept from before secrets had to be
        # whsec_ ones, which never signed anything and so has no one to serve.
        return None
    return PreviousSecret(secret=old, expires_at=now + timedelta(seconds=grace_s))


@routes.put("/api/cron/{id}")
@Operation(
    "Replace a job (secret kept unless sent; see JobIn.secret for rotation)",
    tag="jobs",
    answer=JobOut,
    other_answer=(200, "or its dry run (dryRun=true): nothing written", DryRunOut),
    body=JobIn,
    params=[ID, *_DRY_RUN],
    errors=(*_WRITE, 404, 409),
)
async def replace_job(request: web.Request) -> web.Response:
    """Full replacement. A `secret` left out keeps the stored one (it is never
    returned, so a client that GETs, edits and PUTs must not lose it);
    `"secret": null` removes it."""
    api = ctx(request)
    fire_count = _dry_run_fires(request)
    data = await read_json_object(request)
    current = await api.store.get_job(request.match_info["id"])
    parsed = _parse_job(
        api,
        data,
        keep_secret=current.spec.secret,
        keep_alert_secret=_alert_secret(current.spec),
    )
    if fire_count is not None:
        return await _dry_run(api, current, parsed, fire_count)
    job = await _write(api, current, parsed.spec, parsed.version)
    return await _job_response(api, job, secret=parsed.generated_secret)


@routes.patch("/api/cron/{id}")
@Operation(
    "Change some fields (JSON merge patch)",
    tag="jobs",
    answer=JobOut,
    body={"type": "object", "description": "a partial JobIn"},
    other_answer=(200, "or its dry run (dryRun=true): nothing written", DryRunOut),
    params=[ID, *_DRY_RUN],
    errors=(*_WRITE, 404, 409),
    error_text={409: f"duplicate name or stale version; {_UNVERSIONED_409}"},
)
async def patch_job(request: web.Request) -> web.Response:
    """Partial update as a JSON merge patch (RFC 7396): objects merge, null
    removes a field (so it takes its default)."""
    api = ctx(request)
    fire_count = _dry_run_fires(request)
    patch = {k: v for k, v in (await read_json_object(request)).items() if k not in _ignored(api)}
    deadline = api.clock.monotonic() + UPDATE_DEADLINE_S
    for attempt in itertools.count(1):
        current = await api.store.get_job(request.match_info["id"])
        # The stored secret is not merged in: it is not checked again, and a
        # `"secret": null` in the patch removes the key, which must not keep it.
        merged = _merge_patch(spec_to_wire(current.spec), patch)
        keep = None if "secret" in patch else current.spec.secret
        # So is the alert secret, unless the patch names it (null removes it).
        sent = patch.get("alerts")
        named = isinstance(sent, dict) and "secret" in sent
        keep_alert = None if named else _alert_secret(current.spec)
        parsed = _parse_job(api, merged, keep_secret=keep, keep_alert_secret=keep_alert)
        if fire_count is not None:
            return await _dry_run(api, current, parsed, fire_count)
        try:
            job = await _write(api, current, parsed.spec, parsed.version)
            return await _job_response(api, job, secret=parsed.generated_secret)
        except VersionConflict:
            if parsed.version is not None or api.clock.monotonic() >= deadline:
                raise
        await _before_retry(api, attempt)
    raise AssertionError("unreachable")  # pragma: no cover


async def _set_active(request: web.Request, active: bool) -> web.Response:
    """Pause or resume. A resume is refused (400) while the job could not run:
    a paused job may hold a schedule or target written before the rules it now
    breaks (an imported one, or one from before `scheduler.min_interval_s`)."""
    api = ctx(request)
    deadline = api.clock.monotonic() + UPDATE_DEADLINE_S
    for attempt in itertools.count(1):
        current = await api.store.get_job(request.match_info["id"])
        if current.spec.is_active == active:
            return await _job_response(api, current)
        if active:
            _check_runnable(api, current.spec)
        try:
            return await _job_response(
                api, await _write(api, current, _with(current.spec, is_active=active), None)
            )
        except VersionConflict:
            if api.clock.monotonic() >= deadline:
                raise
        await _before_retry(api, attempt)
    raise AssertionError("unreachable")  # pragma: no cover


async def _before_retry(api: ApiContext, attempt: int) -> None:
    """A short jittered wait after a write lost a race, so the writes that
    race each other spread out instead of colliding again at once."""
    await api.clock.sleep(backoff_delay(attempt, _RETRY_BASE_S, _RETRY_CAP_S))


@routes.post("/api/cron/{id}/pause")
@Operation(
    "Stop firing",
    tag="jobs",
    answer=JobOut,
    params=[ID],
    errors=(*_READ, 409),
    error_text={409: _UNVERSIONED_409},
)
async def pause_job(request: web.Request) -> web.Response:
    return await _set_active(request, False)


@routes.post("/api/cron/{id}/resume")
@Operation(
    "Fire again from now on",
    tag="jobs",
    answer=JobOut,
    params=[ID],
    errors=(400, *_READ, 409),
    error_text={
        400: "the job's cronExpression or webhookUrl would be refused if written now "
        "(an imported job paused for it, say): change it first",
        409: _UNVERSIONED_409,
    },
)
async def resume_job(request: web.Request) -> web.Response:
    """Resume firing from now on; ticks that fell while paused are not owed."""
    return await _set_active(request, True)


@routes.delete("/api/cron/{id}")
@Operation(
    "Delete a job; answers with it as it was", tag="jobs", answer=JobOut, params=[ID], errors=_READ
)
async def delete_job(request: web.Request) -> web.Response:
    """Delete and answer with the job as it was (200, so clients that read a
    body from the answer keep working). Its execution logs stay."""
    api = ctx(request)
    job = await api.store.get_job(request.match_info["id"])
    await api.store.delete_job(job.id)
    await _announce(api, job.id)
    return json_response(_job_out(api, job, None, alert_state=None).wire())


@routes.post("/api/cron/{id}/trigger")
@Operation(
    "Run now (trigger manual)",
    tag="jobs",
    status=202,
    answer=TriggeredOut,
    params=[ID],
    errors=_READ,
)
async def trigger_job(request: web.Request) -> web.Response:
    """Run now (trigger `manual`), paused or not. 202 with the execution."""
    api = ctx(request)
    execution = await api.jobs.trigger_now(request.match_info["id"])
    answer = TriggeredOut.started(execution, legacy_ids=api.config.api.legacy_ids)
    return json_response(
        answer.wire(),
        status=202,
        headers={"Location": f"/api/execution-logs/{execution.id}"},
    )


@routes.get("/api/cron/{id}/next")
@Operation(
    "The next fire instants",
    tag="schedules",
    answer=NextRunsOut,
    params=[
        ID,
        {
            "name": "count",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5},
        },
    ],
    errors=(400, *_READ),
)
async def next_runs(request: web.Request) -> web.Response:
    api = ctx(request)
    job = await api.store.get_job(request.match_info["id"])
    count = _count(request.query.get("count", "5"))
    schedule = _schedule(api, job.spec.cron_expression, job.spec.timezone)
    after = max(api.clock.now(), job.last_tick)
    answer = NextRunsOut.listing(
        schedule, after, count, cron_job_id=job.id, is_active=job.spec.is_active
    )
    return json_response(answer.wire())


@routes.post("/api/schedule/preview")
@Operation(
    "Preview any expression",
    tag="schedules",
    answer=ScheduleOut,
    body=PreviewIn,
    errors=(400, 413, 415),
)
async def preview_post(request: web.Request) -> web.Response:
    return _preview(ctx(request), await read_json_object(request))


@routes.get("/api/schedule/preview")
@Operation(
    "Preview any expression (query string)",
    tag="schedules",
    answer=ScheduleOut,
    params=query_of(PreviewIn),
    errors=(400,),
)
async def preview_get(request: web.Request) -> web.Response:
    """As POST, from a query string: `count` is read from its digits (anything
    else is left for validation to refuse)."""
    data: dict[str, Any] = dict(request.query)
    count = data.get("count")
    if count is not None and _DIGITS.fullmatch(count):
        data["count"] = int(count)
    return _preview(ctx(request), data)


def _preview(api: ApiContext, data: dict[str, Any]) -> web.Response:
    """Fewer instants than `count` (or none) when the calendar ends first."""
    model = validate(PreviewIn, data)
    schedule = _schedule(api, model.cron_expression, model.timezone)
    try:
        answer = ScheduleOut.listing(schedule, model.after or api.clock.now(), model.count)
        return json_response(answer.wire())
    except BeforeCalendar:
        message = f"falls before year 1 on the clocks of {model.timezone}"
        raise ValidationFailed([FieldError("after", message)]) from None


def _count(text: str, *, name: str = "count") -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= 100:
        raise ValidationFailed([FieldError(name, "must be an integer from 1 to 100")])
    return count


def _merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result
