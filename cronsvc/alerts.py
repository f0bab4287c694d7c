"""Failure alerts, the pure part: what a job's run outcomes do to its alert
state, and which state changes are told.

A job alerts ("failing") once `after` consecutive runs have ended FAILURE,
MISSED or LOST, and once ("recovered", if `on_recovery`) when a run
succeeds again; SKIPPED runs change nothing. Two signals that are not run
statuses alert too: the job was paused by its target's 410 Gone
("paused"), and a tick of the job could not be recorded ("unrecorded"; once
until the job's next recorded run).

Results of neighbouring ticks reach the store out of order (from several
instances, or a LOST marking that comes late). An outcome older than the
last one applied cannot make a job flap: an older success changes nothing,
and an older failure only adds to an unbroken run of failures. Both store
backends fold outcomes with `apply_outcomes`; the store makes each fold
atomic (see `AlertStates`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

from cronsvc.domain import ALERTING_STATUSES, AlertPolicy, ErrorInfo, ExecutionStatus
from cronsvc.ids import new_id


class Signal(enum.StrEnum):
    """What happens to a job, besides a run ending, that its alerts tell."""

    PAUSED = "PAUSED"
    """Its target answered 410 Gone and cronsvc paused it."""
    UNRECORDED = "UNRECORDED"
    """A tick's record could not be written (dropped, or past the missed-record cap)."""


class AlertKind(enum.StrEnum):
    FAILING = "failing"
    RECOVERED = "recovered"
    PAUSED = "paused"
    UNRECORDED = "unrecorded"


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """One thing that happened to a job, as its alerts see it."""

    job_id: str
    status: ExecutionStatus | Signal
    count: int = 1
    """Runs it stands for (a batch of MISSED ticks is one outcome)."""
    scheduled_at: datetime | None = None
    """The (last) tick it is about; None for a signal without one."""
    finished_at: datetime | None = None
    execution_id: str | None = None
    error: ErrorInfo | None = None
    run_status: ExecutionStatus | None = None
    """For a signal: the status of the run it came with, if known."""
    token: str = field(default_factory=new_id, compare=False)
    """This outcome and no other: tells a retried fold what its lost write applied."""

    @property
    def last_run_status(self) -> ExecutionStatus | None:
        """The run's status, as an alert tells it."""
        return self.status if isinstance(self.status, ExecutionStatus) else self.run_status


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertState:
    """A job's alert state, as the store keeps it."""

    alerting: bool = False
    streak: int = 0
    """Consecutive runs that ended FAILURE, MISSED or LOST."""
    changed_at: datetime | None = None
    """When `alerting` last changed."""
    last_status: ExecutionStatus | None = None
    last_error: ErrorInfo | None = None
    last_at: datetime | None = None
    """The tick of the latest outcome applied (see the module's docstring);
    this one again (same tick, same `last_execution_id`) is left out."""
    last_finished_at: datetime | None = None
    last_execution_id: str | None = None
    unrecorded: bool = False
    """An "unrecorded" alert was told, and no run was recorded since."""
    version: int = 0
    """Bumped by every change the store makes; 0: never stored."""
    applied: tuple[str, ...] = field(default=(), compare=False)
    """The tokens of the outcomes the write of this version applied ..."""
    previous: AlertState | None = field(default=None, compare=False)
    """... and the state it started from (its own `applied` and `previous`
    left out): a writer whose answer was lost finds its write here."""


NO_STATE = AlertState()


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertChange:
    """A state change one store call effected: exactly one alert to send."""

    job_id: str
    kind: AlertKind
    before: AlertState
    after: AlertState
    outcome: Outcome
    policy: AlertPolicy
    number: int = 1
    """Its place among the changes of one stored version (a fold can effect several)."""

    @property
    def alert_id(self) -> str:
        """The alert's `webhook-id`: the same on every retry of its delivery,
        and on no other alert."""
        return f"alert_{self.job_id}_{self.after.version}_{self.number}"


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertStep:
    """One job's outcomes, in the order they happened, and the policy that judges them."""

    job_id: str
    policy: AlertPolicy
    outcomes: tuple[Outcome, ...]


def transition(
    state: AlertState, outcome: Outcome, policy: AlertPolicy, now: datetime
) -> tuple[AlertState, AlertKind | None]:
    """The state after `outcome` and the alert it calls for. The state is
    `state` itself (the same object) when the outcome changes nothing."""
    status = outcome.status
    # Signals leave the run fields alone (the paused run's own record comes
    # after its signal); a new object says the state changed all the same.
    if status is Signal.PAUSED:
        return replace(state), AlertKind.PAUSED
    if status is Signal.UNRECORDED:
        if state.unrecorded:
            return state, None
        return replace(state, unrecorded=True), AlertKind.UNRECORDED
    if status not in ALERTING_STATUSES and status is not ExecutionStatus.SUCCESS:
        return state, None  # SKIPPED (and RUNNING, never final) change nothing
    tick, last = outcome.scheduled_at, state.last_at
    if tick is not None and last is not None and tick <= last:
        if tick == last and outcome.execution_id == state.last_execution_id:
            return state, None  # this very outcome, applied again
        if status is ExecutionStatus.SUCCESS or state.last_status not in ALERTING_STATUSES:
            return state, None  # an older tick cannot undo or break what came after it
        # A failure that reached the store after a later one: it belongs to
        # the same run of failures, and counts, as long as it is unbroken.
        return _failed(state, outcome.count, policy, now)
    recorded = replace(_noted(state, outcome), unrecorded=False)
    if status is ExecutionStatus.SUCCESS:
        if not state.alerting:
            return replace(recorded, streak=0), None
        after = replace(recorded, streak=0, alerting=False, changed_at=now)
        return after, AlertKind.RECOVERED if policy.on_recovery else None
    return _failed(recorded, outcome.count, policy, now)


def _failed(
    state: AlertState, count: int, policy: AlertPolicy, now: datetime
) -> tuple[AlertState, AlertKind | None]:
    streak = state.streak + count
    if state.alerting or streak < policy.after:
        return replace(state, streak=streak), None
    return replace(state, streak=streak, alerting=True, changed_at=now), AlertKind.FAILING


def _noted(state: AlertState, outcome: Outcome) -> AlertState:
    return replace(
        state,
        last_status=ExecutionStatus(outcome.status),
        last_error=outcome.error,
        last_at=max(filter(None, (state.last_at, outcome.scheduled_at)), default=None),
        last_finished_at=outcome.finished_at or state.last_finished_at,
        last_execution_id=outcome.execution_id,
    )


def apply_outcomes(
    state: AlertState, step: AlertStep, now: datetime
) -> tuple[AlertState, list[AlertChange]]:
    """Fold a job's outcomes into its state: the new state (its version
    bumped once if anything changed; `state` itself if nothing did) and the
    alerts to send, each with the version it will be stored at.

    A step retried after its write landed but the answer was lost (the
    store's latest write applied outcomes all in this step) counts them
    once: it folds only the others, and answers the lost write's alerts
    again, with the same ids, for they were never sent."""
    replayed: list[AlertChange] = []
    outcomes = step.outcomes
    done = set(state.applied)
    if done and state.previous is not None and done <= {o.token for o in outcomes}:
        landed = tuple(o for o in outcomes if o.token in done)
        _, replayed = _fold(state.previous, replace(step, outcomes=landed), now)
        outcomes = tuple(o for o in outcomes if o.token not in done)
    new, changes = _fold(state, replace(step, outcomes=outcomes), now)
    return new, replayed + changes


def _fold(
    state: AlertState, step: AlertStep, now: datetime
) -> tuple[AlertState, list[AlertChange]]:
    current = state
    kinds: list[tuple[AlertKind, AlertState, AlertState, Outcome]] = []
    for outcome in step.outcomes:
        after, kind = transition(current, outcome, step.policy, now)
        if kind is not None:
            kinds.append((kind, current, after, outcome))
        current = after
    if current is state:
        return state, []
    version = state.version + 1
    final = replace(
        current,
        version=version,
        applied=tuple(outcome.token for outcome in step.outcomes),
        previous=replace(state, applied=(), previous=None),
    )
    changes = [
        AlertChange(
            job_id=step.job_id,
            kind=kind,
            before=replace(before, version=state.version),
            after=replace(after, version=version),
            outcome=outcome,
            policy=step.policy,
            number=number,
        )
        for number, (kind, before, after, outcome) in enumerate(kinds, start=1)
    ]
    return final, changes


def in_tick_order(outcomes: Iterable[Outcome]) -> list[Outcome]:
    """Outcomes ordered by their tick (signals without one keep their place
    relative to the outcome before them): a batch gathered from several
    sources is applied as the ticks happened."""
    keyed = []
    last = None
    for position, outcome in enumerate(outcomes):
        last = outcome.scheduled_at or last
        keyed.append((last.timestamp() if last else 0.0, position, outcome))
    keyed.sort(key=lambda entry: (entry[0], entry[1]))
    return [outcome for _, _, outcome in keyed]
