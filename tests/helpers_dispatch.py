"""What the dispatcher and HTTP client tests build with: a webhook request to
any URL, the SSRF policy that lets them reach receivers on loopback, and the
run path's deliveries on a real dispatcher."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from cronsvc.clock import SystemClock
from cronsvc.deliveries import Deliveries
from cronsvc.dispatch import Dispatcher
from cronsvc.domain import HttpMethod, RetryPolicy, Trigger
from cronsvc.feedback import TargetFeedback
from cronsvc.metrics import Metrics
from cronsvc.netguard import TargetPolicy
from cronsvc.notices import Notices
from cronsvc.results import ResultWriter
from cronsvc.store import Store
from cronsvc.ticks import HandBack
from cronsvc.webhook_request import WebhookRequest

SCHEDULED_AT = datetime(2026, 1, 1, tzinfo=UTC)
OPEN = TargetPolicy(allow_private=True)
"""The receivers in tests listen on loopback addresses: most tests open the SSRF guard."""
MakeDispatcher = Callable[..., Awaitable[Dispatcher]]
"""The `make_dispatcher` fixture (tests/conftest.py): keywords go to `Dispatcher`."""


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


@asynccontextmanager
async def run_path_deliveries(
    store: Store, notices: Notices, metrics: Metrics
) -> AsyncIterator[tuple[Deliveries, Dispatcher]]:
    """The run path's deliveries on a real dispatcher (open to loopback),
    writing results to `store`; drained and closed on the way out."""
    clock = SystemClock()
    dispatcher = Dispatcher(
        max_concurrency=8, max_response_bytes=1024, clock=clock, target_policy=OPEN
    )
    await dispatcher.start()
    feedback = TargetFeedback(
        store=store,
        clock=clock,
        metrics=metrics,
        notices=notices,
        handback=HandBack(),
        max_defer_s=60.0,
    )
    deliveries = Deliveries(
        dispatcher=dispatcher,
        results=ResultWriter(store=store, clock=clock, metrics=metrics),
        feedback=feedback,
        notices=notices,
        clock=clock,
        metrics=metrics,
    )
    try:
        yield deliveries, dispatcher
    finally:
        await deliveries.drain(5.0)
        await dispatcher.aclose()
