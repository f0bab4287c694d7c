"""Which alert policy applies to a job: its own, or the service's `[alerts]`
default. Pure; the alert engine asks it for every job it watches."""

from __future__ import annotations

from cronsvc.config import AlertsConfig
from cronsvc.domain import AlertFormat, AlertPolicy, JobSpec


def effective_policy(spec: JobSpec, default: AlertsConfig) -> AlertPolicy | None:
    """The policy `spec`'s job alerts by; None when it sends no alerts.

    A job's own policy wins whole, fields it leaves at their defaults
    included: the two are not merged, so what a job says is all there is to
    read. Its own `enabled=False` turns alerts off even with a default. A job
    without one follows the default, if `default.url` is set. The default's
    secret is not copied: a policy's secret is the job's choice, and the
    engine signs with the job's secret, else `[alerts] secret`, when the
    policy has none."""
    own = spec.alerts
    if own is not None:
        return own if own.enabled else None
    if not default.url:
        return None
    return AlertPolicy(
        url=default.url,
        after=default.after,
        on_recovery=default.on_recovery,
        format=AlertFormat(default.format),
    )
