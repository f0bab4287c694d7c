"""/openapi.json covers every route, and real responses match its schemas."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from cronsvc.api.app import create_app
from cronsvc.api.context import json_response
from cronsvc.api.openapi import Undocumented, build_document
from cronsvc.api.problems import ProblemOut, problem
from cronsvc.api.schemas import (
    ExecutionOut,
    JobOut,
    LedgerOut,
    NextRunsOut,
    ReadinessOut,
    ScheduleOut,
    TriggeredOut,
)
from cronsvc.config import Config
from cronsvc.domain import (
    AttemptRecord,
    ErrorInfo,
    Execution,
    ExecutionStatus,
    Job,
    JobSpec,
    Trigger,
)
from cronsvc.errors import FieldError
from tests.fakes import Receiver
from tests.helpers_api import Client, MakeClient
from tests.standard_webhooks import new_secret

TOKEN = "openapi-test-token-0123456789"
HEALTH = {"/healthz", "/readyz", "/api/health-check"}
PUBLIC = HEALTH | {"/docs", "/docs/", "/docs/{asset}", "/", "/dashboard/{asset}"}
PATH_VALUES = {"{id}": "0123456789abcdef01234567", "{cronJobId}": "x", "{asset}": "docs.js"}


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


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
    async with asyncio.timeout(10):
        while True:
            finished = await (await client.get(f"/api/execution-logs/{triggered['id']}")).json()
            if finished["status"] != "RUNNING":
                break
            await asyncio.sleep(0.05)
    assert finished["attemptLog"]
    ExecutionOut.model_validate(finished)
    # A generated secret (answered once) and a rotation in progress.
    generated = await client.patch(f"/api/cron/{job['id']}", json={"secret": "generate"})
    JobOut.model_validate(await generated.json())
    rotated = await client.patch(f"/api/cron/{job['id']}", json={"secret": "generate"})
    rotated_job = await rotated.json()
    assert rotated_job["previousSecretExpiresAt"] is not None
    JobOut.model_validate(rotated_job)
    NextRunsOut.model_validate(await (await client.get(f"/api/cron/{job['id']}/next")).json())
    ledger = await (await client.get(f"/api/cron/{job['id']}/ledger")).json()
    LedgerOut.model_validate(ledger)
    assert [e["kind"] for e in ledger["entries"]] == ["manual"]
    preview = await client.post("/api/schedule/preview", json={"cronExpression": "@daily"})
    ScheduleOut.model_validate(await preview.json())
    alerts = {"url": receiver.url, "secret": new_secret(), "format": "slack"}
    alerting = await client.patch(f"/api/cron/{job['id']}", json={"alerts": alerts})
    JobOut.model_validate(await alerting.json())
    for item in await (await client.get("/api/cron")).json():
        JobOut.model_validate(item)


async def test_the_alerts_field_is_documented_write_only_secret_and_all(client: Client) -> None:
    schemas = (await (await client.get("/openapi.json")).json())["components"]["schemas"]
    alerts_in = schemas["AlertsIn"]["properties"]
    alerts_out = schemas["AlertsOut"]
    assert set(alerts_in) == {"enabled", "url", "after", "onRecovery", "format", "secret"}
    assert alerts_in["after"]["minimum"] == 1 and alerts_in["after"]["maximum"] == 1000
    assert alerts_in["format"]["$ref"].endswith("/AlertFormat")
    assert schemas["AlertFormat"]["enum"] == ["standard", "slack"]
    assert "secret" not in alerts_out["properties"] and "hasSecret" in alerts_out["required"]
    for model in ("JobIn", "JobOut"):
        [*kinds] = schemas[model]["properties"]["alerts"]["anyOf"]
        assert {"type": "null"} in kinds and len(kinds) == 2, model


async def test_the_auth_scheme_is_bearer_and_required_unless_an_operation_opts_out(
    client: Client,
) -> None:
    document = await (await client.get("/openapi.json")).json()
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert document["security"] == [{"bearerAuth": []}]
    for path, method, operation in operations(document):
        if path in PUBLIC:
            assert operation["security"] == [], path
            assert "401" not in operation["responses"], path
        else:
            assert operation.get("security", document["security"]) == [{"bearerAuth": []}]
            assert "401" in operation["responses"], f"{method} {path}"
            assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]


async def test_every_operation_lists_its_errors(client: Client) -> None:
    document = await (await client.get("/openapi.json")).json()
    for path, method, operation in operations(document):
        responses = operation["responses"]
        assert "500" in responses, path
        assert ("429" in responses) == (path not in HEALTH), f"{method} {path}"
        if "429" in responses:
            assert "Retry-After" in responses["429"]["headers"]
        if "requestBody" in operation:
            assert {"400", "413", "415"} <= set(responses), f"{method} {path}"
        if "{id}" in path:
            assert "404" in responses, f"{method} {path}"
    create = document["paths"]["/api/cron"]["post"]["responses"]
    assert "409" in create and "max_jobs" in create["409"]["description"]


async def test_the_server_asks_for_a_token_exactly_where_the_document_says(
    make_client: MakeClient, config: Config
) -> None:
    """Every documented operation, called without a token on a service with
    tokens: 401 unless the document marks it `security: []`."""
    secured = await make_client(
        server=config.server.model_copy(update={"api_tokens": [TOKEN]}),
    )
    document = await (
        await secured.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
    ).json()
    for path, method, operation in operations(document):
        url = path
        for placeholder, value in PATH_VALUES.items():
            url = url.replace(placeholder, value)
        response = await secured.request(method, url)
        if operation.get("security") == []:
            assert response.status != 401, f"{method} {path}"
        else:
            assert response.status == 401, f"{method} {path}"


async def test_every_asset_is_served_as_a_documented_media_type(client: Client) -> None:
    document = await (await client.get("/openapi.json")).json()
    for path in ("/docs/{asset}", "/dashboard/{asset}"):
        operation = document["paths"][path]["get"]
        documented = set(operation["responses"]["200"]["content"])
        (asset,) = (p for p in operation["parameters"] if p["name"] == "asset")
        served = set()
        for name in asset["schema"]["enum"]:
            response = await client.get(path.replace("{asset}", name))
            assert response.status == 200, name
            served.add(response.content_type)
        assert served == documented, path


def query_parameters(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (path, parameter)
        for path, method, operation in operations(document)
        if method == "get"
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "query"
    ]


async def test_an_empty_query_parameter_is_refused_exactly_where_the_schema_says(
    client: Client,
) -> None:
    """Cursors and instants are never empty: the schema says minLength 1, and
    an empty one is a 400 naming it, on every list that takes one."""
    document = await (await client.get("/openapi.json")).json()
    checked = set()
    for path, parameter in query_parameters(document):
        name, schema = parameter["name"], parameter["schema"]
        if name in ("cursor", "since", "until"):
            assert schema.get("minLength") == 1, f"{path} {name}"
        if schema.get("minLength", 0) >= 1:
            url = path.replace("{id}", "0" * 24).replace("{cronJobId}", "x")
            response = await client.get(url, params={name: ""})
            assert response.status == 400, f"{path} {name}"
            errors = (await response.json())["errors"]
            assert name in {e["field"] for e in errors}, f"{path} {name}"
            checked.add(name)
    assert {"cursor", "since", "until", "cronExpression"} <= checked


async def test_the_preview_query_takes_what_its_body_takes(client: Client) -> None:
    document = await (await client.get("/openapi.json")).json()
    body = document["components"]["schemas"]["PreviewIn"]["properties"]
    query = {
        p["name"]: p["schema"]
        for p in document["paths"]["/api/schedule/preview"]["get"]["parameters"]
    }
    assert query.keys() == body.keys()
    bounds = ("minLength", "maxLength", "minimum", "maximum", "default")
    for name, schema in query.items():
        assert {k: schema.get(k) for k in bounds} == {k: body[name].get(k) for k in bounds}, name


async def test_readiness_answers_match_the_documented_schema_with_and_without_a_token(
    make_client: MakeClient, config: Config
) -> None:
    secured = await make_client(server=config.server.model_copy(update={"api_tokens": [TOKEN]}))
    with_token = {"Authorization": f"Bearer {TOKEN}"}
    document = await (await secured.get("/openapi.json", headers=with_token)).json()
    schema = document["components"]["schemas"]["ReadinessOut"]
    assert set(schema["required"]) == {"status", "checks"}  # the rest needs a token
    for name in ("instanceId", "version", "startedAt"):
        assert "token" in schema["properties"][name]["description"]
    for path in ("/readyz", "/api/health-check"):
        operation = document["paths"][path]["get"]
        assert operation["security"] == []
        for status in ("200", "503"):
            content = operation["responses"][status]["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/ReadinessOut"}
        for headers in ({}, with_token):
            ReadinessOut.model_validate(await (await secured.get(path, headers=headers)).json())


def test_a_route_without_a_declared_operation_fails_the_document() -> None:
    app = create_app()
    assert "/api/cron/{id}/ledger" in build_document(app)["paths"]

    async def undeclared(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_get("/undeclared", undeclared)
    with pytest.raises(Undocumented, match="GET /undeclared"):
        build_document(app)


TICK = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def execution() -> Execution:
    return Execution(
        id="e" * 24,
        job_id="j" * 24,
        job_name="nightly",
        trigger=Trigger.MANUAL,
        scheduled_at=TICK,
        status=ExecutionStatus.FAILURE,
        instance_id="i-1",
        executed_at=TICK,
        finished_at=TICK + timedelta(seconds=1),
        duration_ms=1000,
        attempts=1,
        response_status=500,
        response_body="désolé",
        error=ErrorInfo(type="http_status", message="500"),
        attempt_log=(
            AttemptRecord(
                attempt=1,
                started_at=TICK,
                duration_ms=1000,
                response_status=500,
                error=ErrorInfo(type="http_status", message="500"),
            ),
        ),
    )


def body(answer: Any) -> str:
    return json_response(answer).text or ""


def test_an_execution_is_answered_byte_for_byte_as_it_always_was() -> None:
    error = '{"type":"http_status","message":"500"}'
    fields = (
        f'"id":"{"e" * 24}","cronJobId":"{"j" * 24}","jobName":"nightly","trigger":"manual",'
        '"scheduledAt":"2026-01-02T03:04:05.678Z","executedAt":"2026-01-02T03:04:05.678Z",'
        '"finishedAt":"2026-01-02T03:04:06.678Z","durationMs":1000,"status":"FAILURE",'
        '"attempts":1,"responseStatus":500,"responseBody":"désolé","responseTruncated":false,'
        f'"error":{error},"attemptLog":[{{"attempt":1,"startedAt":"2026-01-02T03:04:05.678Z",'
        f'"durationMs":1000,"responseStatus":500,"error":{error},"retryAfterMs":null}}],'
        '"instanceId":"i-1"'
    )
    assert body(ExecutionOut.from_domain(execution()).wire()) == "{" + fields + "}"
    legacy = ExecutionOut.from_domain(execution(), legacy_ids=True).wire()
    assert body(legacy) == f'{{"_id":"{"e" * 24}",{fields}}}'
    triggered = TriggeredOut.started(execution(), legacy_ids=False).wire()
    assert body(triggered) == f'{{"executionId":"{"e" * 24}",{fields}}}'
    ExecutionOut.model_validate(legacy)
    TriggeredOut.model_validate(triggered)
    listed = ExecutionOut.json_list([ExecutionOut.fields(execution())] * 2)
    assert listed.decode() == f"[{{{fields}}},{{{fields}}}]"
    assert ExecutionOut.json_list([]) == b"[]"


def test_a_problem_is_written_by_the_model_that_documents_it() -> None:
    invalid = problem(400, "bad", errors=[FieldError("name", "is required")])
    assert invalid.text == (
        '{"type": "about:blank", "title": "Bad Request", "status": 400, "detail": "bad", '
        '"errors": [{"field": "name", "message": "is required"}]}'
    )
    limited = problem(409, "full", type="urn:x", title="Full", limit=2)
    assert limited.text == (
        '{"type": "urn:x", "title": "Full", "status": 409, "detail": "full", "limit": 2}'
    )
    assert problem(404, "").text == '{"type": "about:blank", "title": "Not Found", "status": 404}'
    for answer in (invalid, limited):
        ProblemOut.model_validate_json(answer.text or "")
    document = build_document(create_app())
    ref = {"$ref": "#/components/schemas/ProblemOut"}
    for _, _, operation in operations(document):
        errors = operation["responses"]["500"]["content"]
        assert errors == {"application/problem+json": {"schema": ref}}
        for response in operation["responses"].values():
            problems = response.get("content", {}).get("application/problem+json")
            assert problems in (None, {"schema": ref})


def test_a_job_answer_leaves_out_what_it_does_not_carry_and_keeps_its_numbers() -> None:
    spec = JobSpec(
        name="j",
        cron_expression="@daily",
        webhook_url="https://e.org/",
        body={"big": 10**30, "small": 1e-05, "list": [1.5, None]},
        timeout_seconds=10,
        headers={"X-A": "b"},
        tags=("t",),
    )
    job = Job(id="0" * 24, spec=spec, created_at=TICK, updated_at=TICK, last_tick=TICK)
    wire = JobOut.from_domain(job, None, now=TICK).wire()
    assert "_id" not in wire and "secret" not in wire
    assert list(wire)[:3] == ["id", "name", "cronExpression"]
    assert list(wire)[-3:] == ["version", "pausedReason", "deferredUntil"]
    assert '"timeoutSeconds":10,' in body(wire)
    assert '"body":{"big":1000000000000000000000000000000,"small":1e-05,' in body(wire)
    generated = JobOut.from_domain(job, TICK, now=TICK, secret="s", legacy_ids=True).wire()
    keys = list(generated)
    assert (keys[0], keys[-1]) == ("_id", "secret")
    assert generated["nextRunAt"] == "2026-01-02T03:04:05.678Z"
    JobOut.model_validate(json.loads(body(generated)))
