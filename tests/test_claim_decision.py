"""The tick claim decision both stores make, as a pure function: a table of
batches (jobs as read, records stored, claims in order) and what each claim
comes to. No store is opened; the contract suite checks the stores apply it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from cronsvc.domain import ConcurrencyPolicy, ErrorInfo, Execution, ExecutionStatus, Trigger
from cronsvc.store import ClaimOutcome, ClaimResult, TickClaim
from cronsvc.store.common import (
    DUPLICATE,
    STALE,
    TICK_SLOT,
    CheckedClaim,
    ClaimJob,
    StoredClaims,
    advanced_ticks,
    answer_again,
    check_claims,
    decide_claims,
    inserted_dispatched,
    unix_ms,
    watched_jobs,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ALLOW, FORBID, REPLACE = (
    ConcurrencyPolicy.ALLOW,
    ConcurrencyPolicy.FORBID,
    ConcurrencyPolicy.REPLACE,
)
CLAIMED, SKIPPED = ClaimOutcome.CLAIMED, ClaimOutcome.SKIPPED
SCHEDULE, CATCHUP, MANUAL = Trigger.SCHEDULE, Trigger.CATCHUP, Trigger.MANUAL


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def ms(minutes: int) -> int:
    return unix_ms(at(minutes))


def job(
    policy: ConcurrencyPolicy = ALLOW,
    *,
    version: int = 1,
    active: bool = True,
    deferred_until: int | None = None,
) -> ClaimJob:
    deferred_ms = None if deferred_until is None else ms(deferred_until)
    return ClaimJob(version, active, "the job", policy, deferred_ms)


def claim(
    execution_id: str,
    minute: int,
    *,
    job_id: str = "j1",
    trigger: Trigger = SCHEDULE,
    version: int = 1,
    dispatched: bool = False,
) -> TickClaim:
    return TickClaim(
        job_id=job_id,
        expected_version=version,
        scheduled_at=at(minute),
        trigger=trigger,
        execution_id=execution_id,
        instance_id="i1",
        executed_at=at(minute) + timedelta(microseconds=1500),
        dispatched=dispatched,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Expect:
    """What one claim comes to: its outcome, the error type of a SKIPPED
    record, and the runs a CLAIMED `replace` claim ends."""

    outcome: ClaimOutcome
    skip: str | None = None
    replaced: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    jobs: dict[str, ClaimJob]
    claims: list[TickClaim]
    expect: list[Expect]
    running: dict[str, list[str]] = field(default_factory=dict)
    taken: set[tuple[str, int, str]] = field(default_factory=set)
    last_ticks: dict[str, int] = field(default_factory=dict)


RUNS = Expect(outcome=CLAIMED)
STALE_ = Expect(outcome=ClaimOutcome.STALE)
DUPLICATE_ = Expect(outcome=ClaimOutcome.DUPLICATE)
FORBIDDEN = Expect(outcome=SKIPPED, skip="skipped")
DEFERRED = Expect(outcome=SKIPPED, skip="deferred")

CASES = {
    "allow runs beside what runs": Case(
        jobs={"j1": job(ALLOW)},
        running={"j1": ["old"]},
        claims=[claim("e1", 1), claim("e2", 2)],
        expect=[RUNS, RUNS],
        last_ticks={"j1": ms(2)},
    ),
    "forbid skips while a stored run runs": Case(
        jobs={"j1": job(FORBID)},
        running={"j1": ["old"]},
        claims=[claim("e1", 1)],
        expect=[FORBIDDEN],
        last_ticks={"j1": ms(1)},
    ),
    "forbid runs when nothing runs, then skips for the run it started": Case(
        jobs={"j1": job(FORBID)},
        claims=[claim("e1", 1), claim("e2", 2)],
        expect=[RUNS, FORBIDDEN],
        last_ticks={"j1": ms(2)},
    ),
    "replace ends what runs": Case(
        jobs={"j1": job(REPLACE)},
        running={"j1": ["old1", "old2"]},
        claims=[claim("e1", 1)],
        expect=[Expect(outcome=CLAIMED, replaced=("old1", "old2"))],
        last_ticks={"j1": ms(1)},
    ),
    "replace ends the run claimed earlier in the batch": Case(
        jobs={"j1": job(REPLACE)},
        running={"j1": ["old"]},
        claims=[claim("e1", 1), claim("e2", 2)],
        expect=[
            Expect(outcome=CLAIMED, replaced=("old",)),
            Expect(outcome=CLAIMED, replaced=("e1",)),
        ],
        last_ticks={"j1": ms(2)},
    ),
    "replace with nothing running ends nothing": Case(
        jobs={"j1": job(REPLACE)},
        claims=[claim("e1", 1)],
        expect=[RUNS],
        last_ticks={"j1": ms(1)},
    ),
    "a paused job's ticks are stale": Case(
        jobs={"j1": job(active=False)},
        claims=[claim("e1", 1), claim("e2", 2, trigger=CATCHUP)],
        expect=[STALE_, STALE_],
    ),
    "a paused job still runs when triggered by hand": Case(
        jobs={"j1": job(active=False)},
        claims=[claim("e1", 1, trigger=MANUAL)],
        expect=[RUNS],
    ),
    "a changed version or a gone job makes the claim stale": Case(
        jobs={"j1": job(version=2)},
        claims=[claim("e1", 1), claim("e2", 1, job_id="gone"), claim("e3", 2, version=2)],
        expect=[STALE_, STALE_, RUNS],
        last_ticks={"j1": ms(2)},
    ),
    "ticks before a Retry-After are skipped, later ones run": Case(
        jobs={"j1": job(deferred_until=2)},
        claims=[claim("e1", 1), claim("e2", 2), claim("e3", 3, trigger=CATCHUP)],
        expect=[DEFERRED, RUNS, RUNS],
        last_ticks={"j1": ms(3)},
    ),
    "a run by hand ignores a Retry-After": Case(
        jobs={"j1": job(deferred_until=5)},
        claims=[claim("e1", 1, trigger=MANUAL)],
        expect=[RUNS],
    ),
    "a Retry-After is named before a forbid": Case(
        jobs={"j1": job(FORBID, deferred_until=5)},
        running={"j1": ["old"]},
        claims=[claim("e1", 1)],
        expect=[DEFERRED],
        last_ticks={"j1": ms(1)},
    ),
    "a deferred replace ends nothing": Case(
        jobs={"j1": job(REPLACE, deferred_until=5)},
        running={"j1": ["old"]},
        claims=[claim("e1", 1)],
        expect=[DEFERRED],
        last_ticks={"j1": ms(1)},
    ),
    "a tick with a record is a duplicate": Case(
        jobs={"j1": job()},
        taken={("j1", ms(1), TICK_SLOT)},
        claims=[claim("e1", 1), claim("e2", 2)],
        expect=[DUPLICATE_, RUNS],
        last_ticks={"j1": ms(2)},
    ),
    "a slot taken twice in one batch": Case(
        jobs={"j1": job(FORBID)},
        claims=[claim("e1", 1), claim("e2", 1, trigger=CATCHUP)],
        expect=[RUNS, DUPLICATE_],
        last_ticks={"j1": ms(1)},
    ),
    "a duplicate replace ends nothing": Case(
        jobs={"j1": job(REPLACE)},
        running={"j1": ["old"]},
        taken={("j1", ms(1), TICK_SLOT)},
        claims=[claim("e1", 1)],
        expect=[DUPLICATE_],
    ),
    "runs by hand take slots of their own": Case(
        jobs={"j1": job()},
        claims=[claim("e1", 1), claim("e2", 1, trigger=MANUAL), claim("e3", 1, trigger=MANUAL)],
        expect=[RUNS, RUNS, RUNS],
        last_ticks={"j1": ms(1)},
    ),
    "last tick: the latest per job, skipped ones too, never back": Case(
        jobs={"j1": job(FORBID), "j2": job()},
        running={"j1": ["old"]},
        claims=[
            claim("e1", 3),
            claim("e2", 1),
            claim("e3", 2, job_id="j2"),
            claim("e4", 1, job_id="j2"),
            claim("e5", 9, job_id="j2", trigger=MANUAL),
        ],
        expect=[FORBIDDEN, FORBIDDEN, RUNS, RUNS, RUNS],
        last_ticks={"j1": ms(3), "j2": ms(2)},
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_each_claim_comes_to_its_outcome(case: Case) -> None:
    checked = check_claims(case.claims, case.jobs)
    stored = StoredClaims(taken=case.taken, running=case.running)

    decision = decide_claims(checked, stored)

    got = [
        Expect(
            outcome=result.outcome,
            skip=None
            if result.execution is None or result.execution.error is None
            else result.execution.error.type,
            replaced=result.replaced,
        )
        for result in decision.results
    ]
    assert got == case.expect
    assert decision.last_ticks == case.last_ticks
    with_records = [n for n, result in enumerate(decision.results) if result.execution is not None]
    assert decision.inserts == with_records
    assert decision.replacing == {
        n: result.replaced
        for n, (result, entry) in enumerate(zip(decision.results, checked, strict=True))
        if result.outcome is CLAIMED and entry is not None and entry.job.policy is REPLACE
    }


def test_records_are_the_claims_at_stored_precision() -> None:
    claims = [claim("e1", 1, job_id="j1"), claim("e2", 1, job_id="j2")]
    jobs = {"j1": job(), "j2": job(FORBID)}
    checked = check_claims(claims, jobs)

    claimed, skipped = decide_claims(checked, StoredClaims(running={"j2": ["old"]})).results

    assert claimed.execution == Execution(
        id="e1",
        job_id="j1",
        job_name="the job",
        trigger=SCHEDULE,
        scheduled_at=at(1),
        status=ExecutionStatus.RUNNING,
        instance_id="i1",
        executed_at=at(1) + timedelta(milliseconds=1),
    )
    assert skipped.execution == Execution(
        id="e2",
        job_id="j2",
        job_name="the job",
        trigger=SCHEDULE,
        scheduled_at=at(1),
        status=ExecutionStatus.SKIPPED,
        instance_id="i1",
        finished_at=at(1) + timedelta(milliseconds=1),
        error=ErrorInfo(
            type="skipped",
            message="concurrency policy forbid: execution old of this job is still running",
        ),
    )


def test_deciding_leaves_what_was_read_as_it_was() -> None:
    taken = {("j9", ms(1), TICK_SLOT)}
    running = {"j1": ["old"], "j2": ["old2"]}
    claims = [claim("e1", 1), claim("e2", 2), claim("e3", 1, job_id="j2")]
    checked = check_claims(claims, {"j1": job(REPLACE), "j2": job(FORBID)})

    decide_claims(checked, StoredClaims(taken=taken, running=running))

    assert taken == {("j9", ms(1), TICK_SLOT)}
    assert running == {"j1": ["old"], "j2": ["old2"]}


def test_only_forbid_and_replace_jobs_are_watched() -> None:
    jobs = {"a": job(ALLOW), "f": job(FORBID), "r": job(REPLACE), "p": job(FORBID, active=False)}
    claims = [claim(f"e{job_id}", 1, job_id=job_id) for job_id in jobs]

    assert watched_jobs(check_claims(claims, jobs)) == {"f", "r"}


def test_a_claim_is_inserted_dispatched_when_sent_at_once_or_skipped() -> None:
    claimed = ClaimResult(outcome=CLAIMED)
    skipped = ClaimResult(outcome=SKIPPED)

    assert inserted_dispatched(claim("e1", 1, dispatched=True), claimed)
    assert not inserted_dispatched(claim("e1", 1, dispatched=False), claimed)
    assert inserted_dispatched(claim("e1", 1, dispatched=False), skipped)


# -- A claim retried after its answer was lost (a store without one
# transaction per batch finds the record its first attempt wrote) ----------


def record(entry: CheckedClaim, status: ExecutionStatus, **changes: object) -> Execution:
    values: dict[str, object] = {
        "id": entry.claim.execution_id,
        "job_id": entry.claim.job_id,
        "job_name": "the job",
        "trigger": entry.claim.trigger,
        "scheduled_at": entry.claim.scheduled_at,
        "status": status,
        "instance_id": entry.claim.instance_id,
    }
    values.update(changes)
    return Execution(**values)  # type: ignore[arg-type]


def checked_one(claim_: TickClaim, policy: ConcurrencyPolicy = ALLOW) -> CheckedClaim:
    [entry] = check_claims([claim_], {claim_.job_id: job(policy)})
    assert entry is not None
    return entry


@pytest.mark.parametrize(
    ("status", "changes", "slot", "outcome"),
    [
        (ExecutionStatus.RUNNING, {}, TICK_SLOT, CLAIMED),
        (ExecutionStatus.SKIPPED, {}, TICK_SLOT, SKIPPED),
        (ExecutionStatus.SUCCESS, {}, TICK_SLOT, ClaimOutcome.DUPLICATE),
        (ExecutionStatus.RUNNING, {"instance_id": "i2"}, TICK_SLOT, ClaimOutcome.DUPLICATE),
        (ExecutionStatus.RUNNING, {"job_id": "j2"}, TICK_SLOT, ClaimOutcome.DUPLICATE),
        (ExecutionStatus.RUNNING, {"scheduled_at": at(2)}, TICK_SLOT, ClaimOutcome.DUPLICATE),
        (ExecutionStatus.RUNNING, {"trigger": CATCHUP}, TICK_SLOT, ClaimOutcome.DUPLICATE),
        (ExecutionStatus.RUNNING, {}, "e1", ClaimOutcome.DUPLICATE),
    ],
)
def test_a_record_with_the_claims_id_answers_it_only_if_it_is_that_claim(
    status: ExecutionStatus, changes: dict[str, object], slot: str, outcome: ClaimOutcome
) -> None:
    entry = checked_one(claim("e1", 1))
    stored = record(entry, status, **changes)

    answer = answer_again(entry, stored, slot)

    assert answer.outcome is outcome
    assert answer.execution == (None if outcome is ClaimOutcome.DUPLICATE else stored)


def test_a_retried_claim_gets_its_first_answer_and_ends_again_what_it_replaces() -> None:
    claims = [claim("e1", 1), claim("e2", 2)]
    checked = check_claims(claims, {"j1": job(REPLACE)})
    assert checked[0] is not None
    first = ClaimResult(outcome=CLAIMED, execution=record(checked[0], ExecutionStatus.RUNNING))
    stored = StoredClaims(
        taken={("j1", ms(1), TICK_SLOT)},
        running={"j1": ["old", "e1"]},
        earlier={"e1": first},
    )

    decision = decide_claims(checked, stored)

    again, second = decision.results
    assert (again.outcome, again.execution, again.replaced) == (CLAIMED, first.execution, ("old",))
    assert second.replaced == ("e1",)
    assert decision.inserts == [1]
    assert decision.replacing == {0: ("old",), 1: ("e1",)}
    assert decision.last_ticks == {"j1": ms(2)}


def test_a_retried_claim_that_was_a_duplicate_stays_one() -> None:
    checked = check_claims([claim("e1", 1)], {"j1": job()})

    decision = decide_claims(checked, StoredClaims(earlier={"e1": DUPLICATE}))

    assert decision.results == [DUPLICATE]
    assert (decision.inserts, decision.last_ticks) == ([], {})


def test_a_claim_that_lost_its_key_at_the_write_does_not_move_the_last_tick() -> None:
    claims = [claim("e1", 1), claim("e2", 3), claim("e3", 2, job_id="j2")]
    checked = check_claims(claims, {"j1": job(), "j2": job()})
    results = list(decide_claims(checked, StoredClaims()).results)

    results[1] = DUPLICATE
    results[2] = STALE

    assert advanced_ticks(checked, results) == {"j1": ms(1)}
