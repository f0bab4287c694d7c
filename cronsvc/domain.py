"""The values cronsvc works with: jobs, their specs, and execution records.

Python names are snake_case; the API layer maps them to the camelCase wire
names. Every instant is a timezone-aware UTC datetime with millisecond
precision (see `cronsvc.clock.to_ms`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

JsonValue = Any
"""A value that `json.dumps` accepts."""


class HttpMethod(enum.StrEnum):
    GET = "GET"
    POST = "POST"
    PUT = "PUT"
    PATCH = "PATCH"
    DELETE = "DELETE"

    @property
    def carries_body(self) -> bool:
        return self is not HttpMethod.GET


HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""A header field name (RFC 9110's token); match with `fullmatch`."""
HEADER_VALUE_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""A character no header value may hold: a control character other than tab
(RFC 9110, section 5.5); find one with `search`."""
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "expect",
        "user-agent",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)
"""Headers (lower case) the dispatcher sets itself and never takes from a
job: the message framing and the connection, which a job's value would
contradict, and the user agent and Standard Webhooks headers, which are
cronsvc's to set (one a job set would only mislead). The API refuses them."""


class ConcurrencyPolicy(enum.StrEnum):
    """What a tick does while an earlier execution of its job still runs."""

    ALLOW = "allow"
    """Run alongside it."""
    FORBID = "forbid"
    """Do not run: the tick is recorded SKIPPED."""
    REPLACE = "replace"
    """Run, and end the running execution: it is recorded FAILURE (error type
    "replaced") and its webhook request is aborted."""


class MisfirePolicy(enum.StrEnum):
    SKIP = "skip"
    FIRE_ONCE = "fire_once"
    FIRE_ALL = "fire_all"


class Trigger(enum.StrEnum):
    SCHEDULE = "schedule"
    MANUAL = "manual"
    CATCHUP = "catchup"


class ExecutionStatus(enum.StrEnum):
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    SKIPPED = "SKIPPED"
    MISSED = "MISSED"
    LOST = "LOST"

    @property
    def is_final(self) -> bool:
        return self is not ExecutionStatus.RUNNING


MAX_ATTEMPTS = 10
"""The most attempts a retry policy may make; it also bounds an execution's
attempt log."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    max_attempts: int = 1
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0


class AlertFormat(enum.StrEnum):
    """How an alert's document is written."""

    STANDARD = "standard"
    """cronsvc's JSON document (see `cronsvc.alertdoc`)."""
    SLACK = "slack"
    """`{"text": ...}`: what a Slack (or Mattermost, or Teams) incoming
    webhook takes."""


ALERTING_STATUSES = frozenset(
    {ExecutionStatus.FAILURE, ExecutionStatus.MISSED, ExecutionStatus.LOST}
)
"""The run outcomes that count towards a job's alert."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertPolicy:
    """Where and when a job's failures, and its recovery, are told.

    A job without one follows the service's `[alerts]` default (none unless
    its `url` is set); `enabled=False` turns alerts off for the job even
    then."""

    enabled: bool = True
    url: str | None = None
    """Required when `enabled`."""
    after: int = 1
    """Consecutive runs ending FAILURE, MISSED or LOST before the job alerts."""
    on_recovery: bool = True
    """Also tell, once, when an alerting job's run succeeds again."""
    format: AlertFormat = AlertFormat.STANDARD
    secret: str | None = field(default=None, repr=False)
    """Signs the alert (Standard Webhooks); None: the job's own secret, else
    the service's alert secret, else unsigned."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSpec:
    """Everything a user sets on a job."""

    name: str
    cron_expression: str
    timezone: str = "UTC"
    webhook_url: str
    http_method: HttpMethod = HttpMethod.POST
    headers: Mapping[str, str] = field(default_factory=dict)
    body: JsonValue | None = None
    """None: the default JSON document; a str is sent as is; anything else as JSON."""
    timeout_seconds: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW
    misfire_policy: MisfirePolicy = MisfirePolicy.FIRE_ONCE
    misfire_grace_seconds: int = 60
    is_active: bool = True
    secret: str | None = field(default=None, repr=False)
    tags: tuple[str, ...] = ()
    alerts: AlertPolicy | None = None
    """None: the service's default alert policy applies."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PreviousSecret:
    """A signing secret a job replaced, still used beside the new one until
    `expires_at`, so receivers have time to switch."""

    secret: str = field(repr=False)
    expires_at: datetime

    def in_force(self, now: datetime) -> bool:
        return now < self.expires_at


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    id: str
    spec: JobSpec
    created_at: datetime
    updated_at: datetime
    version: int = 1
    last_tick: datetime
    """Every scheduled tick at or before this instant has been dealt with
    (fired, skipped or recorded as missed), or the schedule (re)started then."""
    last_run_at: datetime | None = None
    last_status: ExecutionStatus | None = None
    paused_reason: str | None = None
    """Why cronsvc paused the job itself (its target answered 410 Gone);
    None when a user paused it, or it is active."""
    deferred_until: datetime | None = None
    """Scheduled ticks before this instant are skipped: the target asked to
    be left alone (`Retry-After` on a 429 or 503)."""
    previous_secret: PreviousSecret | None = None
    """Set by the service when `spec.secret` changes, never by a client."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleRevision:
    """A job's schedule as it was in force from `effective_from` until the
    next revision: which ticks the job owed in that span."""

    version: int
    """The job version that brought this revision in."""
    effective_from: datetime
    cron_expression: str
    timezone: str
    is_active: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorInfo:
    type: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptRecord:
    """One HTTP attempt of an execution's webhook call."""

    attempt: int
    """1-based."""
    started_at: datetime
    duration_ms: int
    response_status: int | None = None
    error: ErrorInfo | None = None
    retry_after_ms: int | None = None
    """How long the dispatcher waited after this attempt before the next one
    (backoff, or the receiver's capped `Retry-After`); None when none followed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Execution:
    id: str
    job_id: str
    job_name: str
    trigger: Trigger
    scheduled_at: datetime
    status: ExecutionStatus
    instance_id: str
    executed_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    attempts: int = 0
    response_status: int | None = None
    response_body: str | None = None
    response_truncated: bool = False
    error: ErrorInfo | None = None
    attempt_log: tuple[AttemptRecord, ...] = ()
    """One entry per attempt, in order: at most `MAX_ATTEMPTS`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceInfo:
    """One live cronsvc process, as it announces itself."""

    id: str
    host: str
    version: str
    started_at: datetime
    last_heartbeat: datetime
    ticks_fired_last_minute: int = 0
    """As of its last heartbeat; 0 from an instance that does not tell."""
    jobs_owned: int | None = None
    """The active jobs it schedules, as of its last heartbeat; None while it
    loads them (it takes no share yet), or from an instance that does not tell."""
    loading: bool = False
    """True while it loads its jobs for the first time (for a bounded time): if
    no instance scheduled jobs when it began, the cluster is starting together
    and its share is left to it meanwhile (`Heartbeat.loading`)."""
