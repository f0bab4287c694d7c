"""The run path of one tick: lease, claim, dispatch, record.

Shared by the scheduler (scheduled and catch-up ticks) and the API (manual
runs). It never decides *when* to fire; the scheduler does.

Under `concurrencyPolicy` `replace` the store's claim ends the job's running
executions itself; the runner then has their webhook requests aborted
wherever they run, through a cancel notice to every instance (this one
included). An instance that hears one cancels the delivery and writes
nothing: the store already holds the final record. A notice that never
arrives leaves the old request to run to its end; its result is then
ignored by the store.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from cronsvc.clock import Clock
from cronsvc.coord import Coordinator
from cronsvc.cron import parse_schedule
from cronsvc.dispatch import DeliveryResult, Dispatcher, FirstSend, Prepared, WebhookRequest
from cronsvc.domain import ErrorInfo, Execution, ExecutionStatus, Job, Trigger
from cronsvc.errors import CronSvcError, JobNotFound
from cronsvc.health import Dependency, HealthMonitor
from cronsvc.ids import new_id
from cronsvc.instants import rfc3339
from cronsvc.metrics import Metrics
from cronsvc.misfire import MIN_GRACE_S, plan_due_ticks
from cronsvc.results import ResultWriter
from cronsvc.retry import TRANSIENT, retry_transient
from cronsvc.store import ClaimOutcome, ClaimResult, Store, TickClaim
from cronsvc.ticks import DueTick

log = structlog.get_logger(__name__)

_MAX_REMEMBERED_CANCELS = 10_000
"""Cancel notices are remembered (by execution id) up to this many, so a
notice that arrives before its delivery has started still stops it."""


MAX_CLAIM_LEAD_S = 5.0
CLAIM_PATIENCE_S = 2.0
"""How long a batch's claim may take, retries included, before its ticks
are handed back to the scheduler to be taken again once the store answers
(see `Scheduler.hold`). A healthy store answers a batch in milliseconds; an
unreachable one held each attempt for its server selection (5 s with
MongoDB), and the batch for ~20 s."""
STORE_POLL_S = 0.2
"""While the store is down, how often work waiting on it looks again."""
MAX_UNCERTAIN = 100_000
"""Claims whose fate is unknown (see `_uncertain`) remembered at most."""
UNCERTAIN_CHECKS = 3
"""How many times, a few seconds apart once the store answers, a claim whose
fate is unknown is looked for: a request sent before a stall may land only
when the store resumes."""
UNCERTAIN_CHECK_S = 3.0
UNCERTAIN_BATCH = 500
"""Unanswered claims looked up in one store call."""
MARK_PATIENCE_S = 0.25
"""How long after their tick claimed webhooks wait for the store to mark
them dispatched before they go out unmarked."""
ADOPT_ROUNDS = 20
"""Rounds of attempts to settle adopted ticks, each after the store answers
its probe again."""
LEASE_PATIENCE_S = 0.5
"""How long a batch waits for its leases at most before it goes on to the
store's claim without them and reports the coordinator down. A healthy Redis
answers a batch's pipeline in milliseconds; a stalled one would hold every
batch for its command timeout and retry (~4 s each). A batch taken ahead of
its tick waits less: only until its claim must start to land by the tick
(at least `MIN_LEASE_PATIENCE_S`), so the one batch a stall catches is not
sent late for it."""
MIN_LEASE_PATIENCE_S = 0.1
FIRST_CLAIMER_SHARE = 0.25
"""Without leases, an instance that won at least this share of its recent
leases claims a batch at once; one that won less claims it at its tick,
after the instances that usually win it (see `TickRunner._run_batch`)."""


def claim_lead_s(configured_s: float, claim_s: float, mark_s: float) -> float:
    """How long before its tick a batch is taken: at least `configured_s` (0
    keeps every claim at the tick), more when the store is slow: room for a
    lease wait that may end in the coordinator being taken for down
    (`MIN_LEASE_PATIENCE_S`), then twice the claim's and the dispatched
    mark's recent length, so both land by the tick (at most
    `MAX_CLAIM_LEAD_S`)."""
    if configured_s <= 0:
        return 0.0
    return min(MAX_CLAIM_LEAD_S, max(configured_s, MIN_LEASE_PATIENCE_S + 2 * (claim_s + mark_s)))


def next_unfenced_estimate(current_s: float | None, sample_s: float) -> float:
    """The running estimate of a claim made without leases, after one more
    took `sample_s`. Every instance then claims every tick, so it is slower
    than a leased one by about the number of instances; it follows each
    batch at once (half weight) because it is used only while leases are
    down, and a lead too short then sends a whole batch late."""
    return sample_s if current_s is None else 0.5 * (current_s + sample_s)


def next_lease_share(current: float, won: int, asked: int) -> float:
    """The running share of the leases this instance asked for that it won,
    after one more batch."""
    return current if asked == 0 else 0.8 * current + 0.2 * (won / asked)


def next_claim_estimate(current_s: float, sample_s: float) -> float:
    """The running estimate of a batch's lease and claim after one more
    batch took `sample_s`. One slow batch moves it at most to a little over
    double (a store that hiccups once must not push every claim seconds
    ahead); a store that stays slow raises it batch by batch."""
    return 0.8 * current_s + 0.2 * min(sample_s, 2 * current_s + 0.05)


@dataclass(slots=True)
class _Unanswered:
    execution: Execution
    """The record its claim would have written."""
    checks: int
    """Lookups left before it is taken as never written."""


class TickRunner:
    """Runs due ticks: the scheduler's `TickSink` (and the API's manual runs)."""

    def __init__(
        self,
        *,
        store: Store,
        coordinator: Coordinator,
        dispatcher: Dispatcher,
        results: ResultWriter,
        clock: Clock,
        metrics: Metrics,
        instance_id: str,
        lease_ttl_s: float,
        max_catchup: int,
        max_defer_s: float,
        on_stale: Callable[[str], None],
        on_held: Callable[[Sequence[DueTick]], None],
        health: HealthMonitor,
        initial_claim_s: float = 0.005,
    ) -> None:
        self._store = store
        self._coordinator = coordinator
        self._dispatcher = dispatcher
        self._results = results
        self._clock = clock
        self._metrics = metrics
        self._instance_id = instance_id
        self._lease_ttl_s = lease_ttl_s
        self._max_catchup = max_catchup
        self._max_defer_s = max_defer_s
        self._mark_s = 0.005
        """Recent length of the round trip that marks claims dispatched."""
        self._claim_s = initial_claim_s
        """Recent length of a batch's lease and claim; until measured, what
        the store usually takes."""
        self._unfenced_s: float | None = None
        """Recent length of a batch's claim made without leases (the
        coordinator down): the claim lead follows it while leases are down."""
        self._on_stale = on_stale
        self._on_held = on_held
        self._health = health
        self._tasks: set[asyncio.Task[None]] = set()
        self._deliveries: dict[str, asyncio.Task[Any]] = {}
        """Execution id -> the task sending its webhook, while it runs."""
        self._cancelled: dict[str, None] = {}
        """Execution ids named by cancel notices, oldest first (bounded)."""
        self._leases_down = False
        self._lease_share = 1.0
        """Recent share of the leases asked for that this instance won: with
        no history, as much as any instance."""
        self._held_ticks = 0
        """Ticks handed back to the scheduler since the store last answered a
        claim: non-zero during an outage (logged once at its start and end)."""
        self._won: dict[tuple[str, datetime], None] = {}
        """Leases this instance won for ticks it then handed back unclaimed:
        taken again, they are its own (a coordinator may refuse a lease
        twice, even to its holder)."""
        self._uncertain: collections.OrderedDict[str, _Unanswered] = collections.OrderedDict()
        """Claims sent whose answer never came, by execution id: they may
        have been written. Looked up once the store answers, so none is left
        RUNNING and never sent."""
        self._resolving: asyncio.Task[None] | None = None
        self._waiting_on_store = 0
        """Ticks whose claim is under way: more than a burst's worth only
        while the store is slow or unreachable."""
        metrics.gauge(
            "cronsvc_ticks_waiting_on_store",
            "Ticks whose claim is waiting on the store (retried while it is unreachable)",
            lambda: float(self._waiting_on_store),
        )

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def claim_lead(self, configured_s: float) -> float:
        """How long before its tick to take a tick (see `claim_lead_s`), from
        the claims made without leases while the coordinator is down."""
        claim_s = self._claim_s
        if self._leases_down and self._unfenced_s is not None:
            claim_s = max(claim_s, self._unfenced_s)
        return claim_lead_s(configured_s, claim_s, self._mark_s)

    def fire(self, due: Sequence[DueTick]) -> None:
        """Start the runs of ticks that fell due together, in the background:
        their leases and claims go out as one batch each."""
        self._spawn(self._run_batch(list(due)))

    async def trigger_now(self, job_id: str) -> Execution:
        """Run a job now (trigger `manual`), even if it is paused. Returns the
        execution as recorded when the run starts (RUNNING, or SKIPPED under
        `forbid`). Raises `JobNotFound`."""
        for _ in range(3):
            job = await self._store.get_job(job_id)
            (result,) = await self._store.claim_ticks(
                [self._claim(job, self._clock.now(), Trigger.MANUAL, dispatched=True)]
            )
            if result.outcome is ClaimOutcome.STALE:
                continue  # changed between read and claim: read it again
            assert result.execution is not None
            if result.outcome is ClaimOutcome.CLAIMED:
                self._replaced([result])
                self._start(job, result.execution)
            else:
                self._count(result.execution.status)
            return result.execution
        raise JobNotFound(job_id)

    def cancel_replaced(self, execution_ids: Sequence[str]) -> None:
        """A cancel notice: abort the deliveries of these executions if this
        instance runs them (or is about to), writing no result for them."""
        for execution_id in execution_ids:
            self._cancelled[execution_id] = None
            task = self._deliveries.get(execution_id)
            if task is not None and not task.done():
                task.cancel()
        while len(self._cancelled) > _MAX_REMEMBERED_CANCELS:
            del self._cancelled[next(iter(self._cancelled))]

    def _replaced(self, results: Sequence[ClaimResult]) -> None:
        """Have the runs that these claims ended (under `replace`) aborted,
        here at once and elsewhere by a cancel notice."""
        ids = [execution_id for result in results for execution_id in result.replaced]
        if not ids:
            return
        self._metrics.inc("cronsvc_runs_replaced_total", len(ids))
        self._metrics.inc("cronsvc_executions_total", len(ids), status="FAILURE")
        for result in results:
            if result.replaced:
                assert result.execution is not None
                log.info(
                    "runs_replaced",
                    job_id=result.execution.job_id,
                    execution_id=result.execution.id,
                    replaced=list(result.replaced),
                )
        self.cancel_replaced(ids)
        self._spawn(self._publish_cancel(ids))

    async def _publish_cancel(self, execution_ids: list[str]) -> None:
        try:
            await self._coordinator.publish_cancel(execution_ids)
        except TRANSIENT as exc:
            # The replaced runs are already recorded; elsewhere they run on
            # to their end, and their results are ignored.
            self._metrics.inc("cronsvc_coordinator_errors_total", op="cancel")
            log.warning("cancel_notice_failed", execution_ids=execution_ids[:20], error=str(exc))

    async def drain(self, grace_s: float) -> None:
        """Let runs in flight finish for up to `grace_s`, then cancel the rest
        (each cancelled run is recorded as a FAILURE, never left RUNNING)."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("runs_cancelled_at_shutdown", count=len(pending))
            await asyncio.gather(*pending, return_exceptions=True)

    def _spawn(self, coro: asyncio._CoroutineLike[None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._metrics.inc("cronsvc_run_errors_total")
            log.error("run_crashed", exc_info=task.exception())

    def adopt(self, executions: Sequence[Execution]) -> None:
        """Take over ticks another instance claimed ahead but never sent (it
        died or stopped first): each is sent now, late, or recorded MISSED or
        SKIPPED as its job's misfire policy and current state say."""
        by_tick: dict[datetime, list[Execution]] = {}
        for execution in executions:
            by_tick.setdefault(execution.scheduled_at, []).append(execution)
        for group in by_tick.values():
            self._spawn(self._run_adopted(group))

    def _claim(self, job: Job, tick: datetime, trigger: Trigger, *, dispatched: bool) -> TickClaim:
        return TickClaim(
            job_id=job.id,
            expected_version=job.version,
            scheduled_at=tick,
            trigger=trigger,
            execution_id=new_id(),
            instance_id=self._instance_id,
            executed_at=self._clock.now(),
            dispatched=dispatched,
        )

    async def _run_batch(self, due: list[DueTick]) -> None:
        """Lease and claim a batch of ticks due at one instant, then fire them
        at that instant. The scheduler may hand a batch over a little ahead of
        its tick, so the claims are written before the tick, not on its
        critical path; what changed in between is checked at the tick."""
        started = self._clock.time()
        fire_at = max(d.tick for d in due).timestamp()
        if not self._health.is_up(Dependency.STORE):
            self._hold(due, "the store is not answering its probe")
            return
        patience = min(
            LEASE_PATIENCE_S,
            max(MIN_LEASE_PATIENCE_S, fire_at - started - 2 * (self._claim_s + self._mark_s)),
        )
        leased, fenced = await self._lease(due, patience)
        if not leased:
            return
        if not fenced and self._lease_share < FIRST_CLAIMER_SHARE:
            # Without leases every instance claims every tick, and the store
            # answers the claims one after the other: sent together, the
            # batch goes out late. The instances that usually win a batch's
            # leases claim it at once; this one, which usually loses them,
            # claims at the tick and wins only what they did not claim (one
            # died, or is held up).
            await self._until(fire_at)
        await self._claim_and_fire(leased, fire_at, started, fenced)

    async def _claim_and_fire(
        self, leased: list[DueTick], fire_at: float, started: float, fenced: bool
    ) -> None:
        """Claim `leased` (ticks due at `fire_at`) and fire what was claimed at
        `fire_at`; `started` is when the batch began, for the claim estimate;
        `fenced`: whether leases kept the other instances from claiming the
        same ticks."""
        claim_started = self._clock.time()
        # Claimed ahead of the tick, a record says "not sent yet" until just
        # before the send: if this instance dies in between, another adopts it.
        ahead = fire_at > self._clock.time()
        claims = [self._claim(d.job, d.tick, d.trigger, dispatched=not ahead) for d in leased]
        attempts = 0

        async def claim() -> list[ClaimResult]:
            nonlocal attempts
            attempts += 1
            try:
                return await self._store.claim_ticks(claims)
            except TRANSIENT:
                self._metrics.inc("cronsvc_store_errors_total", op="claim")
                self._remember_uncertain(leased, claims)
                raise

        self._waiting_on_store += len(claims)
        try:
            async with asyncio.timeout(CLAIM_PATIENCE_S):
                results = await retry_transient(
                    claim, what="claim_ticks", clock=self._clock, attempts=3, base_s=0.05
                )
        except TRANSIENT as exc:
            if isinstance(exc, TimeoutError):
                self._metrics.inc("cronsvc_store_errors_total", op="claim")
                self._remember_uncertain(leased, claims)
            failure = (
                f"no answer to a claim within {CLAIM_PATIENCE_S:g} s"
                if isinstance(exc, TimeoutError)
                else type(exc).__name__
            )
            self._health.report(Dependency.STORE, failure)
            for d in leased:
                self._won[d.job.id, d.tick] = None
            _trim(self._won, MAX_UNCERTAIN)
            self._hold(leased, str(exc) or failure)
            return
        finally:
            self._waiting_on_store -= len(claims)
        self._store_answered()
        if ahead and attempts == 1:
            # A retried claim says nothing about how long a claim takes. One
            # made without leases is measured apart: every instance then
            # claims every tick, and the store answers more slowly, but only
            # until the coordinator is back.
            now_s = self._clock.time()
            if fenced:
                self._claim_s = next_claim_estimate(self._claim_s, now_s - started)
            else:
                self._unfenced_s = next_unfenced_estimate(self._unfenced_s, now_s - claim_started)
        log.debug(
            "ticks_claimed",
            count=len(claims),
            ahead_ms=round((fire_at - started) * 1000, 1),
            claim_ms=round((self._clock.time() - started) * 1000, 1),
        )
        self._replaced(results)
        claimed: list[tuple[DueTick, Execution]] = []
        now = self._clock.now()
        for d, result in zip(leased, results, strict=True):
            if result.outcome is ClaimOutcome.CLAIMED:
                assert result.execution is not None
                self._uncertain.pop(result.execution.id, None)
                if _past_grace(d, now):
                    self._finish(_missed_late(result.execution, d, now, _CLAIMED_LATE))
                else:
                    claimed.append((d, result.execution))
            elif result.outcome is ClaimOutcome.STALE:
                self._on_stale(d.job.id)
            elif result.outcome is ClaimOutcome.DUPLICATE:
                self._metrics.inc("cronsvc_claims_duplicate_total")
            else:
                self._count(ExecutionStatus.SKIPPED)
                error = result.execution.error if result.execution else None
                log.info(
                    "tick_skipped",
                    job_id=d.job.id,
                    tick=rfc3339(d.tick),
                    reason=error.message if error else "skipped",
                )
        # Their first requests are made now, so at the tick they only go out.
        ready = {}
        for d, execution in claimed:
            request = _webhook_request(d.job, execution)
            ready[execution.id] = (request, self._dispatcher.prepare(request, fire_at))
        if claimed and ahead:
            claimed = await self._wait_for_tick(claimed, fire_at)
        self._start_all([(d.job, e, *ready[e.id]) for d, e in claimed])

    async def _lease(self, due: list[DueTick], patience: float) -> tuple[list[DueTick], bool]:
        """The ticks this instance won, and whether leases fenced them (False:
        the coordinator did not answer, so every tick goes on unleased).
        While the coordinator is unreachable
        every tick goes on to the store's claim, the final fence against a
        duplicate: firing continues, at the cost of more claims that lose. A
        lease that fails or outwaits `patience` reports the
        coordinator down; leases are then skipped, not tried and waited for,
        until the health probe hears it again."""
        if self._won:
            # Ticks handed back unclaimed and taken again were leased already.
            mine, rest = [], []
            for d in due:
                key = (d.job.id, d.tick)
                if key in self._won:
                    del self._won[key]
                    mine.append(d)
                else:
                    rest.append(d)
            if mine:
                leased, fenced = await self._lease(rest, patience) if rest else ([], True)
                return mine + leased, fenced
        if not self._health.is_up(Dependency.COORDINATOR):
            self._leases_unavailable(due, "the coordinator is not answering its probe")
            return due, False
        try:
            async with asyncio.timeout(patience):
                won = await self._coordinator.try_lease_ticks(
                    [(d.job.id, d.tick) for d in due], self._lease_ttl_s
                )
        except TRANSIENT as exc:
            self._metrics.inc("cronsvc_coordinator_errors_total", op="lease")
            failure = (
                f"no answer to a lease within {patience:.2f} s"
                if isinstance(exc, TimeoutError)
                else type(exc).__name__
            )
            self._health.report(Dependency.COORDINATOR, failure)
            self._leases_unavailable(due, str(exc) or failure)
            return due, False
        if self._leases_down:
            self._leases_down = False
            log.info("leases_recovered")
        leased = [d for d, ok in zip(due, won, strict=True) if ok]
        self._lease_share = next_lease_share(self._lease_share, len(leased), len(due))
        self._metrics.inc("cronsvc_lease_total", len(leased), result="won")
        self._metrics.inc("cronsvc_lease_total", len(due) - len(leased), result="lost")
        return leased, True

    def _leases_unavailable(self, due: list[DueTick], error: str) -> None:
        self._metrics.inc("cronsvc_lease_total", len(due), result="skipped")
        if not self._leases_down:  # once per outage
            self._leases_down = True
            log.error("leases_unavailable", error=error, fallback="store claim")

    def _hold(self, due: Sequence[DueTick], error: str) -> None:
        """Hand ticks the store did not take back to the scheduler, which
        takes them again (under their jobs' misfire policies) once the store
        answers: a tick is never dropped for an outage."""
        self._metrics.inc("cronsvc_ticks_held_total", len(due))
        if not self._held_ticks:  # once per outage
            log.error("ticks_held", count=len(due), reason="store_unavailable", error=error)
        self._held_ticks += len(due)
        self._on_held(due)

    def _store_answered(self) -> None:
        if self._held_ticks:
            log.info("ticks_taken_again", held=self._held_ticks)
            self._held_ticks = 0

    def _remember_uncertain(self, due: Sequence[DueTick], claims: Sequence[TickClaim]) -> None:
        """Claims sent without an answer may have been written: look them up
        once the store answers, so none stays RUNNING and unsent."""
        for d, claim in zip(due, claims, strict=True):
            self._uncertain[claim.execution_id] = _Unanswered(
                execution=Execution(
                    id=claim.execution_id,
                    job_id=claim.job_id,
                    job_name=d.job.spec.name,
                    trigger=claim.trigger,
                    scheduled_at=claim.scheduled_at,
                    status=ExecutionStatus.RUNNING,
                    instance_id=claim.instance_id,
                    executed_at=claim.executed_at,
                ),
                checks=UNCERTAIN_CHECKS,
            )
        if len(self._uncertain) > MAX_UNCERTAIN:
            dropped = len(self._uncertain) - MAX_UNCERTAIN
            _trim(self._uncertain, MAX_UNCERTAIN)
            self._metrics.inc("cronsvc_claims_unresolved_total", dropped)
            log.error("claims_unresolved", count=dropped)
        if self._resolving is None or self._resolving.done():
            self._resolving = asyncio.create_task(self._resolve_uncertain())
            self._tasks.add(self._resolving)
            self._resolving.add_done_callback(self._done)

    async def _resolve_uncertain(self) -> None:
        """Look up the unanswered claims once the store answers, a few times
        some seconds apart: a claim written after all (and so not sent) is
        recorded MISSED; one the store never wrote leaves its tick to the
        scheduler, which takes it again. One store call a round for up to
        `UNCERTAIN_BATCH` of them: a store slow enough to leave claims
        unanswered must not be asked once per claim."""
        while self._uncertain:
            await self._store_up()
            await self._clock.sleep(UNCERTAIN_CHECK_S)
            if not self._health.is_up(Dependency.STORE):
                continue
            batch = list(itertools.islice(self._uncertain, UNCERTAIN_BATCH))
            try:
                # Marked: still RUNNING under this instance's id (not adopted),
                # and from now on never adopted. Not marked: never written,
                # or no longer this instance's to settle.
                ours = await self._store.mark_dispatched(self._instance_id, batch)
            except TRANSIENT as exc:
                self._health.report(Dependency.STORE, type(exc).__name__)
                continue
            now = self._clock.now()
            for execution_id in batch:
                unanswered = self._uncertain.get(execution_id)
                if unanswered is None or execution_id in self._deliveries:
                    continue  # claimed meanwhile, by a retry that was answered
                if execution_id in ours:
                    del self._uncertain[execution_id]
                    log.warning(
                        "unanswered_claim_found",
                        job_id=unanswered.execution.job_id,
                        tick=rfc3339(unanswered.execution.scheduled_at),
                    )
                    self._finish(_missed(unanswered.execution, now, _UNANSWERED))
                elif unanswered.checks > 1:
                    unanswered.checks -= 1
                    self._uncertain.move_to_end(execution_id)  # the others' turn first
                else:
                    del self._uncertain[execution_id]

    async def _store_up(self) -> None:
        while not self._health.is_up(Dependency.STORE):
            await self._clock.sleep(STORE_POLL_S)

    async def _wait_for_tick(
        self, claimed: list[tuple[DueTick, Execution]], fire_at: float
    ) -> list[tuple[DueTick, Execution]]:
        """Mark the claims dispatched, wait for the tick, and return those
        still good to fire as they are. Claims whose job changed after the
        claim are settled apart; claims another instance adopted meanwhile
        (this one was taken for dead) are left to it.

        The marking round trip starts ahead of the tick by twice its recent
        length, so it lands by the tick instead of delaying every webhook by
        its length (BENCHMARKS.md, "Why the constants are what they are").
        The price: an instance that dies between the mark and the tick leaves
        those runs LOST rather than adopted."""
        try:
            await self._clock.sleep(fire_at - 2 * self._mark_s - self._clock.time())
        except asyncio.CancelledError:
            # Still RUNNING and unsent: the leader, or the next start, adopts them.
            log.info("claims_left_unsent", count=len(claimed))
            raise
        started = self._clock.monotonic()
        try:
            # Bounded: a store that stalls now must not hold the webhooks
            # past their tick (they would go out late, past a `skip` job's grace).
            async with asyncio.timeout(max(fire_at - self._clock.time(), 0) + MARK_PATIENCE_S):
                marked, versions = await asyncio.gather(
                    self._store.mark_dispatched(self._instance_id, [e.id for _, e in claimed]),
                    self._store.current_versions([d.job.id for d, _ in claimed]),
                )
        except TRANSIENT as exc:
            # The claim itself was fenced by version; fire as claimed. Only if
            # this instance also dies now could an adopter send one twice.
            self._metrics.inc("cronsvc_store_errors_total", op="mark_dispatched")
            log.warning(
                "dispatch_unmarked",
                count=len(claimed),
                error=str(exc) or f"no answer by the tick + {MARK_PATIENCE_S:g} s",
            )
            marked, versions = (
                {e.id for _, e in claimed},
                {d.job.id: d.job.version for d, _ in claimed},
            )
        else:
            self._mark_s = 0.8 * self._mark_s + 0.2 * (self._clock.monotonic() - started)
        unchanged, changed = [], []  # sorted before the tick, to be off at once then
        now = self._clock.now()
        for d, execution in claimed:
            if execution.id not in marked:
                self._metrics.inc("cronsvc_claims_taken_over_total")
                log.warning("claim_taken_over", job_id=d.job.id, tick=rfc3339(d.tick))
            elif _past_grace(d, now):  # this instance was held up (paused) since the claim
                self._finish(_missed_late(execution, d, now, _HELD_UP))
            elif versions.get(d.job.id) == d.job.version:
                unchanged.append((d, execution))
            else:
                changed.append((d, execution))
        try:
            await self._until(fire_at)
        except asyncio.CancelledError:
            now = self._clock.now()
            for _, execution in unchanged + changed:  # marked as sent, never sent: say so
                self._finish(_ended(execution, now, "shutdown", _SHUTDOWN_UNSENT))
            raise
        for d, execution in changed:
            self._spawn(self._settle_changed(d, execution))
        return unchanged

    async def _until(self, instant: float) -> None:
        """Sleep until `instant` (Unix seconds), never short of it: a loop's
        timers may fire up to a millisecond early (uvloop's count whole
        milliseconds), and a webhook must not leave before its tick."""
        while (left := instant - self._clock.time()) > 0:
            await self._clock.sleep(left)

    async def _settle_changed(self, due: DueTick, execution: Execution) -> None:
        """The job changed between its claim and its tick: fire the new version
        if it is active and still has this tick, else record the tick SKIPPED."""
        self._on_stale(due.job.id)
        try:
            job: Job | None = await self._store.get_job(due.job.id)
        except JobNotFound:
            job = None
        if job is not None and job.spec.is_active and _has_tick(job, due.tick):
            request = _webhook_request(job, execution)
            await self._deliver(job, execution, request, self._dispatcher.send_first(request))
            return
        reason = "the job was deleted, paused or rescheduled between its claim and its tick"
        self._finish(_ended(execution, self._clock.now(), "job_changed", reason, skipped=True))

    async def _run_adopted(self, executions: list[Execution]) -> None:
        """Send one tick's adopted executions; a tick not yet due (its
        claimer stopped right after claiming) is waited for."""
        # Cancelled here, they stay RUNNING and unsent: adopted at the next start.
        await self._until(executions[0].scheduled_at.timestamp())
        for attempt in range(1, ADOPT_ROUNDS + 1):
            # Each round waits for the store to answer its probe first: an
            # outage delays these runs (their misfire policy then judges
            # them), it does not leave them RUNNING and unsent.
            await self._store_up()
            try:
                await retry_transient(
                    lambda: self._settle_adopted(executions),
                    what="adopt_unsent",
                    clock=self._clock,
                    attempts=2,
                )
                return
            except TRANSIENT as exc:
                self._health.report(Dependency.STORE, type(exc).__name__)
                if attempt == ADOPT_ROUNDS:
                    # They stay RUNNING and unsent under this instance's id,
                    # visible in the log; the start after this instance's
                    # next stop adopts them.
                    self._ticks_dropped("adopted_ticks_unsent", len(executions), exc)

    async def _settle_adopted(self, executions: list[Execution]) -> None:
        """Every store call comes before any outcome is acted on, so a retry
        after a store error repeats nothing."""
        now = self._clock.now()
        jobs: dict[str, Job] = {}
        for job_id in {execution.job_id for execution in executions}:
            with contextlib.suppress(JobNotFound):
                jobs[job_id] = await self._store.get_job(job_id)
        ended: list[Execution] = []
        send: list[tuple[Job, Execution]] = []
        for execution in executions:
            job = jobs.get(execution.job_id)
            tick = execution.scheduled_at
            if job is None or not job.spec.is_active or not _has_tick(job, tick):
                reason = "the job was deleted, paused or rescheduled before its tick was sent"
                ended.append(_ended(execution, now, "job_changed", reason, skipped=True))
            elif not self._still_owed(job, tick, now):
                ended.append(_missed(execution, now, _ADOPTED_TOO_LATE))
            else:
                send.append((job, execution))
        marked = await self._store.mark_dispatched(self._instance_id, [e.id for _, e in send])
        for execution in ended:
            self._finish(execution)
        for job, execution in send:
            if execution.id in marked:
                log.info(
                    "tick_adopted",
                    job_id=job.id,
                    tick=rfc3339(execution.scheduled_at),
                    lag_ms=round((now - execution.scheduled_at).total_seconds() * 1000, 1),
                )
                self._start(job, execution)

    def _still_owed(self, job: Job, tick: datetime, now: datetime) -> bool:
        """Whether the misfire policy fires `tick` now, judged as a tick
        overdue since before this instance took it over."""
        schedule = parse_schedule(job.spec.cron_expression, job.spec.timezone)
        ticks = [tick]
        while len(ticks) <= self._max_catchup:
            later = schedule.next_after(ticks[-1])
            if later is None or later > now:
                break
            ticks.append(later)
        plan = plan_due_ticks(
            ticks,
            now=now,
            started_at=now,
            policy=job.spec.misfire_policy,
            grace_s=job.spec.misfire_grace_seconds,
            max_catchup=self._max_catchup,
        )
        return any(fired == tick for fired, _ in plan.fire)

    def _start(self, job: Job, execution: Execution) -> None:
        self._start_all([(job, execution, _webhook_request(job, execution), None)])

    def _start_all(
        self, runs: Sequence[tuple[Job, Execution, WebhookRequest, Prepared | None]]
    ) -> None:
        """Send claimed executions' webhooks. Their first requests go out
        now, one after another, where they can (`Dispatcher.send_first`);
        the rest of each delivery runs in a task of its own, started after:
        a burst's requests then leave together, not one per task turn."""
        started = []
        for job, execution, request, prepared in runs:
            if execution.id in self._cancelled:
                self._aborted(execution)  # replaced before it was sent
                continue
            first = self._dispatcher.send_first(request, prepared)
            started.append((job, execution, request, first))
        for job, execution, request, first in started:
            self._spawn(self._deliver(job, execution, request, first))

    async def _deliver(
        self, job: Job, execution: Execution, request: WebhookRequest, first: FirstSend | None
    ) -> None:
        if execution.id in self._cancelled:  # replaced before its task began
            if first is not None:
                self._dispatcher.abandon(first)
            self._aborted(execution)
            return
        task = asyncio.current_task()
        assert task is not None
        self._deliveries[execution.id] = task
        try:
            await self._send(job, execution, request, first)
        finally:
            self._deliveries.pop(execution.id, None)

    def _aborted(self, execution: Execution) -> None:
        self._metrics.inc("cronsvc_replaced_runs_aborted_total")
        log.info(
            "run_aborted", job_id=execution.job_id, execution_id=execution.id, reason="replaced"
        )

    async def _send(
        self, job: Job, execution: Execution, request: WebhookRequest, first: FirstSend | None
    ) -> None:
        try:
            result = await self._dispatcher.deliver(request, first)
        except asyncio.CancelledError:
            if execution.id in self._cancelled:
                self._aborted(execution)  # the store holds its record already
            else:
                self._finish(_ended(execution, self._clock.now(), "shutdown", _SHUTDOWN))
            raise
        finished = _finished(execution, result)
        if result.status is ExecutionStatus.FAILURE:
            finished = await self._heed_target(job, finished, result)
        self._finish(finished)
        lag_s = result.first_sent_at - execution.scheduled_at.timestamp()
        if execution.trigger is not Trigger.MANUAL:
            self._metrics.fire_lag.observe(max(0.0, lag_s))
        self._metrics.webhook_duration.labels(result.status.value).observe(
            result.duration_ms / 1000
        )
        self._metrics.inc("cronsvc_webhook_attempts_total", result.attempts)
        lag_ms = round(lag_s * 1000, 1)
        log.info(
            "tick_fired",
            job_id=job.id,
            tick=rfc3339(execution.scheduled_at),
            trigger=execution.trigger.value,
            lag_ms=lag_ms,
            status=result.status.value,
            attempts=result.attempts,
            response_status=result.response_status,
        )

    async def _heed_target(
        self, job: Job, execution: Execution, result: DeliveryResult
    ) -> Execution:
        """What a failing target asked for: 410 Gone pauses the job (unless
        someone changed it since); a Retry-After on the last attempt's 429 or
        503 holds back the job's ticks that would fall inside it."""
        now = self._clock.now()
        try:
            if result.response_status == 410:
                reason = f"the webhook target answered 410 Gone at {rfc3339(now)}"
                paused = await self._store.pause_job(
                    job.id, expected_version=job.version, reason=reason, now=now
                )
                if paused is None:
                    return execution
                self._on_stale(job.id)  # this instance's scheduler drops it now
                await self.announce(job.id)
                self._metrics.inc("cronsvc_jobs_paused_by_target_total")
                log.warning("job_paused_by_target", job_id=job.id, reason=reason)
                return dataclasses.replace(
                    execution,
                    error=ErrorInfo(
                        type="target_gone", message="HTTP 410 Gone: the job was paused"
                    ),
                )
            if result.retry_after_s is not None:
                until = now + timedelta(seconds=min(result.retry_after_s, self._max_defer_s))
                upcoming = _next_tick(job, execution.scheduled_at)
                if upcoming is not None and upcoming < until:
                    await self._store.defer_job(job.id, until)
                    log.info("job_deferred_by_target", job_id=job.id, until=rfc3339(until))
        except TRANSIENT as exc:
            log.warning("target_request_not_recorded", job_id=job.id, error=str(exc))
        return execution

    async def announce(self, job_id: str) -> None:
        """Tell every instance a job changed. The change is already stored:
        if the notice cannot go out, the other instances pick it up at their
        next resync, so this never fails."""
        try:
            await self._coordinator.publish_job_change(job_id)
        except TRANSIENT as exc:
            self._metrics.inc("cronsvc_coordinator_errors_total", op="notice")
            log.warning("job_change_notice_failed", job_id=job_id, error=str(exc))

    def _ticks_dropped(self, event: str, count: int, exc: BaseException) -> None:
        """Ticks the store would not take: counted and logged, never quiet."""
        self._metrics.inc("cronsvc_ticks_dropped_total", count, reason="store_unavailable")
        log.error(event, count=count, reason="store_unavailable", error=str(exc))

    def _finish(self, execution: Execution) -> None:
        self._count(execution.status)
        self._results.submit(execution)

    def _count(self, status: ExecutionStatus) -> None:
        self._metrics.inc("cronsvc_executions_total", status=status.value)


def _webhook_request(job: Job, execution: Execution) -> WebhookRequest:
    spec = job.spec
    return WebhookRequest(
        execution_id=execution.id,
        job_id=job.id,
        job_name=spec.name,
        scheduled_at=execution.scheduled_at,
        trigger=execution.trigger,
        url=spec.webhook_url,
        method=spec.http_method,
        headers=spec.headers,
        body=spec.body,
        timeout_s=spec.timeout_seconds,
        retry=spec.retry,
        secret=spec.secret,
        previous_secret=job.previous_secret,
    )


def _finished(execution: Execution, result: DeliveryResult) -> Execution:
    return dataclasses.replace(
        execution,
        status=result.status,
        executed_at=result.executed_at,
        finished_at=result.finished_at,
        duration_ms=result.duration_ms,
        attempts=result.attempts,
        response_status=result.response_status,
        response_body=result.response_body,
        response_truncated=result.response_truncated,
        error=result.error,
        attempt_log=result.attempt_log,
    )


_SHUTDOWN = "cronsvc stopped before the webhook answered"
_SHUTDOWN_UNSENT = "cronsvc stopped before its tick; the webhook was not sent"


def _missed(execution: Execution, now: datetime, message: str) -> Execution:
    """A claimed tick recorded MISSED: its webhook was not sent."""
    return dataclasses.replace(
        execution,
        status=ExecutionStatus.MISSED,
        executed_at=None,
        finished_at=now,
        error=ErrorInfo(type="missed", message=message),
    )


_ADOPTED_TOO_LATE = (
    "the instance that claimed this tick stopped before sending it, "
    "and the job's misfire policy does not fire it this late"
)
_UNANSWERED = (
    "the store wrote its claim but its answer never came back, so the webhook was not sent"
)


def _ended(
    execution: Execution, now: datetime, error_type: str, message: str, *, skipped: bool = False
) -> Execution:
    """An execution that ends without a webhook answer."""
    return dataclasses.replace(
        execution,
        status=ExecutionStatus.SKIPPED if skipped else ExecutionStatus.FAILURE,
        executed_at=None if skipped else execution.executed_at,
        finished_at=now,
        duration_ms=None if skipped else _ms_between(execution.executed_at, now),
        error=ErrorInfo(type=error_type, message=message),
    )


def _past_grace(due: DueTick, now: datetime) -> bool:
    """Whether a tick's claim came back too late for its job's misfire
    grace (a store that answered after a stall): it is then recorded MISSED,
    as a tick found overdue after a restart is, not fired late."""
    if due.trigger is Trigger.MANUAL:
        return False
    grace = max(due.job.spec.misfire_grace_seconds, MIN_GRACE_S)
    return (now - due.tick).total_seconds() > grace


_CLAIMED_LATE = "the store took its claim {late_s:.1f} s after the tick"
_HELD_UP = "this instance was held up {late_s:.1f} s past the tick between its claim and its send"


def _missed_late(execution: Execution, due: DueTick, now: datetime, why: str) -> Execution:
    """A claimed tick found past its job's misfire grace before it was sent."""
    late_s = (now - due.tick).total_seconds()
    spec = due.job.spec
    return _missed(
        execution,
        now,
        why.format(late_s=late_s) + ", past the job's misfire grace "
        f"(misfirePolicy {spec.misfire_policy.value}, "
        f"misfireGraceSeconds {max(spec.misfire_grace_seconds, MIN_GRACE_S):g}); "
        "the webhook was not sent",
    )


def _trim(remembered: dict[Any, Any], most: int) -> None:
    """Forget the oldest entries beyond `most`."""
    while len(remembered) > most:
        del remembered[next(iter(remembered))]


def _next_tick(job: Job, after: datetime) -> datetime | None:
    try:
        schedule = parse_schedule(job.spec.cron_expression, job.spec.timezone)
    except CronSvcError:
        return None
    return schedule.next_after(after)


def _has_tick(job: Job, tick: datetime) -> bool:
    try:
        schedule = parse_schedule(job.spec.cron_expression, job.spec.timezone)
    except CronSvcError:
        return False
    return schedule.next_after(tick - timedelta(seconds=1)) == tick


def _ms_between(start: datetime | None, end: datetime) -> int | None:
    return None if start is None else int((end - start).total_seconds() * 1000)
