"""Health, readiness, metrics and the cluster view."""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from cronsvc import __version__
from cronsvc.api.auth import may_see_details
from cronsvc.api.context import ApiContext, ctx, json_response
from cronsvc.api.operations import ANY_OBJECT, TEXT, Operation
from cronsvc.api.schemas import NEEDS_A_TOKEN, ClusterOut, ReadinessChecksOut, ReadinessOut
from cronsvc.health import Dependency
from cronsvc.metrics import CONTENT_TYPE

routes = web.RouteTableDef()


@routes.get("/healthz")
@Operation("Liveness", tag="system", answer=ANY_OBJECT)
async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


def _readiness(api: ApiContext, *, details: bool) -> tuple[bool, ReadinessOut]:
    """Ready or not, and the body: the status and each check; with `details`,
    also which instance this is (an unauthenticated probe learns only up or
    down). Ready means able to serve the API: the store answers and the
    scheduler has loaded it. A coordinator that does not answer is a named
    degradation (`degraded`, 200): firing goes on, fenced by the store, and a
    load balancer must not take a whole cluster out for a Redis blip. Read
    from the background probe (`cronsvc.health`), so it answers at once."""
    store = api.health.state(Dependency.STORE)
    coordinator = api.health.state(Dependency.COORDINATOR)
    checks = ReadinessChecksOut.of(
        store=store.detail if not store.up else "ok",
        coordinator=coordinator.detail if not coordinator.up else "ok",
        scheduler="ok" if api.scheduler_ready.is_set() else "starting",
    )
    ready = checks.store == "ok" and checks.scheduler == "ok"
    degraded = ["coordinator"] if checks.coordinator != "ok" else []
    status = "unavailable" if not ready else "degraded" if degraded else "ok"
    optional: dict[str, Any] = {"degraded": degraded} if degraded else {}
    if details:
        optional |= {
            "instance_id": api.instance_id,
            "version": __version__,
            "started_at": api.started_at,
        }
    return ready, ReadinessOut.of(status=status, checks=checks, **optional)


_READINESS = Operation(
    "Readiness of store, coordinator and scheduler",
    tag="system",
    answer=ReadinessOut,
    also={503: "not ready: the body says which check failed"},
    description="Answered without a token, for load balancers. Which instance answered "
    f"(instanceId, version, startedAt) is in the body {NEEDS_A_TOKEN}.",
)


@routes.get("/readyz")
@_READINESS
async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 while the API can serve (the store answers, the
    scheduler has loaded), a coordinator outage named in the body; 503
    otherwise."""
    ready, body = _readiness(ctx(request), details=may_see_details(request))
    return json_response(body.wire(), status=200 if ready else 503)


@routes.get("/api/health-check")
@dataclasses.replace(_READINESS, summary="Readiness (the Node.js service's path)")
async def health_check(request: web.Request) -> web.Response:
    """The Node.js service's health endpoint: same answer as /readyz."""
    ready, body = _readiness(ctx(request), details=may_see_details(request))
    return json_response(body.wire(), status=200 if ready else 503)


@routes.get("/metrics")
@Operation(
    "Prometheus metrics (text exposition format)",
    tag="system",
    answer=TEXT,
    media_types=["text/plain"],
)
async def metrics(request: web.Request) -> web.Response:
    response = web.Response(body=ctx(request).metrics.render())
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


@routes.get("/api/cluster")
@Operation("Live instances and the leader", tag="system", answer=ClusterOut, errors=(503,))
async def cluster(request: web.Request) -> web.Response:
    api = ctx(request)
    instances = await api.coordinator.live_instances()
    leader = await api.coordinator.current_leader()
    return json_response(ClusterOut.from_domain(leader, instances).wire())
