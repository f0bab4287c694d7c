"""What the store backends share, so that both store and decide alike: the
stored forms (Unix milliseconds, JSON documents, cursors) and the tick claim
decision."""

from __future__ import annotations

import base64
import functools
import json
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as _replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, NamedTuple

from cronsvc.alerts import AlertState
from cronsvc.domain import (
    AlertFormat,
    AlertPolicy,
    AttemptRecord,
    ConcurrencyPolicy,
    ErrorInfo,
    Execution,
    ExecutionStatus,
    Job,
    RetryPolicy,
    Trigger,
)
from cronsvc.errors import DuplicateJobName, InvalidCursor
from cronsvc.ids import is_valid_id, new_id
from cronsvc.instants import rfc3339
from cronsvc.store import ClaimOutcome, ClaimResult, TickClaim

MAX_CURSOR_CHARS = 200
TICK_SLOT = "tick"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)


def check_importable(executions: Iterable[Execution]) -> None:
    for execution in executions:
        if not execution.status.is_final:
            raise ValueError(f"execution {execution.id!r} is not final: {execution.status}")
        if not is_valid_id(execution.id) or not is_valid_id(execution.job_id):
            raise ValueError(f"execution {execution.id!r} has an id that is not well formed")


def missed_tick_record(
    job: Job, tick: datetime, *, instance_id: str, now: datetime, reason: str
) -> Execution:
    return Execution(
        id=new_id(),
        job_id=job.id,
        job_name=job.spec.name,
        trigger=Trigger.SCHEDULE,
        scheduled_at=tick,
        status=ExecutionStatus.MISSED,
        instance_id=instance_id,
        finished_at=now,
        error=ErrorInfo(type="missed", message=reason),
    )


def tick_slot(execution: Execution) -> str:
    return execution.id if execution.trigger is Trigger.MANUAL else TICK_SLOT


def replaced_message(execution_id: str) -> str:
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


def cached_instant(cache: dict[int, datetime], millis: int) -> datetime:
    """`from_unix_ms`, made once per distinct value among many read together."""
    instant = cache.get(millis)
    if instant is None:
        instant = cache[millis] = from_unix_ms(millis)
    return instant


def opt_from_unix_ms(millis: int | None) -> datetime | None:
    return None if millis is None else from_unix_ms(millis)


def json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def attempt_documents(attempts: Iterable[AttemptRecord]) -> list[dict[str, Any]]:
    """An attempt log as stored: one document per attempt, instants in Unix ms."""
    return [
        {
            "attempt": a.attempt,
            "started_at": unix_ms(a.started_at),
            "duration_ms": a.duration_ms,
            "response_status": a.response_status,
            "error": error_document(a.error),
            "retry_after_ms": a.retry_after_ms,
        }
        for a in attempts
    ]


def error_document(error: ErrorInfo | None) -> dict[str, str] | None:
    return None if error is None else {"type": error.type, "message": error.message}


def error_from_document(document: Mapping[str, str] | None) -> ErrorInfo | None:
    if document is None:
        return None
    return ErrorInfo(type=document["type"], message=document["message"])


def attempts_from_documents(
    documents: Iterable[Mapping[str, Any]] | None,
) -> tuple[AttemptRecord, ...]:
    """None (a record written before attempt logs were kept) is an empty log."""
    return tuple(
        AttemptRecord(
            attempt=int(d["attempt"]),
            started_at=from_unix_ms(int(d["started_at"])),
            duration_ms=int(d["duration_ms"]),
            response_status=d.get("response_status"),
            error=error_from_document(d.get("error")),
            retry_after_ms=d.get("retry_after_ms"),
        )
        for d in documents or ()
    )


def alerts_document(policy: AlertPolicy | None) -> dict[str, Any] | None:
    """None: the job has none, the service's default applies."""
    if policy is None:
        return None
    return {
        "enabled": bool(policy.enabled),
        "url": policy.url,
        "after": int(policy.after),
        "on_recovery": bool(policy.on_recovery),
        "format": policy.format.value,
        "secret": policy.secret,
    }


def alerts_from_document(document: Mapping[str, Any] | None) -> AlertPolicy | None:
    if document is None:
        return None
    # Scalars are converted: nx-27017 reads a bool written by `$set` back as 0 or 1.
    return AlertPolicy(
        enabled=bool(document["enabled"]),
        url=document.get("url"),
        after=int(document["after"]),
        on_recovery=bool(document["on_recovery"]),
        format=AlertFormat(document["format"]),
        secret=document.get("secret"),
    )


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


_STATUSES = {status.value: status for status in ExecutionStatus}


def state_document(state: AlertState) -> dict[str, Any]:
    """As both backends store it; each keeps the version beside it."""
    return {
        "alerting": state.alerting,
        "streak": state.streak,
        "changed_at": opt_unix_ms(state.changed_at),
        "last_status": None if state.last_status is None else state.last_status.value,
        "last_error": error_document(state.last_error),
        "last_at": opt_unix_ms(state.last_at),
        "last_finished_at": opt_unix_ms(state.last_finished_at),
        "last_execution_id": state.last_execution_id,
        "unrecorded": state.unrecorded,
        "applied": list(state.applied),
        "previous": None
        if state.previous is None
        else {**state_document(state.previous), "version": state.previous.version},
    }


def state_from_document(document: dict[str, Any], version: int) -> AlertState:
    status = document.get("last_status")
    previous = document.get("previous")
    return AlertState(
        alerting=bool(document.get("alerting")),
        streak=int(document.get("streak") or 0),
        changed_at=opt_from_unix_ms(document.get("changed_at")),
        last_status=None if status is None else _STATUSES.get(status),
        last_error=error_from_document(document.get("last_error")),
        last_at=opt_from_unix_ms(document.get("last_at")),
        last_finished_at=opt_from_unix_ms(document.get("last_finished_at")),
        last_execution_id=document.get("last_execution_id"),
        unrecorded=bool(document.get("unrecorded")),
        version=version,
        applied=tuple(document.get("applied") or ()),
        previous=None if previous is None else state_from_document(previous, previous["version"]),
    )


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
    match decode_cursor(cursor):
        case ["j", str(job_id)] if is_valid_id(job_id):
            return job_id
    raise InvalidCursor(cursor)


def decode_execution_cursor(cursor: str) -> tuple[int, str]:
    match decode_cursor(cursor):
        case ["e", int(ms), str(id_)] if not isinstance(ms, bool) and is_valid_id(id_):
            return ms, id_
    raise InvalidCursor(cursor)


# -- The tick claim decision ---------------------------------------------------
# Each backend reads what a batch depends on (`ClaimJob`s, then `StoredClaims`),
# calls `check_claims` and `decide_claims`, and writes what they decided. Per
# job and per claim values are named tuples: a batch makes thousands of them,
# and a tuple is made several times faster than a dataclass.

STALE = ClaimResult(outcome=ClaimOutcome.STALE)
DUPLICATE = ClaimResult(outcome=ClaimOutcome.DUPLICATE)
WATCHED_POLICIES = frozenset({ConcurrencyPolicy.FORBID, ConcurrencyPolicy.REPLACE})
"""The policies whose claims depend on the job's RUNNING executions."""


class ClaimJob(NamedTuple):
    """A job as its tick claims see it; they change none of it."""

    version: int
    is_active: bool
    name: str
    policy: ConcurrencyPolicy
    deferred_until_ms: int | None = None


class CheckedClaim(NamedTuple):
    """A claim that is not STALE."""

    claim: TickClaim
    job: ClaimJob
    slot: str
    scheduled_ms: int

    def key(self) -> tuple[str, int, str]:
        return (self.claim.job_id, self.scheduled_ms, self.slot)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredClaims:
    """What the store holds that a batch's claims depend on, read first."""

    taken: Collection[tuple[str, int, str]] = frozenset()
    """Tick keys that have a record (those of the checked claims, at least)."""
    running: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """The RUNNING executions of each job `watched_jobs` names, in the order
    found; a `forbid` claim names the first as the one it waits for."""
    earlier: Mapping[str, ClaimResult] = field(default_factory=dict)
    """By execution id, the answers (`answer_again`) of claims an earlier
    attempt wrote whose answer was lost; none where a batch is one
    transaction."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimDecision:
    """What a batch of claims comes to, before anything of it is written."""

    results: list[ClaimResult]
    inserts: list[int]
    """The positions in the batch whose result's record is new."""
    replacing: dict[int, tuple[str, ...]]
    """The position of each CLAIMED `replace` claim: the runs it ends."""
    last_ticks: dict[str, int]
    """Per job, the latest tick (Unix ms) of its non-manual claims that have
    a record: `last_tick` moves forward to it."""


def check_claims(
    claims: Sequence[TickClaim], jobs: Mapping[str, ClaimJob]
) -> list[CheckedClaim | None]:
    """Each claim against its job (`jobs` by id): None where it is STALE."""
    checked: list[CheckedClaim | None] = []
    for claim in claims:
        job = jobs.get(claim.job_id)
        manual = claim.trigger is Trigger.MANUAL
        if job is None or job.version != claim.expected_version or not (job.is_active or manual):
            checked.append(None)
        else:
            slot = claim.execution_id if manual else TICK_SLOT
            checked.append(CheckedClaim(claim, job, slot, unix_ms(claim.scheduled_at)))
    return checked


def watched_jobs(checked: Iterable[CheckedClaim | None]) -> set[str]:
    """The jobs whose RUNNING executions `StoredClaims.running` must hold."""
    return {
        entry.claim.job_id
        for entry in checked
        if entry is not None and entry.job.policy in WATCHED_POLICIES
    }


def decide_claims(checked: Sequence[CheckedClaim | None], stored: StoredClaims) -> ClaimDecision:
    """Decide each claim in order, each seeing what the earlier ones of the
    batch took (tick keys, runs started or ended). Pure."""
    batch = _Batch(stored)
    for position, entry in enumerate(checked):
        if entry is None:
            batch.results.append(STALE)
            continue
        earlier = stored.earlier.get(entry.claim.execution_id)
        if earlier is None:
            batch.decide(position, entry)
        else:
            batch.again(position, entry, earlier)
    return ClaimDecision(
        results=batch.results,
        inserts=batch.inserts,
        replacing=batch.replacing,
        last_ticks=batch.last_ticks,
    )


def answer_again(entry: CheckedClaim, record: Execution, slot: str) -> ClaimResult:
    """The answer to a claim whose execution id a stored record already
    has: the claim itself, written by an attempt whose answer was lost, gets
    that answer again; anything else is a DUPLICATE."""
    claim = entry.claim
    same_claim = (
        (record.job_id, unix_ms(record.scheduled_at), slot) == entry.key()
        and record.instance_id == claim.instance_id
        and record.trigger is claim.trigger
    )
    if same_claim and record.status is ExecutionStatus.RUNNING:
        return ClaimResult(outcome=ClaimOutcome.CLAIMED, execution=record)
    if same_claim and record.status is ExecutionStatus.SKIPPED:
        return ClaimResult(outcome=ClaimOutcome.SKIPPED, execution=record)
    return DUPLICATE


def advanced_ticks(
    checked: Sequence[CheckedClaim | None], results: Sequence[ClaimResult]
) -> dict[str, int]:
    """`ClaimDecision.last_ticks` again, for `results` after a write where
    a claim lost its key to a concurrent writer."""
    last_ticks: dict[str, int] = {}
    for entry, result in zip(checked, results, strict=True):
        if entry is not None and result.execution is not None:
            _advance(last_ticks, entry)
    return last_ticks


def inserted_dispatched(claim: TickClaim, result: ClaimResult) -> bool:
    """A SKIPPED record sends nothing, so it is inserted as dispatched."""
    return claim.dispatched or result.outcome is not ClaimOutcome.CLAIMED


def skip_reason(
    trigger: Trigger, scheduled_ms: int, deferred_until_ms: int | None, blocker: str | None
) -> ErrorInfo | None:
    """Why a claim is recorded SKIPPED rather than fired, if it is."""
    if (
        deferred_until_ms is not None
        and trigger is not Trigger.MANUAL
        and scheduled_ms < deferred_until_ms
    ):
        until = rfc3339(from_unix_ms(deferred_until_ms))
        return ErrorInfo(
            type="deferred", message=f"the target asked to wait until {until} (Retry-After)"
        )
    if blocker is not None:
        return ErrorInfo(
            type="skipped",
            message=f"concurrency policy forbid: execution {blocker} of this job is still running",
        )
    return None


def _advance(last_ticks: dict[str, int], entry: CheckedClaim) -> None:
    if entry.claim.trigger is Trigger.MANUAL:
        return
    previous = last_ticks.get(entry.claim.job_id)
    if previous is None or entry.scheduled_ms > previous:
        last_ticks[entry.claim.job_id] = entry.scheduled_ms


class _Batch:
    """`decide_claims` at work; `StoredClaims` stays as read."""

    def __init__(self, stored: StoredClaims) -> None:
        self.stored = stored
        self.taken = set(stored.taken)
        self.running: dict[str, Sequence[str]] = {}
        """The runs of a job as the batch left them, where it changed them."""
        self.instants: dict[int, datetime] = {}  # a batch's claims mostly share one tick
        self.results: list[ClaimResult] = []
        self.inserts: list[int] = []
        self.replacing: dict[int, tuple[str, ...]] = {}
        self.last_ticks: dict[str, int] = {}

    def runs(self, job_id: str) -> Sequence[str]:
        runs = self.running.get(job_id)
        return self.stored.running.get(job_id, ()) if runs is None else runs

    def again(self, position: int, entry: CheckedClaim, earlier: ClaimResult) -> None:
        """A claim an earlier attempt wrote: that attempt's answer; under
        `replace`, what still runs is ended again."""
        result = earlier
        if (
            earlier.outcome is ClaimOutcome.CLAIMED
            and entry.job.policy is ConcurrencyPolicy.REPLACE
        ):
            own = entry.claim.execution_id
            runs = [run for run in self.runs(entry.claim.job_id) if run != own]
            if ends := self.start(position, entry, runs):
                result = _replace(earlier, replaced=ends)
        if earlier.execution is not None:
            _advance(self.last_ticks, entry)
        self.results.append(result)

    def decide(self, position: int, entry: CheckedClaim) -> None:
        claim, job, slot, scheduled_ms = entry
        key = (claim.job_id, scheduled_ms, slot)
        if key in self.taken:
            self.results.append(DUPLICATE)
            return
        self.taken.add(key)
        runs = () if job.policy is ConcurrencyPolicy.ALLOW else self.runs(claim.job_id)
        blocker = runs[0] if runs and job.policy is ConcurrencyPolicy.FORBID else None
        skip = None  # only a Retry-After or a forbid skips: most claims need no look
        if blocker is not None or job.deferred_until_ms is not None:
            skip = skip_reason(claim.trigger, scheduled_ms, job.deferred_until_ms, blocker)
        # Instants as they are stored (truncated to the millisecond), made
        # once, so the record equals what the store reads back.
        scheduled_at = cached_instant(self.instants, scheduled_ms)
        executed_at = cached_instant(self.instants, unix_ms(claim.executed_at))
        replaced: tuple[str, ...] = ()
        if skip is None and job.policy is not ConcurrencyPolicy.ALLOW:
            replaced = self.start(position, entry, runs)
        # A SKIPPED record never runs: it is final when claimed.
        execution = Execution(
            id=claim.execution_id,
            job_id=claim.job_id,
            job_name=job.name,
            trigger=claim.trigger,
            scheduled_at=scheduled_at,
            status=ExecutionStatus.RUNNING if skip is None else ExecutionStatus.SKIPPED,
            instance_id=claim.instance_id,
            executed_at=executed_at if skip is None else None,
            finished_at=None if skip is None else executed_at,
            error=skip,
        )
        outcome = ClaimOutcome.CLAIMED if skip is None else ClaimOutcome.SKIPPED
        self.results.append(ClaimResult(outcome=outcome, execution=execution, replaced=replaced))
        self.inserts.append(position)
        _advance(self.last_ticks, entry)

    def start(self, position: int, entry: CheckedClaim, runs: Sequence[str]) -> tuple[str, ...]:
        """A `forbid` or `replace` claim starts a run that later claims of its
        job see. Answers the runs a `replace` claim ends."""
        job_id, own = entry.claim.job_id, entry.claim.execution_id
        if entry.job.policy is ConcurrencyPolicy.REPLACE:
            replaced = self.replacing[position] = tuple(runs)
            self.running[job_id] = (own,)
            return replaced
        self.running[job_id] = (*runs, own)
        return ()


# Jobs read back in bulk (a scheduler holds every active one) share what
# they have in common instead of one copy each (BENCHMARKS.md).
NO_HEADERS: Mapping[str, str] = MappingProxyType({})


def shared_headers(headers: dict[str, str]) -> Mapping[str, str]:
    return headers if headers else NO_HEADERS


@functools.lru_cache(maxsize=4096)
def shared_retry(max_attempts: int, backoff_seconds: float, max_backoff: float) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=max_attempts, backoff_seconds=backoff_seconds, max_backoff_seconds=max_backoff
    )


def shared_text(text: str) -> str:
    return sys.intern(text)


def check_seeded(jobs: Iterable[Job]) -> None:
    """What both stores refuse before seeding any of `jobs`: an id not well
    formed (ValueError), a name twice (`DuplicateJobName`)."""
    names: set[str] = set()
    for job in jobs:
        if not is_valid_id(job.id):
            raise ValueError(f"job id {job.id!r} is not well formed")
        if job.spec.name in names:
            raise DuplicateJobName(job.spec.name)
        names.add(job.spec.name)
