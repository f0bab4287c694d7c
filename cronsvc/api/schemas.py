"""Wire models: validation of what clients send, and the JSON they get back.

camelCase on the wire, snake_case in Python. Field names follow the Node.js
service cronsvc replaces (`name`, `cronExpression`, `webhookUrl`, `isActive`,
`cronJobId`, ...), so its clients keep working.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator
from pydantic.alias_generators import to_camel
from yarl import URL

from cronsvc.domain import (
    HEADER_NAME,
    HEADER_VALUE_CONTROL,
    MAX_ATTEMPTS,
    RESERVED_HEADERS,
    AttemptRecord,
    ConcurrencyPolicy,
    ErrorInfo,
    Execution,
    HttpMethod,
    Job,
    JobSpec,
    JsonValue,
    MisfirePolicy,
    RetryPolicy,
)
from cronsvc.errors import FieldError, InvalidSecret, ValidationFailed
from cronsvc.instants import NoOffset, parse_rfc3339, rfc3339
from cronsvc.ledger import Ledger
from cronsvc.signing import parse_secret
from cronsvc.wire import InvalidTarget, parse_target

MAX_BODY_BYTES = 64 * 1024
"""Request bodies are capped here (413)."""
MAX_JOB_BODY_BYTES = 64 * 1024
"""A job's `body` as the webhook will send it. Checked on its own: the webhook
encoding can be longer than the request's (`1E5` is sent as `100000.0`)."""
MAX_HEADERS = 50

OUT_OF_RANGE = "is out of range: in UTC it falls outside the years 1 to 9999"
"""What an instant whose offset carries it past either end of the calendar gets."""

GENERATE_SECRET = "generate"
"""Sent as a job's `secret`: the service makes one and answers it once."""

SECRET_DESCRIPTION = (
    "Write-only signing secret: `whsec_` + base64 of 24-64 random bytes, or "
    '"generate" to have the service make one (returned once, in the `secret` field of '
    "that answer; every other answer shows only `hasSecret`). With a secret, each "
    "request carries `webhook-signature` (Standard Webhooks). When the secret changes "
    '(a new one, "generate", or null), the old one keeps signing beside the new one '
    "(space-separated, new first) until `previousSecretExpiresAt`, "
    "`webhook.secret_rotation_grace_s` later; null therefore stops signing only after "
    "that grace. Left out of a PUT or PATCH, the stored secret is kept."
)

READ_ONLY_FIELDS = frozenset(
    {
        "id",
        "createdAt",
        "updatedAt",
        "nextRunAt",
        "lastRunAt",
        "lastStatus",
        "hasSecret",
        "pausedReason",
        "deferredUntil",
        "previousSecretExpiresAt",
    }
)
"""Fields a client may send back unchanged (GET, edit, PUT); they are ignored.
`version`, when sent, is a precondition: the write fails with 409 unless the
job is still at that version."""

LEGACY_ID_FIELDS = frozenset({"_id", "__v"})
"""The Mongoose document fields a write may carry, and that are ignored,
under `api.legacy_ids`."""


def with_legacy_id(wire: dict[str, Any], legacy_ids: bool) -> dict[str, Any]:
    """A job or execution log as answered, with `_id` = `id` under `api.legacy_ids`."""
    return {"_id": wire["id"], **wire} if legacy_ids else wire


class _Wire(BaseModel):
    """Booleans and numbers are strict (`Strict()`): a JSON true or number, never
    a string such as "yes" or "5" (a whole number is still taken for a float)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=False, extra="forbid", frozen=True
    )


class RetryIn(_Wire):
    max_attempts: Annotated[int, Strict(), Field(ge=1, le=MAX_ATTEMPTS)] = 1
    backoff_seconds: Annotated[float, Strict(), Field(ge=0, le=3600)] = 1.0
    max_backoff_seconds: Annotated[float, Strict(), Field(ge=0, le=86400)] = 60.0


class JobIn(_Wire):
    """A job as a client writes it (POST, PUT; PATCH is merged onto the stored
    job first and then validated as a whole). The read-only fields of a job
    answer may be sent back and are ignored; so are `_id` and `__v` with
    `api.legacy_ids = true`."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    cron_expression: Annotated[str, Field(min_length=1, max_length=200)]
    timezone: Annotated[str, Field(min_length=1, max_length=64)] = "UTC"
    webhook_url: Annotated[str, Field(min_length=1, max_length=2048)] = Field(
        description="http or https, without credentials; its host a name DNS can hold "
        "(labels of 1-63 letters, digits, '-' or '_'; 253 characters in all), an IPv4 "
        "address or a bracketed IPv6 one; its port 1-65535"
    )
    http_method: HttpMethod = HttpMethod.POST
    headers: dict[str, Annotated[str, Field(max_length=8192)]] = Field(
        default_factory=dict,
        description="sent with every call; values without control characters other than "
        "tab; not the headers cronsvc sets itself: "
        + ", ".join(sorted(RESERVED_HEADERS))
        + " (any case)",
        json_schema_extra={"maxProperties": MAX_HEADERS},
    )
    body: JsonValue | None = Field(
        default=None,
        description=f"text, or any JSON; at most {MAX_JOB_BODY_BYTES} bytes as the webhook "
        "sends it (UTF-8 text, or compact JSON)",
    )
    timeout_seconds: Annotated[float, Strict(), Field(gt=0, le=300)] | None = None
    retry: RetryIn = Field(default_factory=RetryIn)
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW
    misfire_policy: MisfirePolicy = MisfirePolicy.FIRE_ONCE
    misfire_grace_seconds: Annotated[int, Strict(), Field(ge=0, le=86400)] = 60
    is_active: Annotated[bool, Strict()] = True
    secret: Annotated[str, Field(min_length=1, max_length=512)] | None = Field(
        default=None, description=SECRET_DESCRIPTION
    )
    tags: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=64)]], Field(max_length=20)
    ] = Field(default_factory=list)
    version: Annotated[int, Strict(), Field(ge=1)] | None = None

    @field_validator("name")
    @classmethod
    def _name_printable(cls, value: str) -> str:
        if value != value.strip():
            raise ValueError("must not start or end with whitespace")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("must not contain control characters")
        return value

    @field_validator("http_method", mode="before")
    @classmethod
    def _method_upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        try:
            url = URL(value)
        except (ValueError, TypeError):
            raise ValueError("is not a valid URL") from None
        if url.scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        if not url.host:
            raise ValueError("must name a host")
        if url.user is not None or url.password is not None:
            raise ValueError("must not carry credentials; use headers instead")
        try:
            parse_target(value)  # as the dispatcher will: its host and port
        except InvalidTarget as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("headers")
    @classmethod
    def _valid_headers(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_HEADERS:
            raise ValueError(f"at most {MAX_HEADERS} headers")
        for name, text in value.items():
            if not HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"{name!r} is set by cronsvc itself and cannot be given")
            if HEADER_VALUE_CONTROL.search(text):
                raise ValueError(
                    f"the value of {name!r} must not contain line breaks or other control "
                    "characters (a tab is allowed)"
                )
        return value

    @field_validator("body")
    @classmethod
    def _body_fits(cls, value: JsonValue | None) -> JsonValue | None:
        if value is None:
            return value
        try:
            size = len(webhook_body(value))
        except ValueError:  # NaN, Infinity, a lone surrogate: no webhook could carry it
            raise ValueError(
                "must be text or JSON without NaN, Infinity or lone surrogates"
            ) from None
        if size > MAX_JOB_BODY_BYTES:
            raise ValueError(f"must be at most {MAX_JOB_BODY_BYTES} bytes encoded, not {size}")
        return value

    @field_validator("secret")
    @classmethod
    def _whsec_secret(cls, value: str | None) -> str | None:
        if value is None or value == GENERATE_SECRET:
            return value
        try:
            parse_secret(value)
        except InvalidSecret as exc:
            raise ValueError(f'{exc} (or send "{GENERATE_SECRET}")') from None
        return value

    @field_validator("tags")
    @classmethod
    def _unique_tags(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("must not repeat a tag")
        return value

    def to_spec(self, *, default_timeout_s: float) -> JobSpec:
        return JobSpec(
            name=self.name,
            cron_expression=self.cron_expression.strip(),
            timezone=self.timezone,
            webhook_url=self.webhook_url,
            http_method=self.http_method,
            headers=dict(self.headers),
            body=self.body,
            timeout_seconds=self.timeout_seconds or default_timeout_s,
            retry=RetryPolicy(
                max_attempts=self.retry.max_attempts,
                backoff_seconds=self.retry.backoff_seconds,
                max_backoff_seconds=self.retry.max_backoff_seconds,
            ),
            concurrency_policy=self.concurrency_policy,
            misfire_policy=self.misfire_policy,
            misfire_grace_seconds=self.misfire_grace_seconds,
            is_active=self.is_active,
            secret=self.secret,
            tags=tuple(self.tags),
        )


def webhook_body(body: JsonValue) -> bytes:
    """A job's body as `cronsvc.dispatch` sends it: text as UTF-8, anything
    else as compact JSON. Raises ValueError for what cannot be sent."""
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


PREVIEW_AFTER = (
    "the instant to list fires after (default: now), with an offset or Z; fewer fires "
    "than `count`, or none, are listed when year 9999 ends first"
)


class PreviewIn(_Wire):
    cron_expression: Annotated[str, Field(min_length=1, max_length=200)]
    timezone: Annotated[str, Field(min_length=1, max_length=64)] = "UTC"
    count: Annotated[int, Strict(), Field(ge=1, le=100)] = 5
    after: datetime | None = Field(default=None, description=PREVIEW_AFTER)

    @field_validator("after")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return value
        if value.tzinfo is None:
            raise ValueError("must carry a UTC offset or Z")
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError(OUT_OF_RANGE) from None


def validate(model: type[_Wire], data: Any) -> Any:
    """Validate `data` into `model`, raising `ValidationFailed` field by field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed([_field_error(e) for e in exc.errors()]) from None


def _field_error(error: Any) -> FieldError:
    loc = ".".join(str(part) for part in error["loc"]) or "body"
    if error["type"] == "extra_forbidden":
        return FieldError(loc, "unknown field")
    if error["type"] == "missing":
        return FieldError(loc, "is required")
    message = str(error["msg"])
    return FieldError(loc, message.removeprefix("Value error, "))


def spec_to_wire(spec: JobSpec) -> dict[str, Any]:
    """The writable fields of a job, as a client would send them (secret kept
    out: it is write-only)."""
    return {
        "name": spec.name,
        "cronExpression": spec.cron_expression,
        "timezone": spec.timezone,
        "webhookUrl": spec.webhook_url,
        "httpMethod": spec.http_method.value,
        "headers": dict(spec.headers),
        "body": spec.body,
        "timeoutSeconds": spec.timeout_seconds,
        "retry": {
            "maxAttempts": spec.retry.max_attempts,
            "backoffSeconds": spec.retry.backoff_seconds,
            "maxBackoffSeconds": spec.retry.max_backoff_seconds,
        },
        "concurrencyPolicy": spec.concurrency_policy.value,
        "misfirePolicy": spec.misfire_policy.value,
        "misfireGraceSeconds": spec.misfire_grace_seconds,
        "isActive": spec.is_active,
        "tags": list(spec.tags),
    }


def job_to_wire(
    job: Job, next_run_at: datetime | None, *, now: datetime, secret: str | None = None
) -> dict[str, Any]:
    """The job as answered. `secret` is given only to the answer of the write
    that generated it; `previousSecretExpiresAt` is null once it has passed."""
    previous = job.previous_secret
    wire = {
        "id": job.id,
        **spec_to_wire(job.spec),
        "hasSecret": job.spec.secret is not None,
        "previousSecretExpiresAt": (
            instant(previous.expires_at) if previous and previous.in_force(now) else None
        ),
        "createdAt": instant(job.created_at),
        "updatedAt": instant(job.updated_at),
        "nextRunAt": instant(next_run_at),
        "lastRunAt": instant(job.last_run_at),
        "lastStatus": job.last_status.value if job.last_status else None,
        "version": job.version,
        "pausedReason": job.paused_reason,
        "deferredUntil": instant(job.deferred_until),
    }
    if secret is not None:
        wire["secret"] = secret
    return wire


def execution_to_wire(execution: Execution) -> dict[str, Any]:
    return {
        "id": execution.id,
        "cronJobId": execution.job_id,
        "jobName": execution.job_name,
        "trigger": execution.trigger.value,
        "scheduledAt": instant(execution.scheduled_at),
        "executedAt": instant(execution.executed_at),
        "finishedAt": instant(execution.finished_at),
        "durationMs": execution.duration_ms,
        "status": execution.status.value,
        "attempts": execution.attempts,
        "responseStatus": execution.response_status,
        "responseBody": execution.response_body,
        "responseTruncated": execution.response_truncated,
        "error": _error(execution.error),
        "attemptLog": [_attempt(a) for a in execution.attempt_log],
        "instanceId": execution.instance_id,
    }


def _attempt(attempt: AttemptRecord) -> dict[str, Any]:
    return {
        "attempt": attempt.attempt,
        "startedAt": instant(attempt.started_at),
        "durationMs": attempt.duration_ms,
        "responseStatus": attempt.response_status,
        "error": _error(attempt.error),
        "retryAfterMs": attempt.retry_after_ms,
    }


def ledger_to_wire(job_id: str, ledger: Ledger) -> dict[str, Any]:
    summary = ledger.summary
    return {
        "cronJobId": job_id,
        "since": instant(ledger.since),
        "until": instant(ledger.until),
        "complete": ledger.complete,
        "knownFrom": instant(ledger.known_from),
        "entries": [
            {
                "scheduledAt": instant(entry.scheduled_at),
                "kind": entry.kind.value,
                "status": entry.execution.status.value if entry.execution else None,
                "executionId": entry.execution.id if entry.execution else None,
                "trigger": entry.execution.trigger.value if entry.execution else None,
            }
            for entry in ledger.entries
        ],
        "summary": {
            "ticks": summary.ticks,
            "byStatus": {status.value: count for status, count in summary.by_status.items()},
            "gaps": summary.gaps,
            "manual": summary.manual,
            "unscheduled": summary.unscheduled,
            "unknown": summary.unknown,
        },
    }


def _error(error: ErrorInfo | None) -> dict[str, str] | None:
    return None if error is None else {"type": error.type, "message": error.message}


def instant(value: datetime | None) -> str | None:
    """`cronsvc.instants.rfc3339`, null for none: 2026-01-01T00:00:00.000Z."""
    return None if value is None else rfc3339(value)


def parse_instant(field: str, text: str) -> datetime:
    """An RFC 3339 instant from a query string, in UTC; naive times, and
    times whose offset carries them out of the years 1 to 9999, are refused."""
    try:
        # A '+' in a query string arrives as a space.
        return parse_rfc3339(text.replace(" ", "+"))
    except NoOffset:
        raise ValidationFailed([FieldError(field, "must carry a UTC offset or Z")]) from None
    except ValueError:
        raise ValidationFailed(
            [FieldError(field, "must be an RFC 3339 instant, e.g. 2026-01-01T00:00:00Z")]
        ) from None
    except OverflowError:
        raise ValidationFailed([FieldError(field, OUT_OF_RANGE)]) from None
