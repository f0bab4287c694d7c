"""What to do with the ticks of one job that are due now: the misfire policy.

A pure function, so the policy is tested over a table of cases.

Rules:
- A tick is *fireable* if it is at most `grace_s` old (never less than
  `MIN_GRACE_S`, so a tick the scheduler reaches a few milliseconds late still
  fires with a grace of 0). Older ticks are missed under every policy.
- `skip` fires a tick only in the normal course: it is the only due tick and
  fell due after this instance started; anything else is recorded missed.
- `fire_once` fires the latest fireable tick; the other fireable ticks are
  missed (coalesced into that run).
- `fire_all` fires the latest `max_catchup` fireable ticks, oldest first.
- A fired tick due before the instance started is a `catchup`, else `schedule`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cronsvc.domain import MisfirePolicy, Trigger

MIN_GRACE_S = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class MisfirePlan:
    fire: list[tuple[datetime, Trigger]]
    missed: list[datetime]


def plan_due_ticks(
    ticks: Sequence[datetime],
    *,
    now: datetime,
    started_at: datetime,
    policy: MisfirePolicy,
    grace_s: float,
    max_catchup: int,
) -> MisfirePlan:
    """Split `ticks` (due, ascending) into ticks to fire and ticks missed."""
    grace = max(grace_s, MIN_GRACE_S)
    fireable = [t for t in ticks if (now - t).total_seconds() <= grace]
    stale = [t for t in ticks if (now - t).total_seconds() > grace]
    if policy is MisfirePolicy.SKIP:
        normal = len(ticks) == 1 and fireable and ticks[0] >= started_at
        chosen = list(fireable) if normal else []
    elif policy is MisfirePolicy.FIRE_ONCE:
        chosen = fireable[-1:]
    else:
        chosen = fireable[-max_catchup:]
    chosen_set = set(chosen)
    missed = sorted(stale + [t for t in fireable if t not in chosen_set])
    fire = [(t, Trigger.CATCHUP if t < started_at else Trigger.SCHEDULE) for t in chosen]
    return MisfirePlan(fire=fire, missed=missed)
