"""How far ahead of its tick a batch is claimed: the running estimate of a
lease and claim, as a pure function over a table of batches."""

from __future__ import annotations

import pytest

from cronsvc.claims import (
    FIRST_CLAIMER_SHARE,
    MAX_CLAIM_LEAD_S,
    MIN_LEASE_PATIENCE_S,
    claim_lead_s,
    next_claim_estimate,
    next_lease_share,
    next_unfenced_estimate,
)
from cronsvc.jobsync import SteadyLead


@pytest.mark.parametrize(
    ("current", "sample", "expected"),
    [
        (0.005, 0.005, 0.005),  # steady
        (0.010, 0.005, 0.009),  # faster: follows down
        (0.005, 0.010, 0.006),  # a little slower: follows up
        (0.005, 20.0, 0.016),  # one 20-s stall moves it to a little over double at most
        (0.5, 20.0, 0.61),
    ],
)
def test_one_slow_batch_moves_the_claim_estimate_to_a_little_over_double_at_most(
    current: float, sample: float, expected: float
) -> None:
    assert next_claim_estimate(current, sample) == pytest.approx(expected)


def test_a_store_that_stays_slow_raises_the_estimate_batch_by_batch() -> None:
    estimate = 0.005
    for _ in range(30):
        estimate = next_claim_estimate(estimate, 1.0)
    assert estimate == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize(
    ("configured", "claim", "mark", "expected"),
    [
        (0.0, 1.0, 1.0, 0.0),  # 0 keeps every claim at its tick, however slow the store
        (0.2, 0.005, 0.005, 0.2),  # a fast store: as configured
        # a slow one: room for a lease wait, then twice the claim and the mark
        (0.2, 0.15, 0.02, MIN_LEASE_PATIENCE_S + 0.34),
        (0.2, 10.0, 1.0, MAX_CLAIM_LEAD_S),
    ],
)
def test_the_claim_lead_leaves_room_for_a_lease_wait_and_twice_the_claim_and_mark(
    configured: float, claim: float, mark: float, expected: float
) -> None:
    assert claim_lead_s(configured, claim, mark) == pytest.approx(expected)


def test_the_unfenced_estimate_starts_from_its_first_claim_and_follows_each_by_half() -> None:
    first = next_unfenced_estimate(None, 0.4)
    assert first == pytest.approx(0.4)
    assert next_unfenced_estimate(first, 0.2) == pytest.approx(0.3)
    assert next_unfenced_estimate(first, 2.0) == pytest.approx(1.2)  # no cap: a stall is here


@pytest.mark.parametrize(
    ("current", "won", "asked", "expected"),
    [
        (1.0, 0, 0, 1.0),  # nothing asked: no news
        (1.0, 0, 30, 0.8),  # lost a batch
        (0.0, 30, 30, 0.2),  # won one
        (0.5, 1, 2, 0.5),
    ],
)
def test_the_lease_share_follows_the_batches_won_a_fifth_at_a_time(
    current: float, won: int, asked: int, expected: float
) -> None:
    assert next_lease_share(current, won, asked) == pytest.approx(expected)


def test_an_instance_that_keeps_losing_its_leases_falls_below_the_first_claimers_share() -> None:
    share = 1.0
    batches = 0
    while share >= FIRST_CLAIMER_SHARE:
        share = next_lease_share(share, 0, 30)
        batches += 1
    assert batches == 7  # seven seconds of every-second jobs lost to another instance


@pytest.mark.parametrize(
    ("asked", "expected"),
    [
        ([0.0, 0.0], 0.0),  # no lead: every claim at its tick
        ([0.2], 0.2),  # a whole step stays as asked
        ([0.21], 0.3),  # otherwise the step above, never less than asked
        ([0.21, 0.2, 0.26, 0.29, 0.3], 0.3),  # drifting within a step: one lead
        ([0.31, 0.29, 0.26], 0.4),  # just below a step it rose to: kept
        ([0.31, 0.24], 0.3),  # half a step below the next step down: falls
        ([0.31, 0.12], 0.2),
        ([0.2, 4.96], 5.0),  # rises at once, however far
    ],
)
def test_the_lead_moves_in_whole_steps_rising_at_once_and_falling_past_half_a_step(
    asked: list[float], expected: float
) -> None:
    lead = SteadyLead()
    followed = [lead.follow(a) for a in asked]
    assert all(f >= a for f, a in zip(followed, asked, strict=True))
    assert followed[-1] == pytest.approx(expected)
