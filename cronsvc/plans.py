"""What the job index needs of a job's schedule and policies, made once per
kind and shared by jobs alike: a million jobs on a few schedules hold a few
plans."""

from __future__ import annotations

from dataclasses import dataclass

from cronsvc.cron import CronSchedule, parse_schedule
from cronsvc.domain import ConcurrencyPolicy, Job, MisfirePolicy

CACHED_PLANS = 65_536  # distinct (schedule, policies), as `cron` keeps parsed schedules

_CLAIMED_AT_THE_TICK = frozenset({ConcurrencyPolicy.FORBID, ConcurrencyPolicy.REPLACE})


@dataclass(frozen=True, slots=True, eq=False)
class Plan:
    """Compared and hashed by identity, which is quick: made once per kind."""

    schedule: CronSchedule
    misfire_policy: MisfirePolicy
    misfire_grace_seconds: int
    claimed_at_the_tick: bool


PlanKey = tuple[str, str, ConcurrencyPolicy, MisfirePolicy, int]


def plan_key(job: Job) -> PlanKey:
    spec = job.spec
    return (
        spec.cron_expression,
        spec.timezone,
        spec.concurrency_policy,
        spec.misfire_policy,
        spec.misfire_grace_seconds,
    )


class PlanCache:
    __slots__ = ("_min_interval_s", "known")

    def __init__(self, *, min_interval_s: float) -> None:
        self._min_interval_s = min_interval_s
        self.known: dict[PlanKey, Plan] = {}  # bulk loads look here first: no call per job

    def plan(self, key: PlanKey) -> Plan:
        """Raises `CronSvcError` for a schedule the current settings refuse."""
        plan = self.known.get(key)
        if plan is None:
            expression, zone, concurrency, misfire, grace = key
            schedule = parse_schedule(expression, zone, min_interval_s=self._min_interval_s)
            if len(self.known) >= CACHED_PLANS:
                self.known.clear()  # entries keep theirs; jobs alike share anew
            plan = self.known[key] = Plan(
                schedule=schedule,
                misfire_policy=misfire,
                misfire_grace_seconds=grace,
                claimed_at_the_tick=concurrency in _CLAIMED_AT_THE_TICK,
            )
        return plan
