"""The scheduler's `TickSink`: a batch of ticks due at one instant leased, claimed,
marked dispatched and sent at its instant, maybe handed over ahead (`claim_lead`) so
the claim is off the tick's critical path. Ticks the store does not take in time are
handed back, never dropped. The API's run-now makes its claim here too (`JobService`).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from cronsvc.clock import Clock, sleep_until
from cronsvc.coord import Coordinator
from cronsvc.deliveries import (
    CLAIMED_LATE,
    HELD_UP,
    SHUTDOWN_UNSENT,
    UNANSWERED,
    Deliveries,
    ended,
    has_tick,
    missed,
    missed_late,
    past_grace,
)
from cronsvc.domain import Execution, ExecutionStatus, Job, Trigger
from cronsvc.errors import JobNotFound
from cronsvc.health import Dependency, HealthMonitor
from cronsvc.ids import new_id
from cronsvc.instants import rfc3339
from cronsvc.metrics import Metrics
from cronsvc.notices import Notices
from cronsvc.retry import TRANSIENT, retry_transient
from cronsvc.store import ClaimOutcome, ClaimResult, Store, TickClaim
from cronsvc.ticks import DueTick, HandBack

log = structlog.get_logger(__name__)

LEASE_PATIENCE_S = 0.5
"""Before a batch goes on without leases: a stalled Redis would hold it for its
command timeout and retry. A batch taken ahead waits only until its claim must
start to land by the tick, so the one batch a stall catches is not sent late."""
MIN_LEASE_PATIENCE_S = 0.1
FIRST_CLAIMER_SHARE = 0.25
"""Without leases, an instance that won less than this share of its recent leases
claims at the tick, after those that usually win."""
MAX_WON = 100_000


def next_lease_share(current: float, won: int, asked: int) -> float:
    return current if asked == 0 else 0.8 * current + 0.2 * (won / asked)


@dataclass(eq=False, repr=False, kw_only=True, slots=True)
class Leases:
    """A batch's per-tick fire leases, which keep the other instances from claiming a
    tick at all. Without the coordinator every tick goes on to the store's claim, the
    final fence: firing continues at the cost of more lost claims, and leases are
    skipped, not waited for, until the health probe hears the coordinator again."""

    coordinator: Coordinator
    health: HealthMonitor
    metrics: Metrics
    lease_ttl_s: float
    lost: LostLeases | None = None
    down: bool = field(default=False, init=False)
    """Whether the last batch went on without leases."""
    share: float = field(default=1.0, init=False)
    """Recent share of the leases asked for that this instance won."""
    _won: dict[tuple[str, datetime], None] = field(default_factory=dict, init=False)
    """Won, then handed back unclaimed: its own when taken again (a coordinator
    may refuse a lease twice, even to its holder)."""

    def keep(self, due: Sequence[DueTick]) -> None:
        for d in due:
            self._won[d.job.id, d.tick] = None
        while len(self._won) > MAX_WON:
            del self._won[next(iter(self._won))]

    async def lease(self, due: list[DueTick], patience: float) -> tuple[list[DueTick], bool]:
        """The ticks won (and lost ones claimed all the same), and whether leases
        fenced them (False: every tick goes on unleased)."""
        if self._won:
            mine, rest = [], []
            for d in due:
                key = (d.job.id, d.tick)
                if key in self._won:
                    del self._won[key]
                    mine.append(d)
                else:
                    rest.append(d)
            if mine:
                leased, fenced = await self.lease(rest, patience) if rest else ([], True)
                return mine + leased, fenced
        if not self.health.is_up(Dependency.COORDINATOR):
            self._unavailable(due, "the coordinator is not answering its probe")
            return due, False
        try:
            async with asyncio.timeout(patience):
                won = await self.coordinator.try_lease_ticks(
                    [(d.job.id, d.tick) for d in due], self.lease_ttl_s
                )
        except TRANSIENT as exc:
            self.metrics.inc("cronsvc_coordinator_errors_total", op="lease")
            failure = type(exc).__name__
            if isinstance(exc, TimeoutError):
                failure = f"no answer to a lease within {patience:.2f} s"
            self.health.report(Dependency.COORDINATOR, failure)
            self._unavailable(due, str(exc) or failure)
            return due, False
        if self.down:
            self.down = False
            log.info("leases_recovered")
        leased = [d for d, ok in zip(due, won, strict=True) if ok]
        self.share = next_lease_share(self.share, len(leased), len(due))
        self.metrics.inc("cronsvc_lease_total", len(leased), result="won")
        self.metrics.inc("cronsvc_lease_total", len(due) - len(leased), result="lost")
        if self.lost is not None and len(leased) < len(due):
            leased += self.lost.lost([d for d, ok in zip(due, won, strict=True) if not ok])
        return leased, True

    def _unavailable(self, due: list[DueTick], error: str) -> None:
        self.metrics.inc("cronsvc_lease_total", len(due), result="skipped")
        if not self.down:  # once per outage
            self.down = True
            log.error("leases_unavailable", error=error, fallback="store claim")


@dataclass(eq=False, repr=False, kw_only=True, slots=True)
class LostLeases:
    """Ticks whose leases were lost in the last `keep_s` seconds, for the leader to
    claim if their winner leaves (`adoption.OrphanClaims`)."""

    clock: Clock
    keep_s: float
    claim_all: bool = False
    """Claim every tick whose lease is lost, as if won. Set while this instance
    shares the jobs with other owners: a job's ticks are then leased by its
    owner alone, and a lease another holds is a former owner's (one that left,
    or has not yet heard of a newcomer) or an earlier version's, racing. The
    store's unique claim fences it, and nobody else would claim it."""
    _batches: collections.deque[tuple[float, Sequence[DueTick]]] = field(
        default_factory=collections.deque, init=False
    )
    _claim_until: float = field(default=0.0, init=False)

    def lost(self, lost: Sequence[DueTick]) -> Sequence[DueTick]:
        """Remembered; returned to be claimed as if won when an instance that left
        may have leased them (see `claim_until`), or while `claim_all`."""
        if lost and (self.claim_all or lost[0].tick.timestamp() <= self._claim_until):
            return lost
        self.remember(lost)
        return ()

    def claim_until(self, instant_s: float) -> None:
        """An instance has left, maybe holding leases up to `instant_s`: the store's
        claim alone fences those ticks, so they are claimed even when lost."""
        self._claim_until = max(self._claim_until, instant_s)

    def remember(self, lost: Sequence[DueTick]) -> None:
        if not lost:
            return
        self._batches.append((lost[0].tick.timestamp(), lost))
        oldest = self.clock.time() - self.keep_s
        while self._batches[0][0] < oldest:
            self._batches.popleft()

    def take(self) -> list[DueTick]:
        oldest = self.clock.time() - self.keep_s
        taken = [d for at, batch in self._batches if at >= oldest for d in batch]
        self._batches.clear()
        return taken

    def give_back(self, due: Sequence[DueTick]) -> None:
        """Taken, but their claim failed: for the leader's next try."""
        self._batches.appendleft((min((d.tick.timestamp() for d in due), default=0.0), due))


MARK_PATIENCE_S = 0.25
"""After the tick, before the webhooks go out unmarked."""

Claimed = list[tuple[DueTick, Execution]]


@dataclass(eq=False, repr=False, kw_only=True, slots=True)
class DispatchMarks:
    """Claims made ahead, marked dispatched just before their tick and checked against
    their jobs' current versions."""

    store: Store
    deliveries: Deliveries
    handback: HandBack
    clock: Clock
    metrics: Metrics
    instance_id: str
    mark_s: float = field(default=0.005, init=False)
    """Recent length of the marking round trip."""

    async def wait_for_tick(self, claimed: Claimed, fire_at: float) -> Claimed:
        """Those still good to fire as they are; claims another instance adopted
        meanwhile are left to it. The mark starts twice its length ahead so it
        lands by the tick, at a price: an instance that dies between the mark
        and the tick leaves those runs LOST rather than adopted."""
        try:
            await self.clock.sleep(fire_at - 2 * self.mark_s - self.clock.time())
        except asyncio.CancelledError:
            # Still RUNNING and unsent: the leader, or the next start, adopts them.
            log.info("claims_left_unsent", count=len(claimed))
            raise
        marked, versions = await self._mark(claimed, fire_at)
        unchanged, changed = [], []  # sorted before the tick, to be off at once then
        now = self.clock.now()
        for d, execution in claimed:
            if execution.id not in marked:
                self.metrics.inc("cronsvc_claims_taken_over_total")
                log.warning("claim_taken_over", job_id=d.job.id, tick=rfc3339(d.tick))
            elif past_grace(d, now):  # this instance was held up (paused) since the claim
                self.deliveries.finish(missed_late(execution, d, now, HELD_UP), d.job)
            elif versions.get(d.job.id) == d.job.version:
                unchanged.append((d, execution))
            else:
                changed.append((d, execution))
        try:
            await sleep_until(self.clock, fire_at)
        except asyncio.CancelledError:
            now = self.clock.now()
            for _, execution in unchanged + changed:  # marked as sent, never sent: say so
                self.deliveries.finish(ended(execution, now, "shutdown", SHUTDOWN_UNSENT))
            raise
        for d, execution in changed:
            self.deliveries.spawn(self._settle_changed(d, execution))
        return unchanged

    async def _mark(self, claimed: Claimed, fire_at: float) -> tuple[set[str], dict[str, int]]:
        """The claims still this instance's, and each job's current version."""
        started = self.clock.monotonic()
        try:
            # Bounded: a store that stalls now must not hold the webhooks
            # past their tick (they would go out late, past a `skip` job's grace).
            async with asyncio.timeout(max(fire_at - self.clock.time(), 0) + MARK_PATIENCE_S):
                marked, versions = await asyncio.gather(
                    self.store.mark_dispatched(self.instance_id, [e.id for _, e in claimed]),
                    self.store.current_versions([d.job.id for d, _ in claimed]),
                )
        except TRANSIENT as exc:
            # The claim itself was fenced by version; fire as claimed. Only if
            # this instance also dies now could an adopter send one twice.
            self.metrics.inc("cronsvc_store_errors_total", op="mark_dispatched")
            log.warning(
                "dispatch_unmarked",
                count=len(claimed),
                error=str(exc) or f"no answer by the tick + {MARK_PATIENCE_S:g} s",
            )
            return {e.id for _, e in claimed}, {d.job.id: d.job.version for d, _ in claimed}
        self.mark_s = 0.8 * self.mark_s + 0.2 * (self.clock.monotonic() - started)
        return marked, versions

    async def _settle_changed(self, due: DueTick, execution: Execution) -> None:
        self.handback.stale(due.job.id)
        try:
            job: Job | None = await self.store.get_job(due.job.id)
        except JobNotFound:
            job = None
        if job is not None and job.spec.is_active and has_tick(job, due.tick):
            await self.deliveries.send_now(job, execution)
            return
        reason = "the job was deleted, paused or rescheduled between its claim and its tick"
        self.deliveries.finish(
            ended(execution, self.clock.now(), "job_changed", reason, skipped=True)
        )


MAX_UNCERTAIN = 100_000
UNCERTAIN_CHECKS = 3
UNCERTAIN_CHECK_S = 3.0
UNCERTAIN_BATCH = 500


@dataclass(slots=True)
class _Unanswered:
    execution: Execution
    """The record its claim would have written."""
    checks: int


@dataclass(eq=False, repr=False, kw_only=True, slots=True)
class UnansweredClaims:
    """Claims whose answer never came: a stalled store may have written them (or write
    them when it resumes), leaving records RUNNING and never sent. Each is looked up a
    few times once the store answers: one written after all is recorded MISSED; one
    never written leaves its tick to the scheduler."""

    store: Store
    health: HealthMonitor
    deliveries: Deliveries
    clock: Clock
    metrics: Metrics
    instance_id: str
    _uncertain: collections.OrderedDict[str, _Unanswered] = field(
        default_factory=collections.OrderedDict, init=False
    )
    _resolving: asyncio.Task[None] | None = field(default=None, init=False)

    def remember(self, due: Sequence[DueTick], claims: Sequence[TickClaim]) -> None:
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
            while len(self._uncertain) > MAX_UNCERTAIN:
                del self._uncertain[next(iter(self._uncertain))]
            self.metrics.inc("cronsvc_claims_unresolved_total", dropped)
            log.error("claims_unresolved", count=dropped)
        if self._resolving is None or self._resolving.done():
            self._resolving = self.deliveries.spawn(self._resolve())

    def answered(self, execution_id: str) -> None:
        """By a retry."""
        self._uncertain.pop(execution_id, None)

    async def _resolve(self) -> None:
        """One call a round for a batch: a store slow enough to leave claims
        unanswered must not be asked once per claim."""
        while self._uncertain:
            await self.health.until_up(Dependency.STORE, self.clock)
            await self.clock.sleep(UNCERTAIN_CHECK_S)
            if not self.health.is_up(Dependency.STORE):
                continue
            batch = list(itertools.islice(self._uncertain, UNCERTAIN_BATCH))
            try:
                # Marked: still RUNNING under this instance's id (not adopted),
                # and from now on never adopted. Not marked: never written,
                # or no longer this instance's to settle.
                ours = await self.store.mark_dispatched(self.instance_id, batch)
            except TRANSIENT as exc:
                self.health.report(Dependency.STORE, type(exc).__name__)
                continue
            self._settle(batch, ours)

    def _settle(self, batch: list[str], ours: set[str]) -> None:
        now = self.clock.now()
        for execution_id in batch:
            unanswered = self._uncertain.get(execution_id)
            if unanswered is None or self.deliveries.running(execution_id):
                continue  # claimed meanwhile, by a retry that was answered
            if execution_id in ours:
                del self._uncertain[execution_id]
                log.warning(
                    "unanswered_claim_found",
                    job_id=unanswered.execution.job_id,
                    tick=rfc3339(unanswered.execution.scheduled_at),
                )
                self.deliveries.finish(missed(unanswered.execution, now, UNANSWERED))
            elif unanswered.checks > 1:
                unanswered.checks -= 1
                self._uncertain.move_to_end(execution_id)  # the others' turn first
            else:
                del self._uncertain[execution_id]


MAX_CLAIM_LEAD_S = 5.0
CLAIM_PATIENCE_S = 2.0
"""A batch's claim, retries included, before its ticks are handed back: an
unreachable store would hold each attempt for its server selection."""


def claim_lead_s(configured_s: float, claim_s: float, mark_s: float) -> float:
    """At least `configured_s` (0 keeps every claim at the tick); when the store is
    slow, room for a lease wait and twice the claim's and the mark's recent
    length, so both land by the tick."""
    if configured_s <= 0:
        return 0.0
    return min(MAX_CLAIM_LEAD_S, max(configured_s, MIN_LEASE_PATIENCE_S + 2 * (claim_s + mark_s)))


def next_unfenced_estimate(current_s: float | None, sample_s: float) -> float:
    """Without leases every instance claims every tick, so such a claim is slower;
    followed at half weight because a lead too short sends a whole batch late."""
    return sample_s if current_s is None else 0.5 * (current_s + sample_s)


def next_claim_estimate(current_s: float, sample_s: float) -> float:
    """One slow batch moves it at most to a little over double (one hiccup must not
    push every claim seconds ahead); a store that stays slow raises it batch by batch."""
    return 0.8 * current_s + 0.2 * min(sample_s, 2 * current_s + 0.05)


def claims_of(
    due: Sequence[DueTick], *, clock: Clock, instance_id: str, dispatched: bool
) -> list[TickClaim]:
    """Each fenced by the version of its job as read."""
    return [
        TickClaim(
            job_id=d.job.id,
            expected_version=d.job.version,
            scheduled_at=d.tick,
            trigger=d.trigger,
            execution_id=new_id(),
            instance_id=instance_id,
            executed_at=clock.now(),
            dispatched=dispatched,
        )
        for d in due
    ]


class ClaimPipeline:
    def __init__(
        self,
        *,
        store: Store,
        coordinator: Coordinator,
        deliveries: Deliveries,
        handback: HandBack,
        health: HealthMonitor,
        clock: Clock,
        metrics: Metrics,
        instance_id: str,
        lease_ttl_s: float,
        lost_leases: LostLeases | None = None,
        initial_claim_s: float = 0.005,
    ) -> None:
        self._store = store
        self._deliveries = deliveries
        self._handback = handback
        self._health = health
        self._clock = clock
        self._metrics = metrics
        self._instance_id = instance_id
        self._leases = Leases(
            coordinator=coordinator,
            health=health,
            metrics=metrics,
            lease_ttl_s=lease_ttl_s,
            lost=lost_leases,
        )
        self._unanswered = UnansweredClaims(
            store=store,
            health=health,
            deliveries=deliveries,
            clock=clock,
            metrics=metrics,
            instance_id=instance_id,
        )
        self._marks = DispatchMarks(
            store=store,
            deliveries=deliveries,
            handback=handback,
            clock=clock,
            metrics=metrics,
            instance_id=instance_id,
        )
        self._claim_s = initial_claim_s
        """Recent length of a batch's lease and claim."""
        self._unfenced_s: float | None = None
        """Recent length of a claim made without leases."""
        self._held_ticks = 0
        """Handed back since the store last answered: logged at an outage's start and end."""
        self._waiting_on_store = 0
        metrics.gauge(
            "cronsvc_ticks_waiting_on_store",
            "Ticks whose claim is waiting on the store (retried while it is unreachable)",
            lambda: float(self._waiting_on_store),
        )

    def claim_lead(self, configured_s: float) -> float:
        claim_s = self._claim_s
        if self._leases.down and self._unfenced_s is not None:
            claim_s = max(claim_s, self._unfenced_s)
        return claim_lead_s(configured_s, claim_s, self._marks.mark_s)

    def fire(self, due: Sequence[DueTick]) -> None:
        self._deliveries.spawn(self._run_batch(list(due)))

    async def _run_batch(self, due: list[DueTick]) -> None:
        started = self._clock.time()
        fire_at = max(d.tick for d in due).timestamp()
        if not self._health.is_up(Dependency.STORE):
            self._hold(due, "the store is not answering its probe")
            return
        patience = min(
            LEASE_PATIENCE_S,
            max(MIN_LEASE_PATIENCE_S, fire_at - started - 2 * (self._claim_s + self._marks.mark_s)),
        )
        leased, fenced = await self._leases.lease(due, patience)
        if not leased:
            return
        if not fenced and self._leases.share < FIRST_CLAIMER_SHARE:
            # Without leases the store answers every instance's claims one after
            # another; the usual winners claim at once, this usual loser at the
            # tick, winning only what they did not claim.
            await sleep_until(self._clock, fire_at)
        await self._claim_and_fire(leased, fire_at, started, fenced)

    async def _claim_and_fire(
        self, leased: list[DueTick], fire_at: float, started: float, fenced: bool
    ) -> None:
        claim_started = self._clock.time()
        # Claimed ahead of the tick, a record says "not sent yet" until just
        # before the send: if this instance dies in between, another adopts it.
        ahead = fire_at > self._clock.time()
        claims = claims_of(
            leased, clock=self._clock, instance_id=self._instance_id, dispatched=not ahead
        )
        answer = await self._claim(leased, claims)
        if answer is None:
            return
        results, attempts = answer
        if self._held_ticks:
            log.info("ticks_taken_again", held=self._held_ticks)
            self._held_ticks = 0
        if ahead and attempts == 1:
            # A retried claim says nothing about how long a claim takes.
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
        self._deliveries.replaced(results)
        claimed = self._claimed(leased, results)
        # Their first requests are made now, so at the tick they only go out.
        ready = self._deliveries.ready([(d.job, e) for d, e in claimed], fire_at)
        if claimed and ahead:
            claimed = await self._marks.wait_for_tick(claimed, fire_at)
        self._deliveries.start_all(ready, [e for _, e in claimed])

    async def _claim(
        self, leased: list[DueTick], claims: list[TickClaim]
    ) -> tuple[list[ClaimResult], int] | None:
        """The answers and the attempts they took; None when the ticks were handed back."""
        attempts = 0

        async def claim() -> list[ClaimResult]:
            nonlocal attempts
            attempts += 1
            try:
                return await self._store.claim_ticks(claims)
            except TRANSIENT:
                self._metrics.inc("cronsvc_store_errors_total", op="claim")
                self._unanswered.remember(leased, claims)
                raise

        self._waiting_on_store += len(claims)
        try:
            async with asyncio.timeout(CLAIM_PATIENCE_S):
                results = await retry_transient(
                    claim, what="claim_ticks", clock=self._clock, attempts=3, base_s=0.05
                )
        except TRANSIENT as exc:
            failure = type(exc).__name__
            if isinstance(exc, TimeoutError):
                failure = f"no answer to a claim within {CLAIM_PATIENCE_S:g} s"
                self._metrics.inc("cronsvc_store_errors_total", op="claim")
                self._unanswered.remember(leased, claims)
            self._health.report(Dependency.STORE, failure)
            self._leases.keep(leased)
            self._hold(leased, str(exc) or failure)
            return None
        finally:
            self._waiting_on_store -= len(claims)
        return results, attempts

    def _claimed(self, leased: list[DueTick], results: list[ClaimResult]) -> Claimed:
        """Those still in their misfire grace; the others are settled here."""
        claimed: Claimed = []
        now = self._clock.now()
        for d, result in zip(leased, results, strict=True):
            if result.outcome is ClaimOutcome.CLAIMED:
                assert result.execution is not None
                self._unanswered.answered(result.execution.id)
                if past_grace(d, now):
                    self._deliveries.finish(
                        missed_late(result.execution, d, now, CLAIMED_LATE), d.job
                    )
                else:
                    claimed.append((d, result.execution))
            elif result.outcome is ClaimOutcome.STALE:
                self._handback.stale(d.job.id)
            elif result.outcome is ClaimOutcome.DUPLICATE:
                self._metrics.inc("cronsvc_claims_duplicate_total")
            else:
                self._deliveries.count(ExecutionStatus.SKIPPED)
                error = result.execution.error if result.execution else None
                log.info(
                    "tick_skipped",
                    job_id=d.job.id,
                    tick=rfc3339(d.tick),
                    reason=error.message if error else "skipped",
                )
        return claimed

    def _hold(self, due: Sequence[DueTick], error: str) -> None:
        self._metrics.inc("cronsvc_ticks_held_total", len(due))
        if not self._held_ticks:  # once per outage
            log.error("ticks_held", count=len(due), reason="store_unavailable", error=error)
        self._held_ticks += len(due)
        self._handback.hold(due)


MANUAL_CLAIM_TRIES = 3


@dataclass(eq=False, repr=False, kw_only=True, slots=True)
class JobService:
    """What the API asks of the run path: it reaches the notices and the
    deliveries through this, never the scheduler or the claim pipeline."""

    store: Store
    notices: Notices
    deliveries: Deliveries
    clock: Clock
    instance_id: str

    async def announce(self, job_id: str) -> None:
        """Never fails: a change whose notice cannot go out is picked up at the
        other instances' next resync."""
        await self.notices.job_changed(job_id)

    async def trigger_now(self, job_id: str) -> Execution:
        """Even if it is paused. The execution as recorded at the start (RUNNING,
        or SKIPPED under `forbid`). Raises `JobNotFound`."""
        for _ in range(MANUAL_CLAIM_TRIES):
            job = await self.store.get_job(job_id)
            due = DueTick(job, self.clock.now(), Trigger.MANUAL)
            claims = claims_of(
                [due], clock=self.clock, instance_id=self.instance_id, dispatched=True
            )
            (result,) = await self.store.claim_ticks(claims)
            if result.outcome is ClaimOutcome.STALE:
                continue  # changed between read and claim: read it again
            assert result.execution is not None
            if result.outcome is ClaimOutcome.CLAIMED:
                self.deliveries.replaced([result])
                self.deliveries.start(job, result.execution)
            else:
                self.deliveries.count(result.execution.status)
            return result.execution
        raise JobNotFound(job_id)
