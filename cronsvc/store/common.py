"""What the store backends share: instants as exact Unix milliseconds, JSON
text, name-prefix bounds, the opaque page cursors, the words of the records
a claim writes, and when an update makes a schedule revision."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cronsvc.domain import Job, JobSpec, ScheduleRevision
from cronsvc.errors import InvalidCursor
from cronsvc.ids import is_valid_id

MAX_CURSOR_CHARS = 200
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)


def schedule_changed(old: JobSpec, new: JobSpec) -> bool:
    """Whether an update from `old` to `new` makes a schedule revision."""
    return (old.cron_expression, old.timezone, old.is_active) != (
        new.cron_expression,
        new.timezone,
        new.is_active,
    )


def revision_of(job: Job, effective_from: datetime) -> ScheduleRevision:
    """The job's schedule as it is, in force from `effective_from`."""
    return ScheduleRevision(
        version=job.version,
        effective_from=from_unix_ms(unix_ms(effective_from)),
        cron_expression=job.spec.cron_expression,
        timezone=job.spec.timezone,
        is_active=job.spec.is_active,
    )


def replaced_message(execution_id: str) -> str:
    """The error message of a run ended by a `replace` claim."""
    return f"concurrency policy replace: execution {execution_id} of this job started"


def check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")


def unix_ms(instant: datetime) -> int:
    """Unix milliseconds, truncated; exact (no float on the way)."""
    return (instant - EPOCH) // ONE_MS


def opt_unix_ms(instant: datetime | None) -> int | None:
    return None if instant is None else unix_ms(instant)


def from_unix_ms(millis: int) -> datetime:
    return EPOCH + timedelta(milliseconds=millis)


def opt_from_unix_ms(millis: int | None) -> datetime | None:
    return None if millis is None else from_unix_ms(millis)


def json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def prefix_upper_bound(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix` (code point
    order, which is SQLite's BINARY order on UTF-8); None if there is none."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code == 0xD800:  # surrogates cannot be stored: skip them
            code = 0xE000
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


def encode_cursor(key: list[Any]) -> str:
    raw = json_text(key).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> Any:
    if not cursor or len(cursor) > MAX_CURSOR_CHARS:
        raise InvalidCursor(cursor)
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        return json.loads(raw)
    except ValueError:  # binascii.Error, UnicodeDecodeError and JSONDecodeError among them
        raise InvalidCursor(cursor) from None


def decode_job_cursor(cursor: str) -> str:
    key = decode_cursor(cursor)
    match key:
        case ["j", str(job_id)] if is_valid_id(job_id):
            return job_id
    raise InvalidCursor(cursor)


def decode_execution_cursor(cursor: str) -> tuple[int, str]:
    key = decode_cursor(cursor)
    match key:
        case ["e", int(ms), str(execution_id)] if not isinstance(ms, bool) and is_valid_id(
            execution_id
        ):
            return ms, execution_id
    raise InvalidCursor(cursor)
