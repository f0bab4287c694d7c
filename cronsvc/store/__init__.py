"""The store: jobs and execution logs, the source of truth.

Every backend implements `Store`; `open_store(url)` picks one by URL scheme.
`Store` is made of roles, so that each part of the service is typed by the
least it uses: `JobStore` (the API's jobs and their schedule history),
`ScheduleSource` (what a scheduler reads), `ExecutionLedger` (tick claims,
missed records, results and the execution records, each a role of its own:
`TickClaims`, `MissedRecords`, `ResultSink`, `ExecutionRecords`), `Reaper`
(the leader's duties) and `AlertStates` (each job's alert state).
The contract below is what `tests/test_store_contract.py` checks against each
backend, unchanged.

Instants go in and come out as timezone-aware UTC datetimes with millisecond
precision. Ids are made by the caller (`cronsvc.ids.new_id`).

Cursors are opaque strings made by the store; a cursor the store did not make
raises `InvalidCursor`. Lists are newest first: jobs by id descending;
executions by (`scheduled_at`, `id`) descending.

Tick claims: each scheduled tick of a job has at most one execution record
(a fire, or a SKIPPED or MISSED record), enforced by a unique key on
(job id, scheduled_at, slot) where slot is ``"tick"`` for the `schedule` and
`catchup` triggers and for MISSED records, and the execution id for `manual`
triggers (so manual runs never collide with each other or with ticks).
This key is the final fence against a duplicate fire when leases fail.

Jobs keep `previous_secret` (the signing secret their spec replaced, with its
expiry) beside the spec; executions keep their `attempt_log`. Records written
before either existed read back as none and as an empty log.

Schedule history: each job keeps the revisions of its schedule as they took
effect (see `ScheduleRevision` and `schedule_history`), written in the same
atomic write as the create or update that made them, so the ticks a job owed
at any instant can be worked out after the fact. Only the latest
`MAX_SCHEDULE_REVISIONS` are kept.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
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
"""Schedule revisions kept per job; older ones are dropped as new ones come."""


class Keep(enum.Enum):
    """The type of `KEEP`."""

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
    """A request to record that `instance_id` fires `job_id` for `scheduled_at`."""

    job_id: str
    expected_version: int
    """The job version the caller holds; any other version makes the claim STALE."""
    scheduled_at: datetime
    trigger: Trigger
    execution_id: str
    instance_id: str
    executed_at: datetime
    dispatched: bool = False
    """True when the caller sends the webhook right away (the record is
    inserted already dispatched); False when it claims ahead of the tick and
    calls `mark_dispatched` just before sending."""


class ActiveSchedule(NamedTuple):
    """The part of an active job that says when it fires: what a scheduler
    holds of each of many jobs (the rest is read when a tick falls due).
    A named tuple, not a dataclass: a million are made per full read, and a
    tuple is made several times faster."""

    id: str
    version: int
    cron_expression: str
    timezone: str
    last_tick: datetime
    concurrency_policy: ConcurrencyPolicy
    misfire_policy: MisfirePolicy
    misfire_grace_seconds: int


class ClaimOutcome(enum.Enum):
    CLAIMED = "claimed"
    """A RUNNING execution was inserted; the caller fires the webhook. Under
    `replace`, the executions it ended are in `ClaimResult.replaced`."""
    SKIPPED = "skipped"
    """The job's `concurrency_policy` is `forbid` and another execution of it
    is RUNNING: a SKIPPED record (error type "skipped", naming the running
    execution) was inserted for the tick instead; the caller does not fire."""
    DUPLICATE = "duplicate"
    """The tick already has a record (another instance claimed it)."""
    STALE = "stale"
    """The job is gone, its version differs from `expected_version`, or (for
    non-manual triggers) it is paused. Nothing was written."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimResult:
    outcome: ClaimOutcome
    execution: Execution | None = None
    """The inserted record for CLAIMED and SKIPPED; None otherwise."""
    replaced: tuple[str, ...] = ()
    """For a CLAIMED claim of a `replace` job: the ids of the executions of
    that job that were RUNNING and that this claim ended (FAILURE, error type
    "replaced"). Their webhooks may still be in flight on some instance: the
    caller has them cancelled. Empty otherwise."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FinishReport:
    """What `finish_executions` did not write, in the order given."""

    missing: tuple[str, ...] = ()
    """Ids with no record (deleted while running, or not well formed)."""
    already_final: tuple[tuple[str, ExecutionStatus], ...] = ()
    """Ids whose record was already final with another state (marked LOST,
    ended by a `replace` claim, finished by another result), each with the
    status stored; the record was left as it is."""


class JobStore(Protocol):
    """Jobs and their schedule history: what the API creates, reads, changes
    and deletes, and what a webhook's target may ask of its job (pause, defer)."""

    async def create_job(self, job: Job) -> Job:
        """Insert a new job as given (`previous_secret` too), with its first
        schedule revision, in force from its `last_tick` (its schedule starts
        then: at `created_at` for a job made through the API, later for one
        imported with the creation time it had elsewhere). Raises
        `DuplicateJobName`."""
        ...

    async def get_job(self, job_id: str) -> Job:
        """Raises `JobNotFound` (also for ids that are not well formed)."""
        ...

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

        `restart_schedule` also sets `last_tick` = now, so ticks before now are
        not owed (used when the schedule changes or a paused job resumes).
        `previous_secret`, unless `KEEP`, replaces the stored one (None
        removes it); the caller decides it from the job at `expected_version`.
        `last_tick`, `last_run_at`, `last_status` and, by default,
        `previous_secret` are otherwise kept; `paused_reason` and
        `deferred_until` are cleared (a user's change supersedes what a target
        asked for). A change of cron expression, time zone or `is_active` also
        records a schedule revision (see `schedule_history`) in the same
        atomic write.
        Raises `JobNotFound`, `DuplicateJobName`, or `VersionConflict` when
        `expected_version` is given and differs. A failed update writes nothing.
        """
        ...

    async def pause_job(
        self, job_id: str, *, expected_version: int, reason: str, now: datetime
    ) -> Job | None:
        """Pause an active job on its target's behalf (it answered 410 Gone):
        `is_active` false, `paused_reason` = reason, `version` + 1,
        `updated_at` = now. Returns the job as updated, or None, writing
        nothing, if it is gone, paused or at another version than
        `expected_version` (a user changed it since that webhook was sent)."""
        ...

    async def defer_job(self, job_id: str, until: datetime) -> None:
        """Skip the job's scheduled ticks before `until` (its target asked to
        wait): `deferred_until` becomes the later of its value and `until`.
        The version does not change. A missing job is ignored."""
        ...

    async def delete_job(self, job_id: str) -> None:
        """Delete the job and its alert state; its execution logs stay.
        Raises `JobNotFound`."""
        ...

    async def list_jobs(self, query: JobQuery) -> Page[Job]: ...

    async def count_jobs(self) -> int:
        """How many jobs exist, active or paused. Exact, and a read only:
        the API checks it against `limits.max_jobs` before a create."""
        ...

    async def schedule_history(self, job_id: str) -> list[ScheduleRevision]:
        """The job's schedule revisions as they took effect, oldest first:
        one made by `create_job` (`effective_from` = its `last_tick` then), then one
        for each `update_job` that changed the cron expression, the time zone
        or `is_active` (pause and resume included; `effective_from` = its
        `now`, `version` = the version it made). Other updates add none. At
        most the latest `MAX_SCHEDULE_REVISIONS`: when older ones were dropped,
        or the job was imported, the first one returned took effect after
        `created_at` (what the job owed before it is not known). A job stored
        before the history existed has one revision, its current schedule
        from `created_at`. Raises `JobNotFound`."""
        ...


class ScheduleSource(Protocol):
    """What a scheduler reads of the active jobs: their schedules, versions
    and, when a tick falls due, the jobs themselves."""

    async def active_jobs(self, job_ids: Collection[str] | None = None) -> list[Job]:
        """Every job with `is_active`, or only those of `job_ids`; in no
        particular order."""
        ...

    async def active_versions(
        self, after: str | None = None, limit: int | None = None
    ) -> dict[str, int]:
        """The version of every active job: what a resync compares with the
        jobs it holds, at a small part of the cost of reading them all.
        With `limit` (`ValueError` below 1), a page of them: those whose id is
        greater than `after` (all when None), in ascending id order (the
        dict's order), at most `limit`; read the next by passing the last id."""
        ...

    async def active_schedules(
        self, after: str | None = None, limit: int = 20_000
    ) -> list[ActiveSchedule]:
        """The schedules of the active jobs whose id is greater than `after`
        (all when None), in ascending id order, at most `limit` of them
        (`ValueError` below 1). Reading every job is done page by page,
        passing the last id back: each page is one short call, so other
        calls go in between and no page holds more than `limit` jobs."""
        ...

    async def current_versions(self, job_ids: Collection[str]) -> dict[str, int]:
        """The version of each of these jobs that exists and is active; jobs
        gone or paused are left out. A read only: cheap enough for the claim
        pipeline to check, at a tick, claims it made ahead of the tick
        (`cronsvc.marks`)."""
        ...


class TickClaims(Protocol):
    """The run path's writes: a tick's record claimed, then marked sent."""

    async def claim_ticks(self, claims: Sequence[TickClaim]) -> list[ClaimResult]:
        """Check each job and insert each tick's execution record; one result
        per claim, in order. Each claim is atomic on its own (a batch may be
        written in one transaction; a later claim sees the effects of earlier
        ones in the same batch).

        Per claim: STALE if the job is missing, at another version, or paused
        (paused is ignored for `manual`); DUPLICATE if the tick's unique key
        exists; SKIPPED (a SKIPPED record with error type "deferred" is
        inserted) if the trigger is not `manual` and the tick is before the
        job's `deferred_until`; SKIPPED (error type "skipped") if the stored
        job's policy is `forbid` and it has a RUNNING execution; else CLAIMED with a
        RUNNING record (`executed_at` = claim.executed_at, `attempts` = 0).
        For `schedule` and `catchup`, CLAIMED and SKIPPED also advance the
        job's `last_tick` to `scheduled_at` if that is later.

        If the stored job's policy is `replace`, a CLAIMED claim also ends
        every RUNNING execution of the job, with the insert: each becomes
        FAILURE with error type "replaced" and a message naming the new
        execution, `finished_at` = claim.executed_at (and `duration_ms` from
        its `executed_at`); `last_run_at` and `last_status` are left alone.
        Their ids are in `ClaimResult.replaced`. Records already final are
        untouched, and a later `finish_executions` of a replaced record
        leaves it as it is (and reports it as already final). An execution
        claimed earlier in the same batch is replaced like any other (its id
        is then in a later claim's `replaced`, while its own result still
        says CLAIMED).
        """
        ...

    async def mark_dispatched(self, instance_id: str, execution_ids: Collection[str]) -> set[str]:
        """Record that the webhooks of these executions are being sent by
        `instance_id`, so a reaper marks them LOST rather than handing them
        to another instance. Returns the ids marked: those still RUNNING and
        held by `instance_id`. An id missing from the answer was adopted by
        another instance (see `adopt_unsent`) and must not be sent.
        Idempotent."""
        ...


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
        message `reason`, `finished_at` = now) for each tick that has no record
        yet; ticks already recorded are left alone. Advances `last_tick` to the
        latest tick given. Does nothing (returns 0) if the job is gone, paused,
        or at another version than `job.version`: its ticks are then not owed.
        Returns how many records were inserted. The store makes their ids."""
        ...


class ResultSink(Protocol):
    """Where finished runs are written."""

    async def finish_executions(self, executions: Sequence[Execution]) -> FinishReport:
        """Overwrite each RUNNING execution with its final state (its
        `attempt_log` too), in one transaction, and set its job's `last_run_at` (= executed_at) and
        `last_status` if the job still exists and no later-started run has
        already set them (runs may finish out of order).

        A record already final is left unchanged, and the caller is told:
        its id and stored status are in `FinishReport.already_final` (a
        result that came after its run was marked LOST or replaced, or a
        second, different result for one id; in one batch the first entry
        of an id wins). Idempotent: a record that already holds exactly
        this final state (an earlier call wrote it, whose answer was lost)
        counts as written, not as already final. Ids with no record are in
        `FinishReport.missing`. Raises `ValueError`, writing nothing, if any
        status is not final."""
        ...


class ExecutionRecords(Protocol):
    """The execution logs as records: read, listed, deleted, and imported
    from elsewhere."""

    async def get_execution(self, execution_id: str) -> Execution:
        """Raises `ExecutionNotFound` (also for ids that are not well formed)."""
        ...

    async def delete_execution(self, execution_id: str) -> None:
        """Raises `ExecutionNotFound`."""
        ...

    async def list_executions(self, query: ExecutionQuery) -> Page[Execution]: ...

    async def import_executions(self, executions: Sequence[Execution]) -> list[str]:
        """Insert finished executions recorded elsewhere (by the service cronsvc
        replaces), each as given, its id included: history, not runs.

        Each record is inserted atomically on its own (a backend may write the
        batch in one transaction); a batch cut short is completed by its retry.
        Idempotent: an execution whose id is already stored is left alone, as
        is one whose tick key (see Tick claims) another record holds. Returns
        the ids left out, in the order given. The jobs are neither checked (a
        record may outlive its job) nor touched: `last_tick`, `last_run_at`
        and `last_status` stay as they are. Raises `ValueError`, writing
        nothing, if any status is not final or any id is not well formed."""
        ...


class ExecutionLedger(TickClaims, MissedRecords, ResultSink, ExecutionRecords, Protocol):
    """Every execution record of every tick: claimed, missed, finished, read."""


class Reaper(Protocol):
    """The leader's duties on the records of instances that are gone, and on
    records past their retention."""

    async def adopt_unsent(
        self, *, live_instances: Collection[str], instance_id: str
    ) -> list[Execution]:
        """Hand to `instance_id` every RUNNING execution that was claimed
        ahead of its tick but never dispatched, and whose `instance_id` is not
        in `live_instances` (its instance died or stopped before sending it).
        Atomic per execution: of concurrent callers, one adopts it. Returns
        the records as updated (still RUNNING, not dispatched)."""
        ...

    async def mark_lost(
        self, *, live_instances: Collection[str], now: datetime, reason: str
    ) -> list[Execution]:
        """Mark every RUNNING execution that was dispatched and whose
        `instance_id` is not in `live_instances` as LOST (finished_at = now,
        error type "lost", message `reason`). Returns the records as updated.
        Executions never dispatched are left for `adopt_unsent`. A result
        that comes later for one of them is reported by `finish_executions`
        as already final, not written."""
        ...

    async def prune_executions(self, older_than: datetime) -> int:
        """Delete final execution records with `scheduled_at` < `older_than`.
        Returns how many were deleted."""
        ...


MAX_ALERT_CONFLICTS = 20
"""How often a backend without transactions re-reads a job's alert state
that another writer changed under it, before the call gives up on it."""


class AlertStates(Protocol):
    """Each job's alert state (`cronsvc.alerts`): folded from its run
    outcomes, changed by compare-and-set, so that of any number of callers
    (instances of a cluster) exactly one effects each change, and only it
    sends the alert."""

    async def apply_alert_outcomes(
        self, steps: Sequence[AlertStep], now: datetime
    ) -> list[AlertChange]:
        """Fold each step's outcomes into its job's stored state with
        `cronsvc.alerts.apply_outcomes` and store the result, atomically per
        job: a state another caller changed meanwhile is read again and the
        outcomes folded into it afresh (at most `MAX_ALERT_CONFLICTS` times;
        then the step is left out, logged). Returns the changes this call
        effected, in step order. A job that no longer exists is left out
        (its state is deleted with it)."""
        ...

    async def alert_states(self, job_ids: Collection[str]) -> dict[str, AlertState]:
        """The stored states of these jobs; a job with none is left out."""
        ...


class Store(JobStore, ScheduleSource, ExecutionLedger, Reaper, AlertStates, Protocol):
    """A backend: every role, and the store's own life."""

    async def ping(self) -> None:
        """Raise `StoreUnavailable` unless the store answers (also after
        `aclose`)."""
        ...

    async def aclose(self) -> None:
        """Close; safe to call twice. Every call after it raises
        `StoreUnavailable`."""
        ...


async def open_store(url: str, *, retention_days: float | None = None) -> Store:
    """Open the backend that `url`'s scheme names, creating its schema.
    `retention_days` lets a backend that can expire records by itself do so
    (MongoDB's TTL index); the leader prunes every backend as well."""
    # Imported here: the backends import this module, and pymongo is loaded
    # only by a service that uses MongoDB.
    match store_backend(url):
        case StoreBackend.SQLITE:
            from cronsvc.store.sqlite import SQLiteStore

            return await SQLiteStore.open(sqlite_path(url))
        case StoreBackend.MONGODB:
            from cronsvc.store.mongo import MongoStore

            return await MongoStore.open(url, retention_days=retention_days)
