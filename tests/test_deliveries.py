"""The run path's sends through `Deliveries`, against a real SQLite store, a
real dispatcher and a real webhook receiver: runs made ready ahead of their
tick go out together when sent, the ones left out never; a run replaced
before its send is not sent."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from cronsvc.coord.local import LocalCoordinator
from cronsvc.deliveries import Deliveries
from cronsvc.dispatch import Dispatcher
from cronsvc.domain import Execution, Job
from cronsvc.metrics import Metrics
from cronsvc.notices import Notices
from cronsvc.store import Store
from tests.fakes import Receiver
from tests.helpers_dispatch import run_path_deliveries
from tests.helpers_store import claimed, create


@dataclass
class Sending:
    deliveries: Deliveries
    dispatcher: Dispatcher
    metrics: Metrics


@pytest.fixture
async def sending(store: Store) -> AsyncIterator[Sending]:
    metrics = Metrics()
    notices = Notices(coordinator=LocalCoordinator(lock_path=None), metrics=metrics)
    async with run_path_deliveries(store, notices, metrics) as (deliveries, dispatcher):
        yield Sending(deliveries=deliveries, dispatcher=dispatcher, metrics=metrics)


async def claimed_runs(store: Store, receiver: Receiver, count: int) -> list[tuple[Job, Execution]]:
    runs = []
    for n in range(count):
        job = await create(store, f"job{n}", webhook_url=receiver.url)
        runs.append((job, await claimed(store, job, job.created_at)))
    return runs


async def test_runs_made_ready_all_go_out_before_any_of_their_tasks_runs(
    sending: Sending, store: Store, receiver: Receiver
) -> None:
    runs = await claimed_runs(store, receiver, 3)
    ready = sending.deliveries.ready(runs, time.time())

    sending.deliveries.start_all(ready, [execution for _, execution in runs])

    # Nothing awaited yet: every first request holds its slot, sent (or
    # queued on a connection being opened), and no delivery task has begun.
    assert sending.dispatcher.in_flight == 3
    assert not any(sending.deliveries.running(execution.id) for _, execution in runs)
    seen = await receiver.wait_for(3)
    assert sorted(r.headers["webhook-id"] for r in seen) == sorted(e.id for _, e in runs)


async def test_runs_made_ready_but_left_out_of_the_send_are_never_sent(
    sending: Sending, store: Store, receiver: Receiver
) -> None:
    runs = await claimed_runs(store, receiver, 3)
    ready = sending.deliveries.ready(runs, time.time())
    (_, kept), *_ = runs

    sending.deliveries.start_all(ready, [kept])

    assert sending.dispatcher.in_flight == 1
    await sending.deliveries.drain(5.0)
    assert [r.headers["webhook-id"] for r in receiver.requests] == [kept.id]


async def test_a_run_replaced_before_its_send_is_not_sent(
    sending: Sending, store: Store, receiver: Receiver
) -> None:
    runs = await claimed_runs(store, receiver, 2)
    ready = sending.deliveries.ready(runs, time.time())
    (_, replaced), (_, kept) = runs
    sending.deliveries.cancel_replaced([replaced.id])

    sending.deliveries.start_all(ready, [replaced, kept])

    assert sending.dispatcher.in_flight == 1
    await sending.deliveries.drain(5.0)
    assert [r.headers["webhook-id"] for r in receiver.requests] == [kept.id]
    assert sending.metrics.get("cronsvc_replaced_runs_aborted_total") == 1
