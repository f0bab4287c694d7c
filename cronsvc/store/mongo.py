"""The MongoDB backend of `Store` (pymongo's asyncio client): the connection and
the indexes; the roles are mixins over `MongoPart` (mongo_jobs, mongo_ledger).
No multi-document transactions (nx-27017 has none worth relying on): each
write is atomic on its document, and each multi-document call is safe to retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import parse_qsl

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConfigurationError, OperationFailure, PyMongoError

from cronsvc.errors import ConfigError, StoreUnavailable
from cronsvc.store.mongo_base import JOB_NAME_INDEX, RUNNING, Doc, is_unavailable
from cronsvc.store.mongo_jobs import MongoAlerts, MongoJobs, MongoSchedules
from cronsvc.store.mongo_ledger import MongoClaims, MongoLedger, MongoReaper
from cronsvc.urls import redact_url

_DEFAULT_DATABASE = "cronsvc"
# Client options the URL may override (`_client_options`). A call that cannot reach a server
# fails within a few seconds (StoreUnavailable) instead of hanging a tick.
_CLIENT_DEFAULTS: Final[Mapping[str, Any]] = {
    "serverSelectionTimeoutMS": 5000,
    "connectTimeoutMS": 5000,
    "socketTimeoutMS": 30000,
    "appname": "cronsvc",
}
_INDEX_OPTIONS_CONFLICT = frozenset({85, 86})  # IndexOptionsConflict, IndexKeySpecsConflict
_TTL_INDEX = "executions_ttl"


class MongoStore(MongoJobs, MongoSchedules, MongoClaims, MongoLedger, MongoReaper, MongoAlerts):
    """`Store` on MongoDB; open with `await MongoStore.open(url)`."""

    @classmethod
    async def open(cls, url: str, *, retention_days: float | None = None) -> MongoStore:
        """With `retention_days`, keep a TTL index on final records (changing an
        existing one's expiry); without, an existing TTL index is left alone."""
        if retention_days is not None and not retention_days > 0:
            raise ValueError(f"retention_days must be positive, not {retention_days!r}")
        safe_url = redact_url(url)
        try:
            client: AsyncMongoClient[Doc] = AsyncMongoClient(
                url, tz_aware=True, **_client_options(url)
            )
        except (ConfigurationError, ValueError) as e:  # InvalidURI, a bad port
            raise ConfigError(f"store.url: {safe_url} is not a usable MongoDB URL: {e}") from None
        try:
            database = client.get_default_database(_DEFAULT_DATABASE)
            build_info = await client.admin.command("buildInfo")
            await _create_indexes(database, build_info, retention_days)
        except BaseException as e:
            await asyncio.shield(client.close())
            if isinstance(e, PyMongoError) and is_unavailable(e):
                raise StoreUnavailable(f"mongodb store {safe_url}: {e}") from e
            raise
        return cls(client, database, safe_url)

    def __repr__(self) -> str:
        return f"MongoStore({self._url!r})"

    async def ping(self) -> None:
        with self._calling():
            await self._client.admin.command("ping")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True  # from here on every call is refused
        await asyncio.shield(self._client.close())  # a cancelled aclose still closes


async def _create_indexes(
    database: AsyncDatabase[Doc], build_info: Mapping[str, Any], retention_days: float | None
) -> None:
    # nx-27017 builds a compound index holding `_id` that makes every later
    # insert fail; there, the newest-first indexes end at `scheduled_at`.
    nx_27017 = build_info.get("process") == "nx_27017"
    tie: list[tuple[str, int]] = [] if nx_27017 else [("_id", DESCENDING)]
    newest = [("scheduled_at", DESCENDING), *tie]
    running = {"status": RUNNING}
    executions = database["executions"]
    await executions.create_indexes(
        [
            IndexModel(
                [("job_id", ASCENDING), ("scheduled_at", ASCENDING), ("slot", ASCENDING)],
                name="tick_key",
                unique=True,
            ),
            IndexModel(newest, name="newest"),
            IndexModel([("job_id", ASCENDING), *newest], name="by_job"),
            IndexModel([("status", ASCENDING), *newest], name="by_status"),
            IndexModel(
                [("job_id", ASCENDING)], name="running_by_job", partialFilterExpression=running
            ),
            IndexModel(
                [("instance_id", ASCENDING)],
                name="running_by_instance",
                partialFilterExpression=running,
            ),
        ]
    )
    await database["jobs"].create_indexes(
        [
            IndexModel([("name", ASCENDING)], name=JOB_NAME_INDEX, unique=True),
            IndexModel([("is_active", ASCENDING)], name="active"),
            IndexModel([("tags", ASCENDING)], name="tags"),
        ]
    )
    if retention_days is None:
        return
    expire_after_s = max(1, round(retention_days * 86400))
    index = IndexModel(
        [("finished_date", ASCENDING)], name=_TTL_INDEX, expireAfterSeconds=expire_after_s
    )
    try:
        await executions.create_indexes([index])
    except OperationFailure as e:
        if e.code not in _INDEX_OPTIONS_CONFLICT:
            raise
        await database.command(
            "collMod",
            executions.name,
            index={"name": _TTL_INDEX, "expireAfterSeconds": expire_after_s},
        )


def _client_options(url: str) -> dict[str, Any]:
    query = url.partition("?")[2]
    given = {name.lower() for name, _ in parse_qsl(query.replace(";", "&"))}
    return {name: value for name, value in _CLIENT_DEFAULTS.items() if name.lower() not in given}
