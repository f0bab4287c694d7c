"""The store: jobs and execution logs, the source of truth.

Every backend implements `Store`, made of roles so that each part of the
service is typed by the least it uses; `open_store(url)` picks one by URL
scheme. `tests/test_store_contract.py` checks this contract against each.

Instants are timezone-aware UTC datetimes with millisecond precision. Ids are
made by the caller (`cronsvc.ids.new_id`). Cursors are opaque and made by the
store; any other raises `InvalidCursor`. Lists are newest first: jobs by id,
executions by (`scheduled_at`, `id`).

Tick claims: a tick of a job has at most one execution record (a fire, or a
SKIPPED or MISSED record), enforced by a unique key on (job id, scheduled_at,
slot); slot is ``"tick"`` for `schedule` and `catchup` triggers and MISSED
records, and the execution id for `manual` ones, which so never collide. This
key is the final fence against a duplicate fire when leases fail.

Records written before `previous_secret` or `attempt_log` existed read back
as none and as an empty log. Schedule history (`schedule_history`) is written
in the same atomic write as the create or update that made it, so the ticks a
job owed at any instant can be worked out after the fact.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Generic, NamedTuple, Protocol, TypeVar

from cronsvc.alerts import AlertChange, AlertState, AlertStep
from cronsvc.domain import (
    ConcurrencyPolicy,
    Execution,
    ExecutionStatus,
    Job,
    JobSpec,
    MisfirePolicy,
    PreviousSecret,
    ScheduleRevision,
    Trigger,
)
from cronsvc.urls import StoreBackend, sqlite_path, store_backend

T = TypeVar("T")

MAX_SCHEDULE_REVISIONS = 100
"""Schedule revisions kept per job; older ones are dropped."""


class Keep(enum.Enum):
    KEEP = "keep"


KEEP: Final = Keep.KEEP
"""As an argument to a write: leave that field as it is stored."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None
    """Pass back to get the next page; None on the last page."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobQuery:
    is_active: bool | None = None
    tag: str | None = None
    name_prefix: str | None = None
    cursor: str | None = None
    limit: int = 50


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionQuery:
    job_id: str | None = None
    status: ExecutionStatus | None = None
    since: datetime | None = None
    """Inclusive lower bound on `scheduled_at`."""
    until: datetime | None = None
    """Exclusive upper bound on `scheduled_at`."""
    cursor: str | None = None
    limit: int = 50


@dataclass(frozen=True, slots=True, kw_only=True)
class TickClaim:
    job_id: str
    expected_version: int
    """The job version the caller holds; any other version makes the claim STALE."""
    scheduled_at: datetime
    trigger: Trigger
    execution_id: str
    instance_id: str
    executed_at: datetime
    dispatched: bool = False
    """True when the webhook is sent right away; False when claimed ahead of
    the tick, with `mark_dispatched` called just before sending."""


class ActiveSchedule(NamedTuple):
    """What a scheduler holds of each active job (the rest is read when a
    tick falls due). A named tuple: a million are made per full read, and a
    tuple is made several times faster than a dataclass."""

    id: str
    version: int
    cron_expression: str
    timezone: str
    last_tick: datetime
    concurrency_policy: ConcurrencyPolicy
    misfire_policy: MisfirePolicy
    misfire_grace_seconds: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulePage:
    """One page of `ScheduleSource.active_schedules`."""

    rows: list[ActiveSchedule]
    next_after: str | None
    """The last id the page read, to pass back as `after`; None once the read
    reached the end."""


class ClaimOutcome(enum.Enum):
    CLAIMED = "claimed"
    """A RUNNING execution was inserted; the caller fires the webhook."""
    SKIPPED = "skipped"
    """A SKIPPED record was inserted instead (see `claim_ticks`); no fire."""
    DUPLICATE = "duplicate"
    """The tick already has a record (another instance claimed it)."""
    STALE = "stale"
    """See `claim_ticks`. Nothing was written."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimResult:
    outcome: ClaimOutcome
    execution: Execution | None = None
    """The inserted record for CLAIMED and SKIPPED; None otherwise."""
    replaced: tuple[str, ...] = ()
    """The runs a CLAIMED `replace` claim ended; their webhooks may still be
    in flight on some instance, so the caller has them cancelled."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FinishReport:
    """What `finish_executions` did not write, in the order given."""

    missing: tuple[str, ...] = ()
    """Ids with no record (deleted while running, or not well formed)."""
    already_final: tuple[tuple[str, ExecutionStatus], ...] = ()
    """Ids whose record was already final with another state, each with the
    status stored; the record was left as it is."""


class JobStore(Protocol):
    """Jobs and their schedule history, as the API and a webhook's target
    (pause, defer) change them."""

    async def create_job(self, job: Job) -> Job:
        """Insert a new job as given, with its first schedule revision in force
        from its `last_tick` (an imported job's may be after `created_at`).
        Raises `DuplicateJobName`."""

    async def get_job(self, job_id: str) -> Job:
        """Raises `JobNotFound` (also for ids that are not well formed)."""

    async def update_job(
        self,
        job_id: str,
        spec: JobSpec,
        *,
        now: datetime,
        expected_version: int | None = None,
        restart_schedule: bool = False,
        previous_secret: PreviousSecret | Keep | None = KEEP,
    ) -> Job:
        """Replace the job's spec atomically: `version` + 1, `updated_at` = now.

        `restart_schedule` also sets `last_tick` = now, so earlier ticks are not
        owed. `previous_secret`, unless `KEEP`, replaces the stored one (None
        removes it). `last_tick`, `last_run_at` and `last_status` are otherwise
        kept; `paused_reason` and `deferred_until` are cleared (a user's change
        supersedes what a target asked for). A change of cron expression, time
        zone or `is_active` records a schedule revision in the same write.
        Raises `JobNotFound`, `DuplicateJobName`, or `VersionConflict` when
        `expected_version` is given and differs; a failed update writes nothing.
        """

    async def pause_job(
        self, job_id: str, *, expected_version: int, reason: str, now: datetime
    ) -> Job | None:
        """Pause an active job whose target answered 410 Gone: `paused_reason`
        = reason, `version` + 1, `updated_at` = now. Returns the job as
        updated, or None, writing nothing, if it is gone, paused or at another
        version (a user changed it since that webhook was sent)."""

    async def defer_job(self, job_id: str, until: datetime) -> None:
        """Skip the job's scheduled ticks before `until` (its target asked to
        wait); never moves `deferred_until` back, nor changes the version. A
        missing job is ignored."""

    async def delete_job(self, job_id: str) -> None:
        """Delete the job and its alert state; its execution logs stay.
        Raises `JobNotFound`."""

    async def list_jobs(self, query: JobQuery) -> Page[Job]: ...

    async def count_jobs(self) -> int:
        """How many jobs exist, exactly: checked against `limits.max_jobs`
        before each create, so a read only."""

    async def schedule_history(self, job_id: str) -> list[ScheduleRevision]:
        """The job's schedule revisions, oldest first: `create_job`'s, then
        one per change of cron expression, time zone or `is_active` (pause
        included; `effective_from` = its `now`, `version` = the version it
        made). At most the latest `MAX_SCHEDULE_REVISIONS`: when older ones
        were dropped, or the job was imported, the first took effect after
        `created_at` (what was owed before is not known). A job stored before
        the history existed has its current schedule from `created_at`.
        Raises `JobNotFound`."""


class ScheduleSource(Protocol):
    """What a scheduler reads of the active jobs."""

    async def active_jobs(self, job_ids: Collection[str] | None = None) -> list[Job]:
        """Every active job, or only those of `job_ids`; in no order."""

    async def active_versions(
        self, after: str | None = None, limit: int | None = None
    ) -> dict[str, int]:
        """The version of every active job, for a resync at a small part of
        the cost of reading them. With `limit` (`ValueError` below 1), a page
        as `active_schedules` reads one (the dict in ascending id order)."""

    async def active_schedules(
        self,
        after: str | None = None,
        limit: int = 20_000,
        *,
        keep: Callable[[str], bool] | None = None,
    ) -> SchedulePage:
        """Reads at most `limit` (`ValueError` below 1) active jobs whose id is
        greater than `after` (all when None), in ascending id order, and
        answers the schedules of those whose id `keep` accepts (all when
        None): an instance reads only the share it owns, without holding the
        others' schedules. Read page by page, passing `next_after` back, so
        other calls go in between."""

    async def current_versions(self, job_ids: Collection[str]) -> dict[str, int]:
        """The version of each of these jobs that exists and is active. A
        read only: cheap enough to check, at a tick, the claims made ahead of
        it (`cronsvc.claims`)."""


class TickClaims(Protocol):
    """The run path's writes: a tick's record claimed, then marked sent."""

    async def claim_ticks(self, claims: Sequence[TickClaim]) -> list[ClaimResult]:
        """Insert each tick's execution record; one result per claim, in
        order. Each claim is atomic on its own, and sees the effects of
        earlier ones in the batch (which may be one transaction).

        Per claim: STALE if the job is missing, at another version, or paused
        (ignored for `manual`); DUPLICATE if the tick's key exists; SKIPPED,
        with error type "deferred", if the trigger is not `manual` and the
        tick is before `deferred_until`; SKIPPED ("skipped", naming the run)
        if the job's policy is `forbid` and it has a RUNNING execution; else
        CLAIMED with a RUNNING record (`executed_at` = claim.executed_at,
        `attempts` = 0). CLAIMED and SKIPPED `schedule` and `catchup` claims
        advance `last_tick` to `scheduled_at` if that is later.

        Under `replace`, a CLAIMED claim also ends every RUNNING execution of
        the job (one claimed earlier in the batch too): each becomes FAILURE,
        error type "replaced", a message naming the new execution,
        `finished_at` = claim.executed_at (`duration_ms` from its
        `executed_at`); the job's `last_run_at` and `last_status` stay. Their
        ids are in `ClaimResult.replaced`; a later result for one of them is
        reported by `finish_executions` as already final.
        """

    async def mark_dispatched(self, instance_id: str, execution_ids: Collection[str]) -> set[str]:
        """Record that `instance_id` is sending these executions' webhooks, so
        a reaper marks them LOST rather than handing them on. Returns the ids
        marked: those still RUNNING and held by `instance_id`; any other was
        adopted elsewhere (`adopt_unsent`) and must not be sent. Idempotent."""


class MissedRecords(Protocol):
    """Where ticks that will not fire are recorded (misfire policy)."""

    async def record_missed(
        self,
        job: Job,
        ticks: Sequence[datetime],
        *,
        instance_id: str,
        now: datetime,
        reason: str,
    ) -> int:
        """Insert a MISSED record (trigger `schedule`, error type "missed",
        message `reason`, `finished_at` = now, an id the store makes) for each
        tick without a record, and advance `last_tick` to the latest tick.
        Returns how many were inserted: 0, writing nothing, if the job is
        gone, paused or at another version (its ticks are then not owed)."""


class ResultSink(Protocol):
    """Where finished runs are written."""

    async def finish_executions(self, executions: Sequence[Execution]) -> FinishReport:
        """Overwrite each RUNNING execution with its final state, in one
        transaction, and set its job's `last_run_at` (= executed_at) and
        `last_status` unless a later-started run already has (runs may finish
        out of order).

        A record already final is left unchanged and reported in
        `FinishReport.already_final` (its run was marked LOST or replaced, or
        this is a second, different result; in one batch an id's first entry
        wins). Idempotent: a record already holding exactly this state counts
        as written. Ids with no record are in `FinishReport.missing`. Raises
        `ValueError`, writing nothing, if any status is not final."""


class ExecutionRecords(Protocol):
    """The execution logs as records."""

    async def get_execution(self, execution_id: str) -> Execution:
        """Raises `ExecutionNotFound` (also for ids that are not well formed)."""

    async def delete_execution(self, execution_id: str) -> None:
        """Raises `ExecutionNotFound`."""

    async def list_executions(self, query: ExecutionQuery) -> Page[Execution]: ...

    async def import_executions(self, executions: Sequence[Execution]) -> list[str]:
        """Insert finished executions recorded elsewhere (by the service
        cronsvc replaces), each as given: history, not runs. Each is atomic
        on its own, so a batch cut short is completed by its retry.
        Idempotent: one whose id or tick key is already stored is left out;
        returns those ids, in order. The jobs are neither checked (a record
        may outlive its job) nor touched. Raises `ValueError`, writing
        nothing, if any status is not final or any id is not well formed."""


class ExecutionLedger(TickClaims, MissedRecords, ResultSink, ExecutionRecords, Protocol):
    """Every execution record of every tick: claimed, missed, finished, read."""


class Reaper(Protocol):
    """The leader's duties on records of gone instances and past retention."""

    async def adopt_unsent(
        self, *, live_instances: Collection[str], instance_id: str
    ) -> list[Execution]:
        """Hand to `instance_id` every RUNNING, never dispatched execution
        whose instance is not in `live_instances`. Atomic per execution: of
        concurrent callers, one adopts it. Returns the records as updated."""

    async def mark_lost(
        self, *, live_instances: Collection[str], now: datetime, reason: str
    ) -> list[Execution]:
        """Mark every RUNNING, dispatched execution whose instance is not in
        `live_instances` LOST (finished_at = now, error type "lost", message
        `reason`); a later result is reported as already final. Returns the
        records as updated."""

    async def prune_executions(self, older_than: datetime) -> int:
        """Delete final records with `scheduled_at` < `older_than`; returns
        how many."""


MAX_ALERT_CONFLICTS = 20
"""How often a backend without transactions re-reads a job's alert state
that another writer changed, before giving up on it."""


class AlertStates(Protocol):
    """Each job's alert state (`cronsvc.alerts`), changed by compare-and-set
    so that of all callers exactly one effects each change and sends it."""

    async def apply_alert_outcomes(
        self, steps: Sequence[AlertStep], now: datetime
    ) -> list[AlertChange]:
        """Fold each step's outcomes into its job's state
        (`cronsvc.alerts.apply_outcomes`), atomically per job: a state changed
        meanwhile is read and folded afresh, at most `MAX_ALERT_CONFLICTS`
        times, then the step is left out, logged. Returns the changes this
        call effected, in step order. A job that is gone is left out."""

    async def alert_states(self, job_ids: Collection[str]) -> dict[str, AlertState]:
        """The stored states of these jobs; a job with none is left out."""


class Store(JobStore, ScheduleSource, ExecutionLedger, Reaper, AlertStates, Protocol):
    """A backend: every role, and the store's own life."""

    async def ping(self) -> None:
        """Raise `StoreUnavailable` unless the store answers."""

    @property
    def answered(self) -> int:
        """Calls answered since open (the health probe skips a store that answers)."""
        ...

    async def aclose(self) -> None:
        """Close; safe to call twice. Every call after it raises
        `StoreUnavailable`."""


async def open_store(url: str, *, retention_days: float | None = None) -> Store:
    """Open the backend `url`'s scheme names, creating its schema.
    `retention_days` lets MongoDB expire records itself (the leader prunes
    every backend as well)."""
    # Imported here: the backends import this module, and pymongo is loaded
    # only by a service that uses MongoDB.
    match store_backend(url):
        case StoreBackend.SQLITE:
            from cronsvc.store.sqlite import SQLiteStore

            return await SQLiteStore.open(sqlite_path(url))
        case StoreBackend.MONGODB:
            from cronsvc.store.mongo import MongoStore

            return await MongoStore.open(url, retention_days=retention_days)
