"""Health, readiness, metrics and the cluster view."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from cronsvc import __version__
from cronsvc.api.auth import may_see_details
from cronsvc.api.context import ApiContext, ctx, json_response
from cronsvc.api.schemas import instant
from cronsvc.metrics import CONTENT_TYPE

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


async def _readiness(api: ApiContext, *, details: bool) -> tuple[bool, dict[str, Any]]:
    """Ready or not, and the body: the status and each check; with `details`,
    also which instance this is (an unauthenticated probe learns only up or
    down)."""
    checks: dict[str, str] = {}
    try:
        await api.store.ping()
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"unavailable: {type(exc).__name__}"
    try:
        await api.coordinator.ping()
        checks["coordinator"] = "ok"
    except Exception as exc:
        checks["coordinator"] = f"unavailable: {type(exc).__name__}"
    checks["scheduler"] = "ok" if api.scheduler_ready.is_set() else "starting"
    ready = all(v == "ok" for v in checks.values())
    body: dict[str, Any] = {"status": "ok" if ready else "unavailable", "checks": checks}
    if details:
        body["instanceId"] = api.instance_id
        body["version"] = __version__
        body["startedAt"] = instant(api.started_at)
    return ready, body


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Readiness: store, coordinator and scheduler all up; 503 otherwise."""
    ready, body = await _readiness(ctx(request), details=may_see_details(request))
    return json_response(body, status=200 if ready else 503)


@routes.get("/api/health-check")
async def health_check(request: web.Request) -> web.Response:
    """The Node.js service's health endpoint: same answer as /readyz."""
    ready, body = await _readiness(ctx(request), details=may_see_details(request))
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
