"""/openapi.json covers every route, and real responses match its schemas."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from cronsvc.api.openapi import (
    ExecutionOut,
    JobOut,
    LedgerOut,
    NextRunsOut,
    ScheduleOut,
    TriggeredOut,
)
from tests.conftest import Receiver

Client = TestClient[web.Request, web.Application]


async def test_every_route_is_documented_with_its_methods(client: Client) -> None:
    document = await (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    served: dict[str, set[str]] = {}
    for route in client.app.router.routes():
        if route.method == "HEAD":
            continue
        path = route.resource.canonical if route.resource is not None else ""
        served.setdefault(path, set()).add(route.method.lower())
    documented = {path: set(ops) for path, ops in document["paths"].items()}
    assert documented == served


async def test_every_reference_resolves(client: Client) -> None:
    document = await (await client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if "$ref" in node else []
            return found + [r for value in node.values() for r in refs(value)]
        if isinstance(node, list):
            return [r for value in node for r in refs(value)]
        return []

    for ref in refs(document):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref


async def test_real_responses_match_the_documented_schemas(
    client: Client, receiver: Receiver
) -> None:
    created = await client.post(
        "/api/cron",
        json={
            "name": "doc",
            "cronExpression": "0 0 1 1 *",
            "webhookUrl": receiver.url,
            "tags": ["t"],
        },
    )
    job = await created.json()
    JobOut.model_validate(job)
    triggered = await (await client.post(f"/api/cron/{job['id']}/trigger")).json()
    TriggeredOut.model_validate(triggered)
    ExecutionOut.model_validate(
        await (await client.get(f"/api/execution-logs/{triggered['id']}")).json()
    )
    NextRunsOut.model_validate(await (await client.get(f"/api/cron/{job['id']}/next")).json())
    ledger = await (await client.get(f"/api/cron/{job['id']}/ledger")).json()
    LedgerOut.model_validate(ledger)
    assert [e["kind"] for e in ledger["entries"]] == ["manual"]
    preview = await client.post("/api/schedule/preview", json={"cronExpression": "@daily"})
    ScheduleOut.model_validate(await preview.json())
    for item in await (await client.get("/api/cron")).json():
        JobOut.model_validate(item)
