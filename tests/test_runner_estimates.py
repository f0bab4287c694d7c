"""How far ahead of its tick a batch is claimed: the running estimate of a
lease and claim, as a pure function over a table of batches."""

from __future__ import annotations

import pytest

from cronsvc.runner import next_claim_estimate


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
