"""Write-behind for execution results (and, through `Drain`, for alerts): batches off
the firing path that wait out a store outage. A result that does not fit the bounded
buffer, is unwritten when shutdown gives up, or whose run was already final (LOST, or
ended by `replace`) is counted and logged, never dropped quietly.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import structlog

from cronsvc.clock import Clock
from cronsvc.domain import Execution, ExecutionStatus
from cronsvc.metrics import Metrics
from cronsvc.retry import TRANSIENT, backoff_delay
from cronsvc.store import FinishReport, ResultSink

log = structlog.get_logger(__name__)

MAX_BATCH = 500
LINGER_S = 0.05
"""A batch is written once no result has come for this long ..."""
MAX_LINGER_S = 0.5
"""... or this long after its first: one write after a burst costs the event loop
less than many during it (the store's thread holds the interpreter)."""


T = TypeVar("T")


@dataclass(eq=False, repr=False, kw_only=True, slots=True)
class Drain(Generic[T]):
    """A buffer one background task empties in batches, for the result writer and the
    alert engine: a batch not taken is retried with backoff; after `stop`, what is left
    when trying ends goes to `give_up`, so nothing is dropped quietly. Bounding the
    buffer is the owner's part."""

    clock: Clock
    flush: Callable[[list[T]], Awaitable[bool]]
    """False to keep the batch and try again."""
    give_up: Callable[[list[T]], None]
    linger: Callable[[], Awaitable[None]]
    """Waits for a batch to gather after its first item."""
    batch: int
    items: list[T] = field(default_factory=list, init=False)
    """Oldest first; only the task takes items out."""
    failures: int = field(default=0, init=False)
    """In a row."""
    stopping: bool = field(default=False, init=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    def put(self, item: T) -> None:
        self.items.append(item)
        self._wake.set()

    def stop(self) -> None:
        self.stopping = True
        self._wake.set()

    async def run(self, give_up_after_s: float) -> None:
        """After `stop`, tries for at most `give_up_after_s`."""
        deadline: float | None = None
        while True:
            await self._wake.wait()
            if not self.stopping:
                await self.linger()
            self._wake.clear()
            if self.stopping and deadline is None:
                deadline = self.clock.monotonic() + give_up_after_s
            while self.items:
                if deadline is not None and self.clock.monotonic() > deadline:
                    left, self.items = self.items, []
                    self.give_up(left)
                    break
                batch = self.items[: self.batch]
                if await self.flush(batch):
                    self.failures = 0
                    del self.items[: len(batch)]
                    continue
                self.failures += 1
                delay = backoff_delay(self.failures, 0.2, 5.0)
                if deadline is not None:
                    delay = min(delay, max(0.0, deadline - self.clock.monotonic()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                self._wake.clear()
            if self.stopping and not self.items:
                return


class ResultObserver(Protocol):
    """Told what became of each result (`cronsvc.alertwatch.AlertWatch`)."""

    def written(self, batch: Sequence[Execution], report: FinishReport) -> None: ...

    def dropped(self, executions: Iterable[Execution]) -> None: ...


class ResultWriter:
    def __init__(
        self,
        *,
        store: ResultSink,
        clock: Clock,
        metrics: Metrics,
        max_pending: int = 100_000,
        observer: ResultObserver | None = None,
    ) -> None:
        self._store = store
        self._observer = observer
        self._clock = clock
        self._metrics = metrics
        self._max_pending = max_pending
        self._drain = Drain[Execution](
            clock=clock,
            flush=self._write_batch,
            give_up=lambda left: self._dropped(left, "shutdown"),
            linger=self._linger,
            batch=MAX_BATCH,
        )
        self._overflow = 0
        metrics.gauge(
            "cronsvc_results_pending",
            "Execution results not yet written",
            lambda: len(self._drain.items),
        )

    @property
    def pending(self) -> int:
        return len(self._drain.items)

    def submit(self, execution: Execution) -> None:
        if len(self._drain.items) >= self._max_pending:
            # Counted one by one, logged once when an overflow begins and once
            # when it ends: a line per drop would cost the CPU that is short.
            if not self._overflow:
                self._dropped([execution], "buffer_full")
            else:
                self._metrics.inc("cronsvc_log_writes_dropped_total", reason="buffer_full")
                if self._observer is not None:
                    self._observer.dropped([execution])
            self._overflow += 1
            return
        if self._overflow:
            log.error("execution_results_dropped_overflow_ended", count=self._overflow)
            self._overflow = 0
        self._drain.put(execution)

    def stop(self) -> None:
        self._drain.stop()

    async def run(self, give_up_after_s: float = 10.0) -> None:
        await self._drain.run(give_up_after_s)

    async def _linger(self) -> None:
        waited = 0.0
        while waited < MAX_LINGER_S and not self._drain.stopping:
            # Only this task takes results out: the length grows exactly when some come.
            seen = len(self._drain.items)
            await self._clock.sleep(LINGER_S)
            waited += LINGER_S
            if len(self._drain.items) == seen:
                return

    async def _write_batch(self, batch: list[Execution]) -> bool:
        try:
            report = await self._store.finish_executions(batch)
        except TRANSIENT as exc:
            self._metrics.inc("cronsvc_store_errors_total", op="finish")
            self._metrics.inc("cronsvc_log_writes_delayed_total", len(batch))
            if not self._drain.failures:  # once per outage, not per attempt
                log.error("results_delayed", pending=len(self._drain.items), error=str(exc))
            return False
        if self._drain.failures:
            log.info("results_resumed", after_failures=self._drain.failures)
        if self._observer is not None:
            self._observer.written(batch, report)
        for execution_id in report.missing:
            log.warning("execution_log_deleted_while_running", execution_id=execution_id)
        if report.already_final:
            self._late(batch, report.already_final)
        return True

    def _late(
        self, batch: list[Execution], already_final: tuple[tuple[str, ExecutionStatus], ...]
    ) -> None:
        """Logged once per batch: a reaped instance can bring back thousands at once."""
        by_status = collections.Counter(status for _, status in already_final)
        for status, count in by_status.items():
            self._metrics.inc("cronsvc_late_results_total", count, stored_status=status.value)
        results = {execution.id: execution for execution in batch}
        log.warning(
            "late_result_ignored",
            count=len(already_final),
            executions=[
                {
                    "execution_id": execution_id,
                    "job_id": results[execution_id].job_id,
                    "stored_status": status.value,
                    "status": results[execution_id].status.value,
                }
                for execution_id, status in already_final[:20]
            ],
        )

    def _dropped(self, executions: list[Execution], reason: str) -> None:
        self._metrics.inc("cronsvc_log_writes_dropped_total", len(executions), reason=reason)
        if self._observer is not None:
            self._observer.dropped(executions)
        log.error(
            "execution_results_dropped",
            count=len(executions),
            reason=reason,
            execution_ids=[e.id for e in executions[:20]],
        )
