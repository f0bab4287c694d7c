"""How a claimed tick's record ends when its webhook gives no answer: MISSED
(never sent), SKIPPED or FAILURE, with the reason in words.

Pure functions of an execution and an instant, shared by the claim pipeline,
the deliveries and adoption, so each reason reads the same wherever it is
written.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from cronsvc.cron import parse_schedule
from cronsvc.domain import ErrorInfo, Execution, ExecutionStatus, Job, Trigger
from cronsvc.errors import CronSvcError
from cronsvc.misfire import MIN_GRACE_S
from cronsvc.ticks import DueTick

SHUTDOWN = "cronsvc stopped before the webhook answered"
SHUTDOWN_UNSENT = "cronsvc stopped before its tick; the webhook was not sent"
ADOPTED_TOO_LATE = (
    "the instance that claimed this tick stopped before sending it, "
    "and the job's misfire policy does not fire it this late"
)
UNANSWERED = "the store wrote its claim but its answer never came back, so the webhook was not sent"
CLAIMED_LATE = "the store took its claim {late_s:.1f} s after the tick"
HELD_UP = "this instance was held up {late_s:.1f} s past the tick between its claim and its send"


def missed(execution: Execution, now: datetime, message: str) -> Execution:
    """A claimed tick recorded MISSED: its webhook was not sent."""
    return dataclasses.replace(
        execution,
        status=ExecutionStatus.MISSED,
        executed_at=None,
        finished_at=now,
        error=ErrorInfo(type="missed", message=message),
    )


def ended(
    execution: Execution, now: datetime, error_type: str, message: str, *, skipped: bool = False
) -> Execution:
    """An execution that ends without a webhook answer."""
    return dataclasses.replace(
        execution,
        status=ExecutionStatus.SKIPPED if skipped else ExecutionStatus.FAILURE,
        executed_at=None if skipped else execution.executed_at,
        finished_at=now,
        duration_ms=None if skipped else _ms_between(execution.executed_at, now),
        error=ErrorInfo(type=error_type, message=message),
    )


def past_grace(due: DueTick, now: datetime) -> bool:
    """Whether a tick's claim came back too late for its job's misfire
    grace (a store that answered after a stall): it is then recorded MISSED,
    as a tick found overdue after a restart is, not fired late."""
    if due.trigger is Trigger.MANUAL:
        return False
    grace = max(due.job.spec.misfire_grace_seconds, MIN_GRACE_S)
    return (now - due.tick).total_seconds() > grace


def missed_late(execution: Execution, due: DueTick, now: datetime, why: str) -> Execution:
    """A claimed tick found past its job's misfire grace before it was sent."""
    late_s = (now - due.tick).total_seconds()
    spec = due.job.spec
    return missed(
        execution,
        now,
        why.format(late_s=late_s) + ", past the job's misfire grace "
        f"(misfirePolicy {spec.misfire_policy.value}, "
        f"misfireGraceSeconds {max(spec.misfire_grace_seconds, MIN_GRACE_S):g}); "
        "the webhook was not sent",
    )


def has_tick(job: Job, tick: datetime) -> bool:
    """Whether `tick` is still one of the job's ticks (its schedule may have
    changed since the tick was claimed)."""
    try:
        schedule = parse_schedule(job.spec.cron_expression, job.spec.timezone)
    except CronSvcError:
        return False
    return schedule.next_after(tick - timedelta(seconds=1)) == tick


def _ms_between(start: datetime | None, end: datetime) -> int | None:
    return None if start is None else int((end - start).total_seconds() * 1000)
