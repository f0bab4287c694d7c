"""The aiohttp application: routes and the error middleware, nothing else."""

from __future__ import annotations

from aiohttp import web

from cronsvc.api import dashboard, jobs, logs, openapi, system
from cronsvc.api.problems import problem_middleware
from cronsvc.api.schemas import MAX_BODY_BYTES


def create_app() -> web.Application:
    """An application with every route. Its state (`CONTEXT`) is provided by
    the service's cleanup contexts (see `cronsvc.service`)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[problem_middleware])
    app.add_routes(jobs.routes)
    app.add_routes(logs.routes)
    app.add_routes(system.routes)
    app.add_routes(openapi.routes)
    app.add_routes(dashboard.routes)
    return app
