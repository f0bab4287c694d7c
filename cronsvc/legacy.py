"""Bringing jobs and execution logs over from the Node.js service cronsvc
replaces (Express and Mongoose: collections `cronjobs` and `executionlogs`).

The decisions are pure functions: `plan_job` and `plan_log` turn one legacy
document into what cronsvc stores, or a refusal with its reason.
`import_legacy` does the I/O around them: it reads the old database, reads
which jobs the store already holds, and writes what the plans say.

What happens to each kind of record:

- A job keeps its id (an ObjectId's 24 hex characters are a cronsvc id),
  name, expression, URL, active flag and timestamps; every other field takes
  the default the API gives a job created without it, and its schedule starts
  at the import (`last_tick`), so it owes no backlog.
- A job whose expression cronsvc cannot run, or whose URL's host is an
  address the SSRF guard refuses, is imported paused, with the reason in its
  `pausedReason`: the user sees it and can fix the job, then resume it.
- A job whose name or URL the API would refuse (a name taken or too long, a
  URL that is not http or https...) is refused and reported; the import goes
  on with the next. So is a job past `limits.max_jobs`.
- A job whose id the store holds already is left alone (imported before).
- Every execution log is imported, its job's or not: cronsvc keeps the logs
  of deleted jobs too, and a job refused now may be imported by a later run,
  its logs then already in place. Refused are only a log whose status is not
  SUCCESS or FAILURE, one without an instant, and a second log of one job at
  the same instant (the store keeps one record per tick of a job). `error` becomes `{type: "legacy",
  message}` with the first line only (no stack trace); a response body is cut
  to `webhook.max_response_bytes`. Logs older than
  `retention.execution_logs_days` are not imported: the service would delete
  them at once. They are counted in the report.
"""

from __future__ import annotations

import enum
import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from yarl import URL

from cronsvc.api.schemas import JobIn, validate
from cronsvc.cron import parse_schedule
from cronsvc.domain import ErrorInfo, Execution, ExecutionStatus, Job, Trigger
from cronsvc.errors import (
    DuplicateJobName,
    ExecutionNotFound,
    InvalidCronExpression,
    InvalidLegacySource,
    InvalidTimezone,
    LegacySourceUnreadable,
    TargetNotAllowed,
    ValidationFailed,
)
from cronsvc.ids import is_valid_id
from cronsvc.netguard import TargetPolicy
from cronsvc.store import ExecutionRecords, JobQuery, JobStore

JOBS_COLLECTION = "cronjobs"
LOGS_COLLECTION = "executionlogs"
LEGACY_INSTANCE = "legacy"
"""The `instanceId` of an imported execution log."""
ERROR_TYPE = "legacy"
MAX_MESSAGE_CHARS = 500
"""As the dispatcher bounds the messages it records."""
UNKNOWN_JOB_NAME = ""
"""The `jobName` of a log whose job the old database no longer holds."""
_PLACEHOLDER_SCHEDULE = "* * * * *"
_LOG_BATCH = 500


class ImportTarget(JobStore, ExecutionRecords, Protocol):
    """What an import uses of the store: it writes jobs and finished
    execution records, and reads back which are there already."""


class Outcome(enum.StrEnum):
    IMPORTED = "imported"
    PAUSED = "paused"
    """Imported, but paused, with the reason in its `pausedReason`."""
    REFUSED = "refused"
    PRESENT = "present"
    """Already in the store: imported by an earlier run."""
    EXPIRED = "expired"
    """An execution log older than the retention: not imported."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """What the plans take from the configuration, and the import's instant."""

    now: datetime
    timezone: str = "UTC"
    """The zone every imported schedule is evaluated in."""
    min_interval_s: float = 1.0
    default_timeout_s: float = 10.0
    max_response_bytes: int = 65536
    retention: timedelta = timedelta(days=30)
    target_policy: TargetPolicy = field(default_factory=TargetPolicy)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobPlan:
    legacy_id: str
    name: str
    outcome: Outcome
    job: Job | None = None
    """What to store, for IMPORTED and PAUSED."""
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LogPlan:
    legacy_id: str
    outcome: Outcome
    execution: Execution | None = None
    """What to store, for IMPORTED."""
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One line of the report: a record not imported as it was."""

    collection: str
    legacy_id: str
    name: str | None
    outcome: Outcome
    reason: str


@dataclass(slots=True, kw_only=True)
class Report:
    dry_run: bool
    jobs: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    logs: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    logs_without_job: int = 0
    """Logs imported whose job the old database no longer holds."""
    entries: list[Entry] = field(default_factory=list)

    def add_job(self, plan: JobPlan) -> None:
        self.jobs[plan.outcome] += 1
        if plan.reason is not None:
            self.entries.append(
                Entry(
                    collection=JOBS_COLLECTION,
                    legacy_id=plan.legacy_id,
                    name=plan.name,
                    outcome=plan.outcome,
                    reason=plan.reason,
                )
            )

    def add_log(self, plan: LogPlan) -> None:
        self.logs[plan.outcome] += 1
        if plan.outcome is Outcome.REFUSED and plan.reason is not None:
            self.entries.append(
                Entry(
                    collection=LOGS_COLLECTION,
                    legacy_id=plan.legacy_id,
                    name=None,
                    outcome=plan.outcome,
                    reason=plan.reason,
                )
            )

    def to_json(self) -> dict[str, Any]:
        jobs = (Outcome.IMPORTED, Outcome.PAUSED, Outcome.REFUSED, Outcome.PRESENT)
        logs = (Outcome.IMPORTED, Outcome.REFUSED, Outcome.PRESENT, Outcome.EXPIRED)
        return {
            "dryRun": self.dry_run,
            "jobs": {outcome.value: self.jobs[outcome] for outcome in jobs},
            "logs": {
                **{outcome.value: self.logs[outcome] for outcome in logs},
                "withoutJob": self.logs_without_job,
            },
            "entries": [
                {
                    "collection": e.collection,
                    "id": e.legacy_id,
                    "name": e.name,
                    "outcome": e.outcome.value,
                    "reason": e.reason,
                }
                for e in self.entries
            ],
        }

    def lines(self) -> list[str]:
        """The report for people: one line per record not imported as it
        was, then the totals."""
        lines = []
        for e in self.entries:
            what = "job" if e.collection == JOBS_COLLECTION else "log"
            label = e.legacy_id if e.name is None else f"{e.legacy_id} ({e.name})"
            lines.append(f"{what} {label}: {e.outcome.value}: {e.reason}")
        j, g = self.jobs, self.logs
        lines.append(
            f"jobs: {j[Outcome.IMPORTED]} imported, {j[Outcome.PAUSED]} imported paused, "
            f"{j[Outcome.REFUSED]} refused, {j[Outcome.PRESENT]} already present"
        )
        lines.append(
            f"logs: {g[Outcome.IMPORTED]} imported ({self.logs_without_job} of jobs no longer "
            f"in the old database), {g[Outcome.REFUSED]} refused, "
            f"{g[Outcome.PRESENT]} already present, "
            f"{g[Outcome.EXPIRED]} older than the retention (not imported)"
        )
        if self.dry_run:
            lines.append("dry run: nothing was written")
        return lines


# -- decisions ------------------------------------------------------------------


def legacy_id(value: Any) -> str:
    """A document's id as text (an ObjectId's 24 hex characters)."""
    return str(value)


def plan_job(
    document: Mapping[str, Any],
    settings: Settings,
    *,
    present: bool = False,
    name_taken: bool = False,
    room: bool = True,
    last_run: tuple[datetime, ExecutionStatus] | None = None,
) -> JobPlan:
    """What becomes of one `cronjobs` document. `present`: the store holds its
    id; `name_taken`: another job holds its name; `room`: the store may hold
    one more job; `last_run`: its newest log's start and status."""
    job_id = legacy_id(document.get("_id"))
    raw_name = document.get("name")
    name = raw_name if isinstance(raw_name, str) else repr(raw_name)

    def refused(reason: str) -> JobPlan:
        return JobPlan(legacy_id=job_id, name=name, outcome=Outcome.REFUSED, reason=reason)

    if not is_valid_id(job_id):
        return refused("its _id is not 24 hexadecimal digits")
    if present:
        return JobPlan(legacy_id=job_id, name=name, outcome=Outcome.PRESENT)
    try:
        model = validate(
            JobIn,
            {
                "name": raw_name,
                "cronExpression": _PLACEHOLDER_SCHEDULE,
                "webhookUrl": document.get("webhookUrl"),
            },
        )
    except ValidationFailed as failed:
        return refused("; ".join(f"{e.field}: {e.message}" for e in failed.errors))
    if name_taken:
        return refused(str(DuplicateJobName(name)))
    if not room:
        return refused("the store holds limits.max_jobs jobs")

    spec = model.to_spec(default_timeout_s=settings.default_timeout_s)
    expression, problems = _expression(document.get("cronExpression"), settings)
    active = document.get("isActive", True)
    if not isinstance(active, bool):
        problems.append(f"isActive was {active!r}, not true or false")
        active = False
    problems.extend(_target_problems(spec.webhook_url, settings.target_policy))
    created = _instant(document.get("createdAt")) or _id_time(document.get("_id")) or settings.now
    updated = max(_instant(document.get("updatedAt")) or created, created)
    reason = "; ".join(problems) or None
    job = Job(
        id=job_id,
        spec=replace(
            spec,
            cron_expression=expression,
            timezone=settings.timezone,
            is_active=active and reason is None,
        ),
        created_at=created,
        updated_at=updated,
        last_tick=settings.now,
        last_run_at=last_run[0] if last_run else None,
        last_status=last_run[1] if last_run else None,
        paused_reason=None if reason is None else f"imported paused: {reason}",
    )
    return JobPlan(
        legacy_id=job_id,
        name=name,
        outcome=Outcome.IMPORTED if reason is None else Outcome.PAUSED,
        job=job,
        reason=reason,
    )


def _expression(value: Any, settings: Settings) -> tuple[str, list[str]]:
    """The expression to store, and why cronsvc cannot run it (if it cannot)."""
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        return ("" if value is None else str(value)[:200]), [
            f"cronExpression {value!r} is not text of 1-200 characters"
        ]
    expression = value.strip()
    try:
        parse_schedule(expression, settings.timezone, min_interval_s=settings.min_interval_s)
    except (InvalidCronExpression, InvalidTimezone) as exc:
        return expression, [f"cronExpression {expression!r}: {exc}"]
    return expression, []


def _target_problems(url: str, policy: TargetPolicy) -> list[str]:
    """As the API judges a URL's host: IP literals and localhost now, names
    when the webhook is called."""
    host = URL(url).host
    if not host:
        return []
    try:
        policy.check_host(host)
    except TargetNotAllowed as exc:
        return [f"webhookUrl: {exc}"]
    return []


def plan_log(
    document: Mapping[str, Any],
    settings: Settings,
    job_names: Mapping[str, str],
) -> LogPlan:
    """What becomes of one `executionlogs` document; `job_names` holds the
    name of every job in the old database by id."""
    log_id = legacy_id(document.get("_id"))

    def refused(reason: str) -> LogPlan:
        return LogPlan(legacy_id=log_id, outcome=Outcome.REFUSED, reason=reason)

    if not is_valid_id(log_id):
        return refused("its _id is not 24 hexadecimal digits")
    job_id = legacy_id(document.get("cronJobId"))
    if not is_valid_id(job_id):
        return refused(f"its cronJobId {document.get('cronJobId')!r} is not a job id")
    try:
        status = ExecutionStatus(str(document.get("status")))
    except ValueError:
        status = None
    if status not in (ExecutionStatus.SUCCESS, ExecutionStatus.FAILURE):
        return refused(f"its status {document.get('status')!r} is not SUCCESS or FAILURE")
    executed = _instant(document.get("executedAt")) or _instant(document.get("createdAt"))
    if executed is None:
        return refused("its executedAt is missing")
    if executed < settings.now - settings.retention:
        return LogPlan(legacy_id=log_id, outcome=Outcome.EXPIRED)
    finished = max(_instant(document.get("updatedAt")) or executed, executed)
    body, truncated = _bounded_body(document.get("responseBody"), settings.max_response_bytes)
    execution = Execution(
        id=log_id,
        job_id=job_id,
        job_name=job_names.get(job_id, UNKNOWN_JOB_NAME),
        trigger=Trigger.SCHEDULE,
        scheduled_at=executed,
        status=status,
        instance_id=LEGACY_INSTANCE,
        executed_at=executed,
        finished_at=finished,
        duration_ms=int((finished - executed) / timedelta(milliseconds=1)),
        attempts=1,
        response_status=_http_status(document.get("responseStatus")),
        response_body=body,
        response_truncated=truncated,
        error=legacy_error(document.get("error")),
    )
    return LogPlan(legacy_id=log_id, outcome=Outcome.IMPORTED, execution=execution)


def legacy_error(value: Any) -> ErrorInfo | None:
    """The old service's `error` (text, often a stack trace): its first line,
    bounded as cronsvc's own messages are."""
    if value is None:
        return None
    if isinstance(value, Mapping) and isinstance(value.get("message"), str):
        value = value["message"]
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    return ErrorInfo(type=ERROR_TYPE, message=lines[0][:MAX_MESSAGE_CHARS])


def _bounded_body(value: Any, max_bytes: int) -> tuple[str | None, bool]:
    """A response body as text, cut to `max_bytes` bytes of UTF-8 (never in
    the middle of a character), and whether it was cut."""
    if value is None:
        return None, False
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    data = text.encode("utf-8", errors="replace")
    if len(data) <= max_bytes:
        return text, False
    return data[:max_bytes].decode("utf-8", errors="ignore"), True


def _http_status(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        return None
    return value


def _instant(value: Any) -> datetime | None:
    """A BSON date (pymongo hands naive ones back as UTC) to the millisecond."""
    if not isinstance(value, datetime):
        return None
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    aware = aware.astimezone(UTC)
    return aware.replace(microsecond=aware.microsecond // 1000 * 1000)


def _id_time(value: Any) -> datetime | None:
    generation_time = getattr(value, "generation_time", None)
    return _instant(generation_time)


def add_latest(
    latest: dict[str, tuple[datetime, ExecutionStatus]], document: Mapping[str, Any]
) -> None:
    """Keep in `latest` each job's newest log: its start and status (the
    job's `lastRunAt` and `lastStatus`)."""
    executed = _instant(document.get("executedAt")) or _instant(document.get("createdAt"))
    status = document.get("status")
    if executed is None or status not in ("SUCCESS", "FAILURE"):
        return
    job_id = legacy_id(document.get("cronJobId"))
    if job_id not in latest or latest[job_id][0] < executed:
        latest[job_id] = (executed, ExecutionStatus(status))


# -- I/O ----------------------------------------------------------------------------


Documents = Callable[[str], AsyncIterator[Mapping[str, Any]]]
"""The documents of a collection of the old database, by name."""


async def import_legacy(
    documents: Documents,
    store: ImportTarget,
    settings: Settings,
    *,
    max_jobs: int,
    dry_run: bool = False,
    progress: Callable[[Report], None] | None = None,
) -> Report:
    """Read the old database through `documents` and write what the plans say
    into `store` (nothing when `dry_run`). Logs go first, then the jobs, which
    take their `lastRunAt` from them."""
    report = Report(dry_run=dry_run)
    legacy_jobs = [document async for document in documents(JOBS_COLLECTION)]
    job_names = {
        legacy_id(d.get("_id")): d["name"] for d in legacy_jobs if isinstance(d.get("name"), str)
    }
    latest: dict[str, tuple[datetime, ExecutionStatus]] = {}
    ticks: set[tuple[str, datetime]] = set()
    batch: list[LogPlan] = []
    async for document in documents(LOGS_COLLECTION):
        add_latest(latest, document)
        plan = plan_log(document, settings, job_names)
        if plan.execution is not None:
            tick = (plan.execution.job_id, plan.execution.scheduled_at)
            if tick in ticks:  # the store keeps one record per tick of a job
                plan = LogPlan(
                    legacy_id=plan.legacy_id,
                    outcome=Outcome.REFUSED,
                    reason="another log of its job has the same executedAt",
                )
            ticks.add(tick)
        if plan.execution is None:
            report.add_log(plan)
            continue
        batch.append(plan)
        if len(batch) >= _LOG_BATCH:
            await _import_logs(store, batch, report, job_names, dry_run=dry_run)
            batch = []
            if progress:
                progress(report)
    await _import_logs(store, batch, report, job_names, dry_run=dry_run)

    ids, names = await _stored_jobs(store)
    room = max_jobs - len(ids)
    for document in legacy_jobs:
        job_id = legacy_id(document.get("_id"))
        job_plan = plan_job(
            document,
            settings,
            present=job_id in ids,
            name_taken=isinstance(document.get("name"), str) and document["name"] in names,
            room=room > 0,
            last_run=latest.get(job_id),
        )
        if job_plan.job is not None and not dry_run:
            try:
                await store.create_job(job_plan.job)
            except DuplicateJobName as exc:  # taken since the store was read
                job_plan = JobPlan(
                    legacy_id=job_id, name=job_plan.name, outcome=Outcome.REFUSED, reason=str(exc)
                )
        if job_plan.job is not None:
            ids.add(job_id)
            names.add(job_plan.job.spec.name)
            room -= 1
        report.add_job(job_plan)
        if progress:
            progress(report)
    return report


async def _import_logs(
    store: ImportTarget,
    batch: list[LogPlan],
    report: Report,
    job_names: Mapping[str, str],
    *,
    dry_run: bool,
) -> None:
    executions = [plan.execution for plan in batch if plan.execution is not None]
    if not executions:
        return
    if dry_run:
        present = {e.id for e in executions if await _execution_stored(store, e.id)}
    else:
        present = set(await store.import_executions(executions))
    for plan, execution in zip(batch, executions, strict=True):
        if execution.id in present:
            plan = replace(plan, outcome=Outcome.PRESENT, execution=None)
        elif execution.job_id not in job_names:
            report.logs_without_job += 1
        report.add_log(plan)


async def _execution_stored(store: ImportTarget, execution_id: str) -> bool:
    try:
        await store.get_execution(execution_id)
    except ExecutionNotFound:
        return False
    return True


async def _stored_jobs(store: ImportTarget) -> tuple[set[str], set[str]]:
    """The ids and names of the jobs the store holds."""
    ids: set[str] = set()
    names: set[str] = set()
    cursor = None
    while True:
        page = await store.list_jobs(JobQuery(cursor=cursor, limit=500))
        for job in page.items:
            ids.add(job.id)
            names.add(job.spec.name)
        if page.next_cursor is None:
            return ids, names
        cursor = page.next_cursor


@asynccontextmanager
async def mongo_source(url: str, database: str | None) -> AsyncIterator[Documents]:
    """The old database: `database`, else the one `url` names. Raises
    `InvalidLegacySource` when it is not named well, `LegacySourceUnreadable`
    when it cannot be read (checked once here, and on every read)."""
    from pymongo import AsyncMongoClient
    from pymongo.errors import ConfigurationError, PyMongoError

    try:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            url, tz_aware=True, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000
        )
    except ConfigurationError as exc:  # InvalidURI among them
        raise InvalidLegacySource(f"--from: {exc}") from None
    try:
        if database:
            db = client[database]
        else:
            try:
                db = client.get_default_database()
            except ConfigurationError:
                raise InvalidLegacySource(
                    "--from: name the old database in the URL or with --database"
                ) from None
        try:
            await db.command("ping")
        except PyMongoError as exc:
            raise LegacySourceUnreadable(f"cannot read the old database: {exc}") from None

        async def documents(collection: str) -> AsyncIterator[Mapping[str, Any]]:
            try:
                async for document in db[collection].find({}, sort=[("_id", 1)]):
                    yield document
            except PyMongoError as exc:
                raise LegacySourceUnreadable(f"cannot read {collection}: {exc}") from None

        yield documents
    finally:
        await client.close()
