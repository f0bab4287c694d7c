"""What a failing target asks of its job, heeded against a real SQLite store
with a clock the test sets: 410 Gone pauses the job (only at the version the
run saw) and tells this instance's scheduler and every other instance; a
Retry-After holds back the ticks that fall inside it, at most
`webhook.max_defer_s`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from cronsvc.coord.local import LocalCoordinator
from cronsvc.dispatch import DeliveryResult
from cronsvc.domain import ErrorInfo, Execution, ExecutionStatus, Job, Trigger
from cronsvc.feedback import TargetFeedback
from cronsvc.ids import new_id
from cronsvc.metrics import Metrics
from cronsvc.notices import Notices
from cronsvc.store import Store
from cronsvc.ticks import HandBack
from tests.fakes import FakeClock
from tests.helpers_store import create, make_spec

NOW = datetime(2030, 6, 1, tzinfo=UTC)
MAX_DEFER_S = 3600.0


@dataclass
class Heeding:
    feedback: TargetFeedback
    clock: FakeClock
    handback: HandBack
    metrics: Metrics
    heard: list[str]
    """Job-change notices every instance heard."""


@pytest.fixture
def heeding(store: Store) -> Heeding:
    clock = FakeClock()
    clock.advance((NOW - clock.now()).total_seconds())  # now is NOW, give or take a few µs
    coordinator = LocalCoordinator(lock_path=None)
    heard: list[str] = []
    coordinator.subscribe_job_changes(heard.append)
    metrics = Metrics()
    handback = HandBack()
    return Heeding(
        feedback=TargetFeedback(
            store=store,
            clock=clock,
            metrics=metrics,
            notices=Notices(coordinator=coordinator, metrics=metrics),
            handback=handback,
            max_defer_s=MAX_DEFER_S,
        ),
        clock=clock,
        handback=handback,
        metrics=metrics,
        heard=heard,
    )


def failed_run(job: Job, scheduled_at: datetime) -> Execution:
    return Execution(
        id=new_id(),
        job_id=job.id,
        job_name=job.spec.name,
        trigger=Trigger.SCHEDULE,
        scheduled_at=scheduled_at,
        status=ExecutionStatus.FAILURE,
        instance_id="instance-a",
        executed_at=scheduled_at,
        finished_at=scheduled_at,
        attempts=1,
        error=ErrorInfo(type="http_status", message="HTTP 410"),
    )


def answer(status: int, *, retry_after_s: float | None = None) -> DeliveryResult:
    return DeliveryResult(
        status=ExecutionStatus.FAILURE,
        attempts=1,
        executed_at=NOW,
        first_sent_at=NOW.timestamp(),
        finished_at=NOW,
        duration_ms=5,
        response_status=status,
        response_body=None,
        response_truncated=False,
        error=ErrorInfo(type="http_status", message=f"HTTP {status}"),
        retry_after_s=retry_after_s,
        attempt_log=(),
    )


async def test_a_410_pauses_the_job_and_tells_every_instance(
    heeding: Heeding, store: Store
) -> None:
    job = await create(store)
    run = failed_run(job, NOW)

    recorded = await heeding.feedback.heed(job, run, answer(410))

    paused = await store.get_job(job.id)
    assert not paused.spec.is_active and paused.version == job.version + 1
    assert paused.paused_reason is not None
    assert paused.paused_reason.startswith("the webhook target answered 410 Gone at 2030-06-01T")
    assert recorded.error == ErrorInfo(
        type="target_gone", message="HTTP 410 Gone: the job was paused"
    )
    assert heeding.handback.take() == ([], [job.id])  # this instance's scheduler drops it
    assert heeding.heard == [job.id]  # and every other instance's
    assert heeding.metrics.get("cronsvc_jobs_paused_by_target_total") == 1


async def test_a_410_leaves_a_job_changed_since_its_run_alone(
    heeding: Heeding, store: Store
) -> None:
    job = await create(store)
    await store.update_job(job.id, make_spec(cron_expression="*/5 * * * *"), now=NOW)
    run = failed_run(job, NOW)

    recorded = await heeding.feedback.heed(job, run, answer(410))

    assert (await store.get_job(job.id)).spec.is_active
    assert recorded == run
    assert heeding.handback.take() == ([], [])
    assert heeding.heard == []
    assert heeding.metrics.get("cronsvc_jobs_paused_by_target_total") == 0


@pytest.mark.parametrize(
    ("cron", "retry_after_s", "deferred_s"),
    [
        ("* * * * *", 120.0, 120.0),  # the next tick falls inside: held back
        ("* * * * *", 86_400.0, MAX_DEFER_S),  # at most max_defer_s
        ("0 * * * *", 30.0, None),  # the next tick is after it: nothing to hold back
    ],
)
async def test_a_retry_after_holds_back_the_ticks_inside_it(
    heeding: Heeding, store: Store, cron: str, retry_after_s: float, deferred_s: float | None
) -> None:
    job = await create(store, cron_expression=cron)
    run = failed_run(job, NOW)

    before = heeding.clock.now()
    recorded = await heeding.feedback.heed(job, run, answer(503, retry_after_s=retry_after_s))
    after = heeding.clock.now()

    stored = await store.get_job(job.id)
    if deferred_s is None:
        assert stored.deferred_until is None
    else:
        assert stored.deferred_until is not None
        held_from = stored.deferred_until - timedelta(seconds=deferred_s)
        assert before <= held_from <= after  # from when the answer was heeded
    assert stored.version == job.version and stored.spec.is_active
    assert recorded == run
    assert heeding.handback.take() == ([], []) and heeding.heard == []
