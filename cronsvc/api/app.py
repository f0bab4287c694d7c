"""The aiohttp application: routes and middlewares, nothing else."""

from __future__ import annotations

from aiohttp import web

from cronsvc.api import dashboard, docs, jobs, ledger, logs, openapi, system
from cronsvc.api.auth import access_middleware
from cronsvc.api.problems import problem_middleware
from cronsvc.api.schemas import MAX_BODY_BYTES


def create_app() -> web.Application:
    """An application with every route. Its state (`ACCESS`, `CONTEXT`) is
    provided by the service (see `cronsvc.service`). Errors raised by the
    access middleware reach the problem middleware, which is outermost."""
    app = web.Application(
        client_max_size=MAX_BODY_BYTES, middlewares=[problem_middleware, access_middleware]
    )
    app.add_routes(jobs.routes)
    app.add_routes(ledger.routes)
    app.add_routes(logs.routes)
    app.add_routes(system.routes)
    app.add_routes(openapi.routes)
    app.add_routes(docs.routes)
    app.add_routes(dashboard.routes)
    return app
