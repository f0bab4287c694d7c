"""Alert transitions, as a pure function over a table of cases, and the
effective policy of a job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cronsvc.alerts import (
    NO_STATE,
    AlertKind,
    AlertState,
    AlertStep,
    Outcome,
    Signal,
    apply_outcomes,
    in_tick_order,
    transition,
)
from cronsvc.domain import AlertPolicy, ExecutionStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)
F, S, M, L, K = (
    ExecutionStatus.FAILURE,
    ExecutionStatus.SUCCESS,
    ExecutionStatus.MISSED,
    ExecutionStatus.LOST,
    ExecutionStatus.SKIPPED,
)
P, U = Signal.PAUSED, Signal.UNRECORDED
POLICY = AlertPolicy(url="https://alerts.example/hook")


def outcome(status: ExecutionStatus | Signal, second: int, count: int = 1) -> Outcome:
    return Outcome(
        job_id="j",
        status=status,
        count=count,
        scheduled_at=T0 + timedelta(seconds=second),
        execution_id=f"e{second}",
    )


def kinds(statuses: list[ExecutionStatus | Signal], **policy: object) -> list[AlertKind | None]:
    state, told = NO_STATE, []
    for second, status in enumerate(statuses):
        state, kind = transition(state, outcome(status, second), AlertPolicy(**policy), T0)  # type: ignore[arg-type]
        told.append(kind)
    return told


@pytest.mark.parametrize(
    ("statuses", "policy", "expected"),
    [
        ([F, F, F], {}, [AlertKind.FAILING, None, None]),
        ([F, F, F], {"after": 3}, [None, None, AlertKind.FAILING]),
        ([F, S, F, F], {"after": 2}, [None, None, None, AlertKind.FAILING]),
        ([M, L, F], {"after": 3}, [None, None, AlertKind.FAILING]),
        ([F, K, F], {"after": 2}, [None, None, AlertKind.FAILING]),
        ([F, S, S], {}, [AlertKind.FAILING, AlertKind.RECOVERED, None]),
        ([F, S, F], {"on_recovery": False}, [AlertKind.FAILING, None, AlertKind.FAILING]),
        ([S, S], {}, [None, None]),
        ([K, K], {}, [None, None]),
        ([P, P], {}, [AlertKind.PAUSED, AlertKind.PAUSED]),
        ([U, U, F, U], {"after": 2}, [AlertKind.UNRECORDED, None, None, AlertKind.UNRECORDED]),
        ([F, U, S], {}, [AlertKind.FAILING, AlertKind.UNRECORDED, AlertKind.RECOVERED]),
    ],
)
def test_transitions_alert_once_per_state_change(
    statuses: list[ExecutionStatus | Signal], policy: dict[str, object], expected: list[object]
) -> None:
    assert kinds(statuses, url="https://a.example/", **policy) == expected


def test_a_batch_of_missed_ticks_counts_each_towards_the_streak() -> None:
    policy = AlertPolicy(url="https://a.example/", after=3)
    state, kind = transition(NO_STATE, outcome(M, 5, count=3), policy, T0)
    assert kind is AlertKind.FAILING
    assert state.streak == 3


def test_an_older_success_or_the_same_outcome_again_changes_nothing() -> None:
    state, _ = transition(NO_STATE, outcome(F, 5), POLICY, T0)
    assert transition(state, outcome(S, 4), POLICY, T0) == (state, None)
    assert transition(state, outcome(F, 5), POLICY, T0) == (state, None)


def test_an_older_failure_counts_only_towards_an_unbroken_run_of_failures() -> None:
    policy = AlertPolicy(url="https://a.example/", after=3)
    failed, _ = transition(NO_STATE, outcome(F, 5), policy, T0)
    older, kind = transition(failed, outcome(L, 4), policy, T0)
    assert (older.streak, older.last_at, kind) == (2, failed.last_at, None)
    assert transition(older, outcome(F, 3), policy, T0)[1] is AlertKind.FAILING
    succeeded, _ = transition(failed, outcome(S, 6), policy, T0)
    assert transition(succeeded, outcome(F, 4), policy, T0) == (succeeded, None)


def test_a_skipped_run_leaves_the_state_itself() -> None:
    state = AlertState(alerting=True, streak=2, version=4)
    assert transition(state, outcome(K, 1), POLICY, T0)[0] is state


def test_apply_outcomes_bumps_the_version_once_and_numbers_the_changes() -> None:
    step = AlertStep(job_id="j", policy=POLICY, outcomes=(outcome(F, 1), outcome(S, 2)))
    state, changes = apply_outcomes(AlertState(version=7), step, T0)
    assert state.version == 8
    assert [(c.kind, c.before.alerting, c.after.alerting) for c in changes] == [
        (AlertKind.FAILING, False, True),
        (AlertKind.RECOVERED, True, False),
    ]
    assert {c.after.version for c in changes} == {8}
    assert changes[0].alert_id != changes[1].alert_id


def test_apply_outcomes_that_change_nothing_return_the_state_itself() -> None:
    state = AlertState(version=3)
    step = AlertStep(job_id="j", policy=POLICY, outcomes=(outcome(K, 1),))
    assert apply_outcomes(state, step, T0) == (state, [])


def test_outcomes_are_put_in_tick_order_signals_staying_after_their_run() -> None:
    late, early, signal = outcome(F, 9), outcome(S, 3), Outcome(job_id="j", status=P)
    assert in_tick_order([late, signal, early]) == [early, late, signal]


def test_a_step_retried_after_its_write_landed_counts_once_and_tells_its_alerts_again() -> None:
    policy = AlertPolicy(url="https://alerts.example/hook", after=2)
    step = AlertStep(job_id="j", policy=policy, outcomes=(outcome(F, 1), outcome(F, 2)))
    landed, sent = apply_outcomes(NO_STATE, step, T0)
    assert [change.kind for change in sent] == [AlertKind.FAILING]

    # The write landed, its answer was lost: the same outcomes come again,
    # with one gathered since.
    retried = AlertStep(job_id="j", policy=policy, outcomes=(*step.outcomes, outcome(F, 3)))
    after, told = apply_outcomes(landed, retried, T0)
    assert [change.alert_id for change in told] == [change.alert_id for change in sent]
    assert after.streak == 3 and after.version == landed.version + 1

    # The same outcomes alone: nothing to write, the alert told again.
    same, told_again = apply_outcomes(landed, step, T0)
    assert same is landed
    assert [change.alert_id for change in told_again] == [change.alert_id for change in sent]


def test_outcomes_another_writer_applied_do_not_pass_for_a_retry() -> None:
    policy = AlertPolicy(url="https://alerts.example/hook", after=2)
    first = AlertStep(job_id="j", policy=policy, outcomes=(outcome(F, 1),))
    stored, _ = apply_outcomes(NO_STATE, first, T0)
    # Another instance's outcome for a later tick: a fold of its own.
    other = AlertStep(job_id="j", policy=policy, outcomes=(outcome(F, 2),))
    after, told = apply_outcomes(stored, other, T0)
    assert after.streak == 2 and [change.kind for change in told] == [AlertKind.FAILING]
    assert told[0].after.version == stored.version + 1
