"""One error root; each subclass also inherits the builtin it resembles.

The API maps these to RFC 9457 problem documents in one middleware
(`cronsvc.api.problems`); anything else is an unexpected 500.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class CronSvcError(Exception):
    """Root of every error cronsvc raises on purpose."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid input field: `field` is its wire (camelCase) path."""

    field: str
    message: str


class ValidationFailed(CronSvcError, ValueError):
    """Input rejected field by field."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in self.errors))


class InvalidCronExpression(CronSvcError, ValueError):
    """A cron expression that cannot be used; the message says why."""


class InvalidTimezone(CronSvcError, ValueError):
    """Not an IANA time zone name."""


class InvalidSecret(CronSvcError, ValueError):
    """A webhook signing secret that is not `whsec_` + base64 of 24-64 bytes.
    The message says what is wrong and never quotes the secret."""


class JobNotFound(CronSvcError, LookupError):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job with id {job_id!r}")


class ExecutionNotFound(CronSvcError, LookupError):
    def __init__(self, execution_id: str) -> None:
        self.execution_id = execution_id
        super().__init__(f"no execution log with id {execution_id!r}")


class DuplicateJobName(CronSvcError, ValueError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"a job named {name!r} already exists")


class VersionConflict(CronSvcError, ValueError):
    def __init__(self, job_id: str, expected: int, actual: int) -> None:
        self.job_id = job_id
        self.expected = expected
        self.actual = actual
        super().__init__(f"job {job_id!r} is at version {actual}, not {expected}")


class JobLimitReached(CronSvcError, RuntimeError):
    """Creating one more job would pass `limits.max_jobs`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"the service holds its limit of {limit} jobs; delete one first")


class Unauthorized(CronSvcError, PermissionError):
    """A request without a valid API token. Never carries the token itself."""

    def __init__(self, *, presented: bool) -> None:
        self.presented = presented
        super().__init__(
            "the bearer token is not valid"
            if presented
            else "send an API token: Authorization: Bearer <token>"
        )


class RateLimited(CronSvcError, RuntimeError):
    """A client past its request rate; it may retry after `retry_after_s`."""

    def __init__(self, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"too many requests; retry after {retry_after_s} s")


class InvalidCursor(CronSvcError, ValueError):
    def __init__(self, cursor: str) -> None:
        super().__init__(f"cursor {cursor[:40]!r} is not one this service issued")


class TargetNotAllowed(CronSvcError, ValueError):
    """A webhook target whose address the SSRF guard refuses.

    Names the host and the address only: never the URL, which may carry
    credentials or secrets in its query. `remedy` ends the sentence with what
    would allow the target ("unless ..."), when some setting would."""

    def __init__(self, host: str, address: str, reason: str, remedy: str = "") -> None:
        self.host = host
        self.address = address
        self.reason = reason
        shown = host if host == address else f"{host} ({address})"
        ending = f" {remedy}" if remedy else ""
        super().__init__(f"{shown} is {reason}: not an allowed webhook target{ending}")


class TooManyTicks(CronSvcError, ValueError):
    """A range that holds more ticks than one answer may list."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"the range holds more than {limit} ticks; narrow it")


class CalendarEnds(CronSvcError, LookupError):
    """No fire of a schedule falls between an instant and the end of year
    9999, the last a date can hold (croniter stops short of it by as much as
    it looks ahead: up to a year for a yearly schedule)."""


class BeforeCalendar(CronSvcError, ValueError):
    """An instant whose wall-clock time in a schedule's zone falls before
    year 1: the fires after it cannot be computed."""


class StoreUnavailable(CronSvcError, ConnectionError):
    """The store could not be reached or answered with an error; transient."""


class CoordinatorUnavailable(CronSvcError, ConnectionError):
    """The coordinator could not be reached or is not serving; transient."""


class InvalidLegacySource(CronSvcError, ValueError):
    """The old service's database is not named well enough to be read (a bad
    URL, no database): a usage error."""


class LegacySourceUnreadable(CronSvcError, ConnectionError):
    """The old service's database could not be read. The message never
    quotes the URL, which may carry a password."""


class ConfigError(CronSvcError, ValueError):
    """A configuration file or value that cannot be used; names the key."""


class CannotListen(CronSvcError, OSError):
    """The API's address cannot be listened on (in use, not this host's, not
    permitted). The message names the address and the setting to change."""


class StartupRefused(CronSvcError, RuntimeError):
    """Start-up stopped on purpose (another process holds the lock, and so on)."""
