"""Ownership by rendezvous hashing: one owner per job whoever asks, shares
about even, and a change of members moves only the jobs that must move."""

from __future__ import annotations

from collections import Counter

from cronsvc.ownership import Membership, Ownership

# Ids as cronsvc makes them: creation time in ms, then a counter.
JOBS = [f"{1_764_000_000_000 + i * 37:012x}{i:012x}" for i in range(6000)]
THREE = ["instance-a", "instance-b", "instance-c"]


def owners(ownership: Ownership) -> dict[str, str]:
    return {job: ownership.owner(job) for job in JOBS}


def test_every_member_names_the_same_owner() -> None:
    views = [Ownership(me, THREE) for me in THREE]
    for job in JOBS[:500]:
        named = {view.owner(job) for view in views}
        assert len(named) == 1
        assert sum(view.owns(job) for view in views) == 1


def test_the_order_members_are_listed_in_does_not_matter() -> None:
    assert owners(Ownership("instance-a", THREE)) == owners(
        Ownership("instance-a", reversed(THREE))
    )


def test_an_instance_alone_owns_every_job() -> None:
    alone = Ownership("instance-a", [])
    assert all(alone.owns(job) for job in JOBS)


def test_an_instance_missing_from_the_members_counts_itself_in() -> None:
    unannounced = Ownership("instance-d", THREE)
    assert unannounced.members == (*THREE, "instance-d")
    assert any(unannounced.owns(job) for job in JOBS)


def test_shares_are_about_even() -> None:
    shares = Counter(owners(Ownership("instance-a", THREE)).values())
    assert set(shares) == set(THREE)
    for member in THREE:
        assert 0.28 < shares[member] / len(JOBS) < 0.39


def test_a_join_moves_only_the_jobs_the_newcomer_wins() -> None:
    before = owners(Ownership("instance-a", THREE))
    after = owners(Ownership("instance-a", [*THREE, "instance-d"]))
    moved = [job for job in JOBS if before[job] != after[job]]
    assert {after[job] for job in moved} == {"instance-d"}
    assert 0.2 < len(moved) / len(JOBS) < 0.3


def test_a_leave_moves_only_the_leavers_jobs() -> None:
    before = owners(Ownership("instance-a", THREE))
    after = owners(Ownership("instance-a", ["instance-a", "instance-c"]))
    moved = {job for job in JOBS if before[job] != after[job]}
    assert moved == {job for job in JOBS if before[job] == "instance-b"}
    assert {after[job] for job in moved} == {"instance-a", "instance-c"}


def test_instance_ids_longer_than_a_hash_key_are_told_apart() -> None:
    long_a, long_b = "x" * 100 + "a", "x" * 100 + "b"
    shares = Counter(owners(Ownership(long_a, [long_b])).values())
    assert set(shares) == {long_a, long_b}


def test_membership_tells_its_listeners_only_when_the_owners_change() -> None:
    membership = Membership("a")
    told: list[tuple[str, ...]] = []
    membership.listeners.append(lambda before, after: told.append(after.members))
    assert membership.current.alone
    membership.update([])  # alone, as before
    membership.update(["a"])
    assert told == []
    membership.update(["b", "a"])
    membership.update(["a", "b"])
    assert told == [("a", "b")]
    membership.update(["c"])  # b left, c came, a counts itself in
    assert told == [("a", "b"), ("a", "c")]
    assert not membership.current.alone


def test_members_still_loading_at_a_cold_start_count_as_members() -> None:
    membership = Membership("a")
    membership.update(["a"], loading=["b", "c"])
    assert membership.current.members == ("a", "b", "c")
    membership.update(["a", "b"], loading=["c"])  # b done loading: nothing moves
    assert membership.current.members == ("a", "b", "c")
    membership.update(["a", "b"])  # c gave loading up: its share is taken
    assert membership.current.members == ("a", "b")
