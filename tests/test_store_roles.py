"""The store protocol by role: every method of `Store` belongs to exactly one
role, and each backend class (and each part of the MongoDB one) implements
the methods of its roles, as coroutines, with the protocol's parameters.

This is the runtime check, by name, kind and default of each parameter; mypy
checks the types as well, where `open_store` returns each backend as a
`Store` (which every role protocol is part of). No store is opened."""

from __future__ import annotations

import inspect

import pytest

from cronsvc.store import (
    AlertStates,
    ExecutionLedger,
    ExecutionRecords,
    JobStore,
    MissedRecords,
    Reaper,
    ResultSink,
    ScheduleSource,
    Store,
    TickClaims,
)
from cronsvc.store.mongo import MongoStore
from cronsvc.store.mongo_jobs import MongoAlerts, MongoJobs, MongoSchedules
from cronsvc.store.mongo_ledger import MongoClaims, MongoLedger, MongoReaper
from cronsvc.store.sqlite import SQLiteStore

# The roles no other role is made of.
BASIC_ROLES: tuple[type, ...] = (
    JobStore,
    ScheduleSource,
    TickClaims,
    MissedRecords,
    ResultSink,
    ExecutionRecords,
    Reaper,
    AlertStates,
)
ROLES: tuple[type, ...] = (*BASIC_ROLES, ExecutionLedger, Store)


def members(protocol: type) -> dict[str, inspect.Signature]:
    """The methods a role protocol declares, its own and those of the roles
    it is made of, each with its signature."""
    return {
        name: inspect.signature(value)
        for cls in protocol.__mro__
        if cls.__module__ == "cronsvc.store"
        for name, value in vars(cls).items()
        if inspect.isfunction(value) and not name.startswith("__")  # Protocol's own
    }


def parameters(signature: inspect.Signature) -> list[tuple[str, object, object]]:
    """Name, kind and default of each parameter: what a caller relies on."""
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


def test_every_store_method_belongs_to_exactly_one_role() -> None:
    owners: dict[str, list[str]] = {}
    for role in BASIC_ROLES:
        for name in members(role):
            owners.setdefault(name, []).append(role.__name__)
    assert {name: roles for name, roles in owners.items() if len(roles) > 1} == {}
    assert set(members(Store)) == set(owners) | {"ping", "aclose"}


def test_the_execution_ledger_is_its_four_roles() -> None:
    parts = (TickClaims, MissedRecords, ResultSink, ExecutionRecords)
    assert set(members(ExecutionLedger)) == set().union(*(members(part) for part in parts))


def assert_implements(cls: type, role: type) -> None:
    for name, wanted in members(role).items():
        method = getattr(cls, name, None)
        assert method is not None, f"{cls.__name__} lacks {role.__name__}.{name}"
        assert inspect.iscoroutinefunction(method), f"{cls.__name__}.{name} is not async"
        assert parameters(inspect.signature(method)) == parameters(wanted), (
            f"{cls.__name__}.{name} differs from {role.__name__}.{name}"
        )


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role.__name__)
@pytest.mark.parametrize("backend", [SQLiteStore, MongoStore], ids=lambda cls: cls.__name__)
def test_each_backend_implements_every_role(backend: type, role: type) -> None:
    assert_implements(backend, role)


@pytest.mark.parametrize(
    ("part", "roles"),
    [
        (MongoJobs, (JobStore,)),
        (MongoSchedules, (ScheduleSource,)),
        (MongoClaims, (TickClaims,)),
        (MongoLedger, (MissedRecords, ResultSink, ExecutionRecords)),
        (MongoReaper, (Reaper,)),
        (MongoAlerts, (AlertStates,)),
    ],
    ids=["jobs", "schedules", "claims", "ledger", "reaper", "alerts"],
)
def test_each_part_of_the_mongodb_store_implements_its_roles(
    part: type, roles: tuple[type, ...]
) -> None:
    for role in roles:
        assert_implements(part, role)
