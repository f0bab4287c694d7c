"""Which alert policy applies to a job: `cronsvc.alertpolicy.effective_policy`."""

from __future__ import annotations

import pytest

from cronsvc.alertpolicy import effective_policy
from cronsvc.config import AlertsConfig
from cronsvc.domain import AlertFormat, AlertPolicy
from tests.helpers_store import make_spec

OWN = AlertPolicy(url="https://own.example.com/", after=4, format=AlertFormat.SLACK, secret="s")
DEFAULT = AlertsConfig(
    url="https://default.example.com/",
    after=2,
    on_recovery=False,
    format="slack",
    secret="whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB",
)
AS_POLICY = AlertPolicy(
    url="https://default.example.com/", after=2, on_recovery=False, format=AlertFormat.SLACK
)
NO_DEFAULT = AlertsConfig()


@pytest.mark.parametrize(
    ("own", "default", "expected"),
    [
        pytest.param(OWN, DEFAULT, OWN, id="own-wins-over-the-default"),
        pytest.param(OWN, NO_DEFAULT, OWN, id="own-without-a-default"),
        pytest.param(AlertPolicy(enabled=False), DEFAULT, None, id="own-off-despite-a-default"),
        pytest.param(AlertPolicy(enabled=False), NO_DEFAULT, None, id="own-off-no-default"),
        pytest.param(None, DEFAULT, AS_POLICY, id="none-follows-the-default"),
        pytest.param(None, NO_DEFAULT, None, id="none-and-no-default-url"),
    ],
)
def test_the_policy_that_applies_is_the_jobs_own_else_the_default(
    own: AlertPolicy | None, default: AlertsConfig, expected: AlertPolicy | None
) -> None:
    assert effective_policy(make_spec(alerts=own), default) == expected


def test_the_default_as_a_policy_leaves_signing_to_the_engine() -> None:
    policy = effective_policy(make_spec(), DEFAULT)

    assert policy is not None and policy.secret is None
    assert type(policy.format) is AlertFormat
