"""Health, readiness, metrics and the cluster view."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from cronsvc import __version__
from cronsvc.api.auth import may_see_details
from cronsvc.api.context import ApiContext, ctx, json_response
from cronsvc.api.schemas import instant
from cronsvc.health import Dependency
from cronsvc.metrics import CONTENT_TYPE

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


def _readiness(api: ApiContext, *, details: bool) -> tuple[bool, dict[str, Any]]:
    """Ready or not, and the body: the status and each check; with `details`,
    also which instance this is (an unauthenticated probe learns only up or
    down). Ready means able to serve the API: the store answers and the
    scheduler has loaded it. A coordinator that does not answer is a named
    degradation (`degraded`, 200): firing goes on, fenced by the store, and a
    load balancer must not take a whole cluster out for a Redis blip. Read
    from the background probe (`cronsvc.health`), so it answers at once."""
    store = api.health.state(Dependency.STORE)
    coordinator = api.health.state(Dependency.COORDINATOR)
    checks = {
        "store": store.detail if not store.up else "ok",
        "coordinator": coordinator.detail if not coordinator.up else "ok",
        "scheduler": "ok" if api.scheduler_ready.is_set() else "starting",
    }
    ready = checks["store"] == "ok" and checks["scheduler"] == "ok"
    degraded = [part for part in ("coordinator",) if checks[part] != "ok"]
    status = "unavailable" if not ready else "degraded" if degraded else "ok"
    body: dict[str, Any] = {"status": status, "checks": checks}
    if degraded:
        body["degraded"] = degraded
    if details:
        body["instanceId"] = api.instance_id
        body["version"] = __version__
        body["startedAt"] = instant(api.started_at)
    return ready, body


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 while the API can serve (the store answers, the
    scheduler has loaded), a coordinator outage named in the body; 503
    otherwise."""
    ready, body = _readiness(ctx(request), details=may_see_details(request))
    return json_response(body, status=200 if ready else 503)


@routes.get("/api/health-check")
async def health_check(request: web.Request) -> web.Response:
    """The Node.js service's health endpoint: same answer as /readyz."""
    ready, body = _readiness(ctx(request), details=may_see_details(request))
    return json_response(body, status=200 if ready else 503)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    response = web.Response(body=ctx(request).metrics.render())
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


@routes.get("/api/cluster")
async def cluster(request: web.Request) -> web.Response:
    api = ctx(request)
    instances = await api.coordinator.live_instances()
    leader = await api.coordinator.current_leader()
    return json_response(
        {
            "leader": leader,
            "instances": [
                {
                    "id": i.id,
                    "host": i.host,
                    "version": i.version,
                    "startedAt": instant(i.started_at),
                    "lastHeartbeat": instant(i.last_heartbeat),
                    "isLeader": i.id == leader,
                }
                for i in sorted(instances, key=lambda i: i.id)
            ],
        }
    )
