"""What the dispatcher and HTTP client tests build with: a webhook request to
any URL, and the SSRF policy that lets them reach receivers on loopback."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cronsvc.domain import HttpMethod, RetryPolicy, Trigger
from cronsvc.netguard import TargetPolicy
from cronsvc.webhook_request import WebhookRequest

SCHEDULED_AT = datetime(2026, 1, 1, tzinfo=UTC)
OPEN = TargetPolicy(allow_private=True)
"""The receivers in tests listen on loopback addresses: most tests open the SSRF guard."""


def webhook(url: str, **changes: Any) -> WebhookRequest:
    """A POST of the default body to `url`, tried once, with `changes` applied."""
    fields: dict[str, Any] = {
        "execution_id": "exec-0001",
        "job_id": "job-0001",
        "job_name": "nightly report",
        "scheduled_at": SCHEDULED_AT,
        "trigger": Trigger.SCHEDULE,
        "url": url,
        "method": HttpMethod.POST,
        "headers": {},
        "body": None,
        "timeout_s": 5.0,
        "retry": RetryPolicy(max_attempts=1),
    }
    fields.update(changes)
    return WebhookRequest(**fields)
