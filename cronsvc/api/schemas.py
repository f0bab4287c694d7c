"""Wire models: what clients send is validated, and the JSON they get back
written, by the models /openapi.json documents. camelCase on the wire; names
follow the Node.js service cronsvc replaces, so its clients keep working."""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import types
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, Self
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    Strict,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import SkipJsonSchema

from cronsvc.cron import CronSchedule
from cronsvc.domain import (
    HEADER_NAME,
    HEADER_VALUE_CONTROL,
    MAX_ATTEMPTS,
    RESERVED_HEADERS,
    AlertFormat,
    AlertPolicy,
    ConcurrencyPolicy,
    Execution,
    ExecutionStatus,
    HttpMethod,
    InstanceInfo,
    Job,
    JobSpec,
    JsonValue,
    MisfirePolicy,
    RetryPolicy,
    Trigger,
)
from cronsvc.dryrun import Change, Fire, FirePlan
from cronsvc.errors import FieldError, ValidationFailed
from cronsvc.instants import NoOffset, parse_rfc3339, rfc3339
from cronsvc.ledger import EntryKind, Ledger
from cronsvc.signing import whsec_secret
from cronsvc.wire_connect import http_url

MAX_BODY_BYTES = 64 * 1024
"""Request bodies are capped here (413)."""
MAX_JOB_BODY_BYTES = 64 * 1024
"""A job's `body` as the webhook will send it. Checked on its own: the webhook
encoding can be longer than the request's (`1E5` is sent as `100000.0`)."""
MAX_HEADERS = 50

OUT_OF_RANGE = "is out of range: in UTC it falls outside the years 1 to 9999"

GENERATE_SECRET = "generate"
"""Sent as a job's `secret`: the service makes one and answers it once."""


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
        "alertState",
    }
)
"""Fields a client may send back unchanged (GET, edit, PUT); they are ignored.
`version`, when sent, is a precondition: the write fails with 409 unless the
job is still at that version."""

LEGACY_ID_FIELDS = frozenset({"_id", "__v"})
"""Mongoose's document fields: a write may carry them under `api.legacy_ids`; ignored."""


class _Wire(BaseModel):
    """Booleans and numbers are strict (`Strict()`): a JSON true or number, never
    a string such as "yes" or "5" (a whole number is still taken for a float)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=False, extra="forbid", frozen=True
    )


URL_DESCRIPTION = (
    "http or https, without credentials; its host a name DNS can hold (labels of 1-63 "
    "letters, digits, '-' or '_'; 253 characters in all), an IPv4 address or a bracketed "
    "IPv6 one; its port 1-65535"
)


class RetryIn(_Wire):
    max_attempts: Annotated[int, Strict(), Field(ge=1, le=MAX_ATTEMPTS)] = 1
    backoff_seconds: Annotated[float, Strict(), Field(ge=0, le=3600)] = 1.0
    max_backoff_seconds: Annotated[float, Strict(), Field(ge=0, le=86400)] = 60.0


class AlertsIn(_Wire):
    """A job's own alert policy as a client writes it (`JobIn.alerts`)."""

    enabled: Annotated[bool, Strict()] = True
    url: Annotated[str, Field(min_length=1, max_length=2048)] | None = Field(
        default=None,
        validate_default=True,
        description=f"where alerts are sent (POST); required when enabled. {URL_DESCRIPTION}",
    )
    after: Annotated[int, Strict(), Field(ge=1, le=1000)] = Field(
        default=1, description="runs in a row ending FAILURE, MISSED or LOST before it alerts"
    )
    on_recovery: Annotated[bool, Strict()] = Field(
        default=True, description="also tell, once, when a run succeeds again after an alert"
    )
    format: AlertFormat = Field(
        default=AlertFormat.STANDARD,
        description='"standard": cronsvc\'s JSON document; "slack": `{"text": ...}`, '
        "what Slack's (and Mattermost's) incoming webhooks take",
    )
    secret: (
        Annotated[str, Field(min_length=1, max_length=512), AfterValidator(whsec_secret)] | None
    ) = Field(
        default=None,
        description="Write-only: signs the job's alerts (Standard Webhooks headers), a "
        "`whsec_` secret as the job's own `secret` is; answers show only `hasSecret`. Null: the "
        "job's own secret signs them, else `[alerts] secret`, else they go unsigned. Left out of "
        "a PUT or PATCH that keeps `alerts`, the stored one is kept.",
    )

    @model_validator(mode="before")
    @classmethod
    def _answer_sent_back(cls, data: Any) -> Any:
        """A policy as answered carries `hasSecret`: a client that GETs, edits
        and PUTs sends it back, as it does the job's read-only fields."""
        if isinstance(data, dict) and "hasSecret" in data:
            return {k: v for k, v in data.items() if k != "hasSecret"}
        return data

    @field_validator("url")
    @classmethod
    def _url_when_enabled(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            if info.data.get("enabled") is True:
                raise ValueError("is required when alerts are enabled")
            return value
        # Alerts are sent without a job's headers: a receiver that needs a
        # token takes it in the URL's path or query, as chat webhooks do.
        return http_url(value, credentials="put a token in the path or query instead")

    def to_policy(self) -> AlertPolicy:
        return AlertPolicy(**self.model_dump())


class JobIn(_Wire):
    """A job as a client writes it (POST, PUT; PATCH is merged onto the stored
    job first and then validated as a whole). The read-only fields of a job
    answer may be sent back and are ignored; so are `_id` and `__v` with
    `api.legacy_ids = true`."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    cron_expression: Annotated[str, Field(min_length=1, max_length=200)]
    timezone: Annotated[str, Field(min_length=1, max_length=64)] = "UTC"
    webhook_url: Annotated[str, Field(min_length=1, max_length=2048), AfterValidator(http_url)] = (
        Field(description=URL_DESCRIPTION)
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
        default=None,
        description="Write-only signing secret: `whsec_` + base64 of 24-64 random bytes, or "
        '"generate" to have the service make one (returned once, in the `secret` field of '
        "that answer; every other answer shows only `hasSecret`). With a secret, each "
        "request carries `webhook-signature` (Standard Webhooks). When the secret changes "
        '(a new one, "generate", or null), the old one keeps signing beside the new one '
        "(space-separated, new first) until `previousSecretExpiresAt`, "
        "`webhook.secret_rotation_grace_s` later; null therefore stops signing only after "
        "that grace. Left out of a PUT or PATCH, the stored secret is kept.",
    )
    tags: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=64)]], Field(max_length=20)
    ] = Field(default_factory=list)
    alerts: AlertsIn | None = Field(
        default=None,
        description='The job\'s own alert policy (README, "Alerts"): where to tell, after '
        "how many runs in a row that end FAILURE, MISSED or LOST, and once when it succeeds "
        "again. Null or absent: the service's default (`[alerts]` in the configuration) applies; "
        '{"enabled": false}: no alerts for this job, default or not. A PUT replaces it whole, '
        "a PATCH merges into it. `hasSecret`, as answered, may be sent back and is ignored.",
    )
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
        # Measured as the webhook sends it: text as UTF-8, anything else as compact JSON.
        text = value
        try:
            if not isinstance(text, str):
                text = json.dumps(text, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            size = len(text.encode())
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
            return whsec_secret(value)
        except ValueError as exc:
            raise ValueError(f'{exc} (or send "{GENERATE_SECRET}")') from None

    @field_validator("tags")
    @classmethod
    def _unique_tags(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("must not repeat a tag")
        return value

    def to_spec(self, *, default_timeout_s: float) -> JobSpec:
        return JobSpec(
            **self.model_dump(exclude={"retry", "alerts", "version"})
            | {
                "cron_expression": self.cron_expression.strip(),
                "timeout_seconds": self.timeout_seconds or default_timeout_s,
                "retry": RetryPolicy(**self.retry.model_dump()),
                "tags": tuple(self.tags),
                "alerts": None if self.alerts is None else self.alerts.to_policy(),
            }
        )


class PreviewIn(_Wire):
    cron_expression: Annotated[str, Field(min_length=1, max_length=200)]
    timezone: Annotated[str, Field(min_length=1, max_length=64)] = "UTC"
    count: Annotated[int, Strict(), Field(ge=1, le=100)] = 5
    after: datetime | None = Field(
        default=None,
        description="the instant to list fires after (default: now), with an offset or Z; "
        "fewer fires than `count`, or none, are listed when year 9999 ends first",
    )

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


_FIELD_ERRORS = {"extra_forbidden": "unknown field", "missing": "is required"}


def _field_error(error: Any) -> FieldError:
    loc = ".".join(str(part) for part in error["loc"]) or "body"
    message = _FIELD_ERRORS.get(error["type"]) or str(error["msg"]).removeprefix("Value error, ")
    return FieldError(loc, message)


# -- answers -------------------------------------------------------------------------

Instant = Annotated[datetime, PlainSerializer(rfc3339, return_type=str)]
"""An instant as answered (`cronsvc.instants.rfc3339`): 2026-01-01T00:00:00.000Z."""
Number = Annotated[int | float, WithJsonSchema({"type": "number"})]
"""A number as the domain holds it: a whole one stays whole (10, not 10.0)."""


def _absent_not_null(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def _absent(description: str, default: Any = None, **more: Any) -> Any:
    """A field left out of the answer when it has no value: documented without a null default."""
    return Field(
        default=default, description=description, json_schema_extra=_absent_not_null, **more
    )


class _Out(BaseModel):
    """An answer, and its schema in /openapi.json; tests validate real answers
    against these models."""

    model_config = ConfigDict(
        alias_generator=to_camel, extra="forbid", validate_by_name=True, from_attributes=True
    )

    @classmethod
    def of(cls, **fields: Any) -> Self:
        """An answer of `fields` (snake_case; nested answers as models, dicts or
        domain values of the same field names), checked in one pass of pydantic's
        core: cheaper than `model_construct`'s walk in Python. A field is written
        only when given, so one left out is absent, not null."""
        return cls.model_validate(fields)

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    @classmethod
    def wire_list(cls, answers: Iterable[Self]) -> list[Any]:
        """Answers as JSON values, in one dump rather than one per answer."""
        dumped: list[Any] = _list_of(cls).dump_python(
            list(answers), mode="json", by_alias=True, exclude_unset=True
        )
        return dumped

    @classmethod
    def json_list(cls, answers: Iterable[dict[str, Any]]) -> bytes:
        """Answers of the `fields` `of` takes, as one JSON array: the bytes
        `json.dumps` would write (compact, UTF-8), floats aside, whose exponents
        are unpadded (1e-7, not 1e-07)."""
        adapter = _list_of(cls)
        checked = adapter.validate_python(list(answers))
        return adapter.dump_json(checked, by_alias=True, exclude_unset=True)


@functools.cache
def _list_of(model: type[_Out]) -> TypeAdapter[list[Any]]:
    of_model: Any = types.GenericAlias(list, (model,))
    return TypeAdapter(of_model)


_LEGACY_ID: Any = _absent(
    "equal to `id`; only with `api.legacy_ids = true`, for clients of the Node.js service",
    alias="_id",
)


def _legacy_id(id: str, legacy_ids: bool) -> dict[str, Any]:
    return {"legacy_id": id} if legacy_ids else {}


class RetryOut(_Out):
    max_attempts: int
    backoff_seconds: Number
    max_backoff_seconds: Number


class AlertsOut(_Out):
    """A job's own alert policy as answered: its secret never, only whether
    it has one."""

    enabled: bool
    url: str | None
    after: int
    on_recovery: bool
    format: AlertFormat
    has_secret: bool = Field(description="whether the policy has a secret of its own")

    @classmethod
    def from_domain(cls, policy: AlertPolicy | None) -> Self | None:
        if policy is None:
            return None
        fields = dataclasses.asdict(policy)
        secret = fields.pop("secret")
        return cls.of(**fields, has_secret=secret is not None)


class Absent(enum.Enum):
    ABSENT = "absent"


ABSENT: Final = Absent.ABSENT
"""As an answer's optional field: left out of the answer, not null."""


class AlertStateOut(_Out):
    alerting: bool = Field(
        description="whether the job is failing as its alert policy counts it "
        "(`after` consecutive runs ended FAILURE, MISSED or LOST, and none succeeded since)"
    )
    consecutive_failures: int = Field(
        description="runs that ended FAILURE, MISSED or LOST in a row, up to the latest"
    )
    since: Instant | None = Field(
        description="when `alerting` last changed (the job began failing, or recovered); "
        "null if it never has"
    )


class JobOut(_Out):
    legacy_id: str | SkipJsonSchema[None] = _LEGACY_ID
    id: str
    name: str
    cron_expression: str
    timezone: str
    webhook_url: str
    http_method: str
    headers: dict[str, str]
    body: JsonValue | None
    timeout_seconds: Number
    retry: RetryOut
    concurrency_policy: ConcurrencyPolicy
    misfire_policy: MisfirePolicy
    misfire_grace_seconds: int
    is_active: bool
    tags: list[str]
    alerts: AlertsOut | None = Field(
        description="the job's own alert policy; null: the service's default ([alerts]) "
        "applies, if it sets a url"
    )
    has_secret: bool = Field(description="whether requests are signed with a current secret")
    previous_secret_expires_at: Instant | None = Field(
        description="until when the secret the job replaced still signs beside the current "
        "one; null when there is none (or it has expired)"
    )
    created_at: Instant
    updated_at: Instant
    next_run_at: Instant | None
    last_run_at: Instant | None
    last_status: ExecutionStatus | None
    version: int
    paused_reason: str | None = Field(
        description="Why cronsvc paused the job itself (its target answered 410 Gone), or "
        'why `cronsvc import-legacy` imported it paused ("imported paused: ...": a '
        "schedule or target cronsvc refuses); null when a person paused it or it is "
        "active. Cleared by any update."
    )
    deferred_until: Instant | None = Field(
        description="Scheduled ticks before this instant are recorded SKIPPED "
        "(error.type deferred): the target answered 429 or 503 with Retry-After. "
        "Cleared by any update."
    )
    secret: str | None = Field(
        default=None,
        description='only in the answer to the write that sent "generate": the secret made '
        "then, shown this once",
    )
    alert_state: AlertStateOut | None = Field(
        default=None,
        description="the job's failure alerts: null when none apply to it (no `alerts` "
        "of its own and no `[alerts] url`, or its alerts are turned off); left out of "
        "a dry run's and a delete's answer",
    )

    @classmethod
    def from_domain(
        cls,
        job: Job,
        next_run_at: datetime | None,
        *,
        now: datetime,
        secret: str | None = None,
        legacy_ids: bool = False,
        alert_state: AlertStateOut | Absent | None = ABSENT,
    ) -> Self:
        """`secret` is given only to the answer of the write that generated it."""
        previous = job.previous_secret
        return cls.of(
            **_legacy_id(job.id, legacy_ids),
            id=job.id,
            **_spec_fields(job.spec),
            has_secret=job.spec.secret is not None,
            previous_secret_expires_at=(
                previous.expires_at if previous and previous.in_force(now) else None
            ),
            created_at=job.created_at,
            updated_at=job.updated_at,
            next_run_at=next_run_at,
            last_run_at=job.last_run_at,
            last_status=job.last_status,
            version=job.version,
            paused_reason=job.paused_reason,
            deferred_until=job.deferred_until,
            **({} if secret is None else {"secret": secret}),
            **({} if alert_state is ABSENT else {"alert_state": alert_state}),
        )


def _spec_fields(spec: JobSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "cron_expression": spec.cron_expression,
        "timezone": spec.timezone,
        "webhook_url": spec.webhook_url,
        "http_method": spec.http_method.value,
        "headers": dict(spec.headers),
        "body": spec.body,
        "timeout_seconds": spec.timeout_seconds,
        "retry": RetryOut.model_validate(spec.retry),
        "concurrency_policy": spec.concurrency_policy,
        "misfire_policy": spec.misfire_policy,
        "misfire_grace_seconds": spec.misfire_grace_seconds,
        "is_active": spec.is_active,
        "tags": list(spec.tags),
        "alerts": AlertsOut.from_domain(spec.alerts),
    }


def spec_to_wire(spec: JobSpec) -> dict[str, Any]:
    """The writable fields of a job as a client would send them, the write-only
    secret aside: built with `model_construct`, as they alone fail an answer's check."""
    return JobOut.model_construct(**_spec_fields(spec)).wire()


class ErrorOut(_Out):
    type: str
    message: str


class AttemptOut(_Out):
    """One HTTP attempt of the webhook call."""

    attempt: int = Field(ge=1, description="1-based")
    started_at: Instant
    duration_ms: int
    response_status: int | None
    error: ErrorOut | None
    retry_after_ms: int | None = Field(
        description="the wait after this attempt before the next (backoff, or the receiver's "
        "Retry-After capped at retry.maxBackoffSeconds); null when none followed"
    )


class ExecutionOut(_Out):
    legacy_id: str | SkipJsonSchema[None] = _LEGACY_ID
    id: str
    cron_job_id: str
    job_name: str
    trigger: Trigger
    scheduled_at: Instant
    executed_at: Instant | None
    finished_at: Instant | None
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

    @classmethod
    def from_domain(cls, execution: Execution, *, legacy_ids: bool = False) -> Self:
        return cls.of(**cls.fields(execution, legacy_ids=legacy_ids))

    @staticmethod
    def fields(execution: Execution, *, legacy_ids: bool = False) -> dict[str, Any]:
        """The fields `of` takes for the record (what `json_list` takes)."""
        e = execution
        return dict(
            **_legacy_id(e.id, legacy_ids),
            id=e.id,
            cron_job_id=e.job_id,
            job_name=e.job_name,
            trigger=e.trigger,
            scheduled_at=e.scheduled_at,
            executed_at=e.executed_at,
            finished_at=e.finished_at,
            duration_ms=e.duration_ms,
            status=e.status,
            attempts=e.attempts,
            response_status=e.response_status,
            response_body=e.response_body,
            response_truncated=e.response_truncated,
            error=e.error,
            attempt_log=e.attempt_log,
            instance_id=e.instance_id,
        )


class TriggeredOut(ExecutionOut):
    """The execution a manual trigger started; `executionId` repeats its `id`."""

    execution_id: str

    @classmethod
    def started(cls, execution: Execution, *, legacy_ids: bool) -> Self:
        return cls.of(**cls.fields(execution, legacy_ids=legacy_ids), execution_id=execution.id)

    @model_serializer(mode="wrap")
    def _execution_id_first(self, write: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """`executionId` leads, as it always has, though declared last."""
        answer: dict[str, Any] = write(self)
        return {"executionId": answer.pop("executionId"), **answer}


class InstantOut(_Out):
    utc: Instant
    local: str


class ScheduleOut(_Out):
    cron_expression: str
    timezone: str
    after: Instant
    instants: list[InstantOut]

    @classmethod
    def listing(cls, schedule: CronSchedule, after: datetime, count: int, **more: Any) -> Self:
        """The next `count` fires after `after` (fewer when the calendar ends first)."""
        zone = ZoneInfo(schedule.timezone)
        return cls.of(
            cron_expression=schedule.expression,
            timezone=schedule.timezone,
            after=after,
            instants=[
                InstantOut.of(utc=t, local=t.astimezone(zone).isoformat())
                for t in schedule.next_n(after, count)
            ],
            **more,
        )


class NextRunsOut(ScheduleOut):
    cron_job_id: str
    is_active: bool


class DryRunJobOut(JobOut):
    id: str = _absent(
        "absent in the dry run of a create: an id is made only when the job is", default=""
    )


class ChangeOut(_Out):
    field: str = Field(description="the field's name, as in a job")
    before: JsonValue | None = _absent(
        "its value now; absent for a create and for `secret` and `alerts.secret`"
    )
    after: JsonValue | None = _absent(
        "its value after the write; absent for `secret` and `alerts.secret`"
    )
    redacted: bool | None = _absent(
        "true for `secret` and `alerts.secret`: that it changes is shown, never its values"
    )

    @classmethod
    def from_change(cls, change: Change) -> Self:
        if change.redacted:
            return cls.of(field=change.field, redacted=True)
        before = {"before": change.before} if change.has_before else {}
        return cls.of(field=change.field, **before, after=change.after)


class FireOut(_Out):
    utc: Instant
    local: str = Field(description="on the clocks of the job's time zone, with its offset")
    dst_change: bool = Field(
        description="the zone's offset differs from the previous fire's (for the first, "
        "from now): a daylight-saving change falls before this fire"
    )

    @classmethod
    def from_fire(cls, fire: Fire) -> Self:
        return cls.of(utc=fire.utc, local=fire.local.isoformat(), dst_change=fire.dst_change)


class MoveOut(_Out):
    before: Instant
    after: Instant
    by_seconds: int = Field(description="how far it moves; negative for earlier")


class FiresOut(_Out):
    before: list[FireOut] = Field(description="the next fires as the job is (none for a create)")
    after: list[FireOut] = Field(description="the next fires after the write")
    moved: list[MoveOut] = Field(
        description="fires of `before` replaced by one of `after`: between two fires both "
        "listings keep, the ones only `before` has are paired in order with the ones only "
        "`after` has"
    )
    appeared: list[Instant] = Field(description="fires only `after` has, left unpaired")
    disappeared: list[Instant] = Field(description="fires only `before` has, left unpaired")

    @classmethod
    def from_plan(cls, plan: FirePlan) -> Self:
        return cls.of(
            before=[FireOut.from_fire(f) for f in plan.before],
            after=[FireOut.from_fire(f) for f in plan.after],
            moved=[
                MoveOut.of(before=m.before, after=m.after, by_seconds=int(m.by.total_seconds()))
                for m in plan.comparison.moved
            ],
            appeared=plan.comparison.appeared,
            disappeared=plan.comparison.disappeared,
        )


class DryRunOut(_Out):
    """What a write would do, written nowhere: `?dryRun=true` on a create,
    replace or patch."""

    dry_run: Literal[True] = True
    job: DryRunJobOut = Field(description="the job as the write would leave it")
    changes: list[ChangeOut] = Field(description="the fields the write changes")
    fires: FiresOut


class LedgerEntryOut(_Out):
    scheduled_at: Instant
    kind: EntryKind = Field(
        description="tick: an owed tick and its record; gap: an owed tick with no "
        "record; manual: a manual run; unscheduled: a record at an instant no "
        "schedule in force owed (one since changed, say); unknown: a record from "
        "before the kept schedule history"
    )
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
    since: Instant
    until: Instant
    complete: bool = Field(
        description="false when the range reaches back before the kept schedule history"
    )
    known_from: Instant | None = Field(
        description="when the schedule history was trimmed: the instant from which "
        "owed ticks are known; null when the whole history is kept"
    )
    entries: list[LedgerEntryOut]
    summary: LedgerSummaryOut

    @classmethod
    def from_domain(cls, job_id: str, ledger: Ledger) -> Self:
        return cls.of(
            cron_job_id=job_id,
            since=ledger.since,
            until=ledger.until,
            complete=ledger.complete,
            known_from=ledger.known_from,
            entries=[
                LedgerEntryOut.of(
                    scheduled_at=entry.scheduled_at,
                    kind=entry.kind,
                    status=entry.execution.status if entry.execution else None,
                    execution_id=entry.execution.id if entry.execution else None,
                    trigger=entry.execution.trigger if entry.execution else None,
                )
                for entry in ledger.entries
            ],
            summary=ledger.summary,
        )


NEEDS_A_TOKEN = "only with a valid token, or when the server has no tokens"


def _token_only(description: str) -> Any:
    return _absent(f"{description}; {NEEDS_A_TOKEN}")


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
    degraded: list[Literal["coordinator"]] | SkipJsonSchema[None] = _absent(
        "present while degraded: the parts not answering (firing goes on, fenced by the store)"
    )
    instance_id: str | SkipJsonSchema[None] = _token_only("the instance that answered")
    version: str | SkipJsonSchema[None] = _token_only("its cronsvc version")
    started_at: Instant | SkipJsonSchema[None] = _token_only("when it started")


class InstanceOut(_Out):
    id: str
    host: str
    version: str
    started_at: Instant
    last_heartbeat: Instant
    ticks_fired_last_minute: int = Field(
        description="ticks this instance fired in the minute before its last heartbeat"
    )
    jobs_owned: int | None = Field(
        description="the active jobs this instance owns and schedules, as of its last "
        "heartbeat; null while it loads them (it takes no share yet, see `loading`), "
        "once it is stopping (its jobs move to the others), or from an earlier version"
    )
    loading: bool = Field(
        description="true while it loads its jobs for the first time; in a cluster "
        "starting together, its share waits for it meanwhile (10 minutes at most)"
    )
    is_leader: bool


class ClusterOut(_Out):
    leader: str | None = Field(description="the instance holding the leader lease, if any")
    instances: list[InstanceOut] = Field(description="the live instances, by id")

    @classmethod
    def from_domain(cls, leader: str | None, instances: Iterable[InstanceInfo]) -> Self:
        return cls.of(
            leader=leader,
            instances=[
                InstanceOut.of(**dataclasses.asdict(i), is_leader=i.id == leader)
                for i in sorted(instances, key=lambda i: i.id)
            ],
        )


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
