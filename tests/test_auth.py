"""Bearer tokens and the per-client rate limit, against a running service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cronsvc.api.ratelimit import RateLimiter
from cronsvc.config import Config, LimitsConfig, load_config
from tests.fakes import SteppedClock
from tests.helpers_api import Client, MakeClient, problem

TOKENS = ["first-token-0123456789abcdef", "second-token-0123456789abcdef"]
JOB = {"name": "j", "cronExpression": "@daily", "webhookUrl": "https://example.org/hook"}
HEALTH = ["/healthz", "/readyz", "/api/health-check"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def with_tokens(config: Config, tokens: list[str] = TOKENS) -> dict[str, Any]:
    return {"server": config.server.model_copy(update={"api_tokens": tokens})}


@pytest.fixture
async def secured(make_client: MakeClient, config: Config) -> Client:
    return await make_client(**with_tokens(config))


# -- tokens -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/cron"),
        ("POST", "/api/cron"),
        ("GET", "/api/cron/0123456789abcdef01234567"),
        ("DELETE", "/api/cron/0123456789abcdef01234567"),
        ("GET", "/api/execution-logs"),
        ("GET", "/api/schedule/preview?cronExpression=@daily"),
        ("GET", "/api/cluster"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/no/such/route"),
        ("POST", "/healthz"),
    ],
)
async def test_without_a_token_the_api_answers_401_with_a_bearer_challenge(
    secured: Client, method: str, path: str
) -> None:
    response = await secured.request(method, path, json=JOB)
    body = await problem(response, 401)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="cronsvc"'
    assert "Authorization: Bearer" in body["detail"]


@pytest.mark.parametrize(
    "authorization",
    [
        f"Bearer {TOKENS[0]}x",
        f"Bearer {TOKENS[0][:-1]}",
        "Bearer second-token",
        "Bearer ",
        "Bearer",
        f"Basic {TOKENS[0]}",
        TOKENS[0],
        f"Bearer {TOKENS[0]} {TOKENS[1]}",
    ],
)
async def test_a_wrong_token_is_401_invalid_token_and_writes_nothing(
    secured: Client, authorization: str
) -> None:
    response = await secured.post("/api/cron", json=JOB, headers={"Authorization": authorization})
    await problem(response, 401)
    challenge = response.headers["WWW-Authenticate"]
    assert challenge == 'Bearer realm="cronsvc", error="invalid_token"'
    listed = await secured.get("/api/cron", headers=bearer(TOKENS[0]))
    assert await listed.json() == []


@pytest.mark.parametrize("token", TOKENS)
async def test_each_configured_token_is_accepted(secured: Client, token: str) -> None:
    created = await secured.post("/api/cron", json=JOB, headers=bearer(token))
    assert created.status == 201, await created.text()
    for path in ("/api/cron", "/metrics", "/openapi.json", "/api/cluster"):
        response = await secured.get(path, headers=bearer(token))
        assert response.status == 200, path


async def test_the_scheme_is_case_insensitive_and_spaces_around_the_token_are_ignored(
    secured: Client,
) -> None:
    for header in (f"bearer {TOKENS[0]}", f"BEARER  {TOKENS[1]} "):
        response = await secured.get("/api/cron", headers={"Authorization": header})
        assert response.status == 200, header


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("path", [*HEALTH, "/docs", "/docs/docs.js", "/docs/docs.css"])
async def test_health_endpoints_and_the_docs_page_need_no_token(
    secured: Client, method: str, path: str
) -> None:
    response = await secured.request(method, path)
    assert response.status == 200, path


READINESS = ["/readyz", "/api/health-check"]
DETAILS = {"instanceId", "version", "startedAt"}


@pytest.mark.parametrize("path", READINESS)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token-0123456789abc", "Basic x"])
async def test_readiness_without_a_valid_token_says_only_up_or_down(
    secured: Client, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = await secured.get(path, headers=headers)
    assert response.status in (200, 503)  # a probe is never asked for a token
    body = await response.json()
    assert set(body) == {"status", "checks"}
    assert set(body["checks"]) == {"store", "coordinator", "scheduler"}


@pytest.mark.parametrize("path", READINESS)
async def test_readiness_with_a_valid_token_names_the_instance(secured: Client, path: str) -> None:
    body = await (await secured.get(path, headers=bearer(TOKENS[1]))).json()
    assert set(body) == {"status", "checks", *DETAILS}


@pytest.mark.parametrize("path", READINESS)
async def test_readiness_of_a_service_without_tokens_names_the_instance(
    client: Client, path: str
) -> None:
    body = await (await client.get(path)).json()
    assert set(body) == {"status", "checks", *DETAILS}


async def test_a_token_from_the_tokens_file_is_accepted_and_comments_are_not_tokens(
    make_client: MakeClient, tmp_path: Path
) -> None:
    tokens = tmp_path / "api_tokens"
    tokens.write_text(f"# ops team\n\n{TOKENS[1]}\n# {TOKENS[0]}\n")
    settings = tmp_path / "c.toml"
    settings.write_text(f'[server]\napi_tokens_file = "{tokens}"\n')
    client = await make_client(server=load_config(settings, environ={}).server)
    assert (await client.get("/api/cron", headers=bearer(TOKENS[1]))).status == 200
    assert (await client.get("/api/cron", headers=bearer(TOKENS[0]))).status == 401
    assert (await client.get("/api/cron", headers=bearer("# ops team"))).status == 401


async def test_without_tokens_a_loopback_service_needs_none(client: Client) -> None:
    assert (await client.get("/api/cron")).status == 200
    assert (await client.get("/api/cron", headers=bearer("anything-at-all-1234"))).status == 200


async def test_refused_requests_are_counted_by_reason(secured: Client) -> None:
    for _ in range(3):
        await secured.get("/api/cron")
    metrics = await (await secured.get("/metrics", headers=bearer(TOKENS[0]))).text()
    assert 'cronsvc_api_rejected_total{reason="unauthorized"} 3' in metrics


# -- rate limit ---------------------------------------------------------------


def limits(rate: float, burst: int) -> LimitsConfig:
    return LimitsConfig(rate_limit_per_s=rate, rate_limit_burst=burst)


async def test_past_the_burst_a_client_gets_429_with_retry_after_until_it_refills(
    make_client: MakeClient,
) -> None:
    clock = SteppedClock()
    client = await make_client(clock=clock, limits=limits(rate=0.5, burst=3))
    for _ in range(3):
        assert (await client.get("/api/cron")).status == 200
    refused = await client.get("/api/cron")
    body = await problem(refused, 429)
    assert refused.headers["Retry-After"] == "2"  # one request per 2 s
    assert "retry" in body["detail"]

    clock.advance(1.0)
    assert (await client.get("/api/cron")).headers["Retry-After"] == "1"
    clock.advance(1.0)
    assert (await client.get("/api/cron")).status == 200
    assert (await client.get("/api/cron")).status == 429

    clock.advance(6.0)  # refilled to the burst, no further
    assert [(await client.get("/api/cron")).status for _ in range(4)] == [200, 200, 200, 429]


async def test_retry_after_is_whole_seconds_and_at_least_one(make_client: MakeClient) -> None:
    clock = SteppedClock()
    client = await make_client(clock=clock, limits=limits(rate=50, burst=1))
    assert (await client.get("/api/cron")).status == 200
    refused = await client.get("/api/cron")
    assert refused.status == 429 and refused.headers["Retry-After"] == "1"
    clock.advance(0.025)  # a little over 1/50 s
    assert (await client.get("/api/cron")).status == 200


async def test_each_token_has_its_own_bucket(make_client: MakeClient, config: Config) -> None:
    client = await make_client(
        clock=SteppedClock(), limits=limits(rate=1, burst=2), **with_tokens(config)
    )
    first, second = bearer(TOKENS[0]), bearer(TOKENS[1])
    statuses = [(await client.get("/api/cron", headers=first)).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert (await client.get("/api/cron", headers=second)).status == 200


async def test_wrong_tokens_are_limited_per_address_apart_from_the_good_ones(
    make_client: MakeClient, config: Config
) -> None:
    client = await make_client(
        clock=SteppedClock(), limits=limits(rate=1, burst=2), **with_tokens(config)
    )
    guesses = [bearer(f"guess-{n}-0123456789abcdef") for n in range(3)]
    statuses = [(await client.get("/api/cron", headers=g)).status for g in guesses]
    assert statuses == [401, 401, 429]
    assert (await client.get("/api/cron")).status == 429  # the same address, no token
    assert (await client.get("/api/cron", headers=bearer(TOKENS[0]))).status == 200


@pytest.mark.parametrize("path", HEALTH)
async def test_health_endpoints_are_never_rate_limited(make_client: MakeClient, path: str) -> None:
    client = await make_client(clock=SteppedClock(), limits=limits(rate=1, burst=1))
    assert (await client.get("/api/cron")).status == 200
    assert (await client.get("/api/cron")).status == 429
    for _ in range(20):
        assert (await client.get(path)).status == 200


async def test_rate_limit_zero_turns_it_off(make_client: MakeClient) -> None:
    client = await make_client(clock=SteppedClock(), limits=limits(rate=0, burst=1))
    for _ in range(30):
        assert (await client.get("/api/cron")).status == 200


async def test_the_test_fixtures_leave_the_rate_limit_off(client: Client, config: Config) -> None:
    # More than a default burst, as fast as the machine goes: a test that
    # depended on the default limiter would pass or fail with that speed.
    assert config.limits.rate_limit_per_s == 0
    burst = LimitsConfig().rate_limit_burst
    statuses = {(await client.get("/api/cron")).status for _ in range(burst + 20)}
    assert statuses == {200}


async def test_limited_requests_are_counted(make_client: MakeClient) -> None:
    clock = SteppedClock()
    client = await make_client(clock=clock, limits=limits(rate=1, burst=2))
    statuses = [(await client.get("/api/cron")).status for _ in range(4)]
    assert statuses == [200, 200, 429, 429]
    clock.advance(1.0)
    metrics = await (await client.get("/metrics")).text()
    assert 'cronsvc_api_rejected_total{reason="rate_limited"} 2' in metrics


# -- the bucket map -----------------------------------------------------------


def test_buckets_idle_long_enough_to_refill_are_dropped() -> None:
    clock = SteppedClock()
    limiter = RateLimiter(rate=10, burst=20, clock=clock)
    for n in range(1000):
        assert limiter.acquire(f"address:{n}") == 0
    assert len(limiter) == 1000
    clock.advance(1.9)  # not yet full again: kept
    limiter.acquire("address:recent")
    assert len(limiter) == 1001
    clock.advance(0.1)  # 2 s = burst / rate: the first thousand are full, so gone
    limiter.acquire("address:last")
    assert len(limiter) == 2


def test_the_bucket_map_never_passes_its_bound() -> None:
    clock = SteppedClock()
    limiter = RateLimiter(rate=1, burst=5, clock=clock, max_buckets=100)
    for n in range(10_000):
        limiter.acquire(f"address:{n}")
        assert len(limiter) <= 100
    # The most recent clients keep their buckets: one just used is still charged.
    for _ in range(4):
        limiter.acquire("address:9999")
    assert limiter.acquire("address:9999") == 1


def test_a_refused_request_takes_nothing_from_the_bucket() -> None:
    clock = SteppedClock()
    limiter = RateLimiter(rate=1, burst=1, clock=clock)
    assert limiter.acquire("k") == 0
    for _ in range(10):
        assert limiter.acquire("k") == 1
    clock.advance(1.0)
    assert limiter.acquire("k") == 0
