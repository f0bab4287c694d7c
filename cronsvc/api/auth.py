"""Who may call the API, and how often: bearer tokens and a rate limit per client.

With API tokens configured (`server.api_tokens`, `server.api_tokens_file`),
every request needs ``Authorization: Bearer <token>``, except GET and HEAD of
the routes in `UNAUTHENTICATED_ROUTES`:

- `/healthz`, `/readyz`, `/api/health-check`: load balancers and orchestrators
  probe them without credentials, and they reveal only up or down. A request
  that `may_see_details` (a valid token, or a service without tokens) also
  learns from the readiness routes which instance answered: its id, version
  and start time.
- `/docs` (and `/docs/`, which redirects to it) and `/docs/{asset}`: a static
  page and its script and style sheet, the same for everyone and holding no
  data, so a person can open the page and paste a token into it; the page
  then fetches `/openapi.json` with that token.
- `/` and `/dashboard/{asset}`: the web dashboard, static in the same way; it
  asks for a token and sends it with every API call.

A presented token is hashed and compared with `hmac.compare_digest` against the
hash of every configured token, without stopping at a match, so neither timing
nor length says which token matched or how close a guess came. Only hashes are
kept here; tokens never reach a log line or a repr.

Each request (the health routes aside) then takes one from its client's token
bucket (`limits.rate_limit_per_s`, `limits.rate_limit_burst`): the client is
the token when one matched, else the peer address. Requests with a wrong or
missing token are limited per address too, so guessing is slow as well as
hopeless; past the limit the answer is 429 whatever the token.

Failures are raised as `Unauthorized` and `RateLimited`; the problem middleware
turns them into 401 (with ``WWW-Authenticate``) and 429 (with ``Retry-After``)
and counts them in `cronsvc_api_rejected_total`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import hdrs, web

from cronsvc.api import dashboard
from cronsvc.api.problems import Handler
from cronsvc.api.ratelimit import RateLimiter
from cronsvc.clock import Clock
from cronsvc.config import Config
from cronsvc.errors import RateLimited, Unauthorized

UNLIMITED_ROUTES = frozenset({"/healthz", "/readyz", "/api/health-check"})
"""Health probes: never asked for a token, never rate limited."""
UNAUTHENTICATED_ROUTES = (
    UNLIMITED_ROUTES | {"/docs", "/docs/", "/docs/{asset}"} | dashboard.PUBLIC_ROUTES
)
"""Route templates (as the router and /openapi.json name them) that GET and
HEAD reach without a token."""
_OPEN_METHODS = frozenset({hdrs.METH_GET, hdrs.METH_HEAD})


class TokenCheck:
    """The configured tokens, as SHA-256 digests only."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self._digests = tuple(_digest(token) for token in tokens)

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:
        return f"TokenCheck({len(self._digests)} tokens)"

    def match(self, authorization: str | None) -> int | None:
        """The position of the token an Authorization header carries, or None."""
        if authorization is None:
            return None
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        presented = _digest(credentials.strip())
        matched = None
        for position, digest in enumerate(self._digests):
            if hmac.compare_digest(digest, presented) and matched is None:
                matched = position
        return matched


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Access:
    tokens: TokenCheck
    """Empty: no authentication."""
    limiter: RateLimiter | None
    """None: no rate limit."""

    @classmethod
    def from_config(cls, config: Config, *, clock: Clock) -> Access:
        limits = config.limits
        limiter = None
        if limits.rate_limit_per_s > 0:
            limiter = RateLimiter(
                rate=limits.rate_limit_per_s, burst=limits.rate_limit_burst, clock=clock
            )
        return cls(tokens=TokenCheck(config.server.api_tokens), limiter=limiter)


ACCESS = web.AppKey("access", Access)


def may_see_details(request: web.Request) -> bool:
    """Whether a request to a route open without a token may see more than
    up or down: the service has no tokens, or the request carries one."""
    tokens = request.app[ACCESS].tokens
    return not tokens or tokens.match(request.headers.get(hdrs.AUTHORIZATION)) is not None


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    access = request.app[ACCESS]
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else None
    open_route = request.method in _OPEN_METHODS and route in UNAUTHENTICATED_ROUTES
    if open_route and route in UNLIMITED_ROUTES:
        return await handler(request)
    authorization = request.headers.get(hdrs.AUTHORIZATION)
    position = None
    if access.tokens and not open_route:
        position = access.tokens.match(authorization)
    if access.limiter is not None:
        client = f"token:{position}" if position is not None else f"address:{request.remote}"
        wait_s = access.limiter.acquire(client)
        if wait_s:
            raise RateLimited(wait_s)
    if access.tokens and not open_route and position is None:
        raise Unauthorized(presented=authorization is not None)
    return await handler(request)
