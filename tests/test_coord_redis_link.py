"""The connection the parts of the Redis coordinator share, without a Redis:
keys under the prefix, failures translated and counted, passwords scrubbed
from what is said about them. (The parts themselves are checked against a
real Redis in test_coord_redis.py and test_coord_contract.py.)"""

from __future__ import annotations

import pytest
import redis.exceptions as rexc

from cronsvc.coord.redis import RedisLink, started, ttl_ms
from cronsvc.errors import CoordinatorUnavailable


def link(url: str = "redis://:s3cret@127.0.0.1:6379/0") -> RedisLink:
    return RedisLink(url, key_prefix="c1", connect_timeout_s=1.0, command_timeout_s=1.0)


def test_keys_are_under_the_prefix() -> None:
    assert link().key("tick", "job-1", "5000") == "c1:tick:job-1:5000"


def test_an_unreachable_redis_is_coordinator_unavailable_without_the_password() -> None:
    shared = link()
    with pytest.raises(CoordinatorUnavailable) as caught, shared.translate("ping"):
        raise rexc.ConnectionError("connecting with s3cret failed")
    assert isinstance(caught.value, ConnectionError)
    assert str(caught.value).startswith("ping: Redis at ")
    assert "s3cret" not in str(caught.value)
    assert "s3cret" not in shared.safe_url
    assert shared.round_trips == 1


def test_a_refused_command_passes_unchanged() -> None:
    shared = link()
    with pytest.raises(rexc.ResponseError), shared.translate("try_lead"):
        raise rexc.ResponseError("NOSCRIPT")
    assert shared.round_trips == 1


def test_a_password_given_in_the_query_is_scrubbed_too() -> None:
    assert link("redis://127.0.0.1:6379/0?password=p4ss").scrub("AUTH p4ss") == "AUTH ***"
    assert link("redis://127.0.0.1:6379/0").scrub("AUTH") == "AUTH"


def test_use_before_start_is_refused() -> None:
    with pytest.raises(RuntimeError, match="before start"):
        _ = link().redis
    with pytest.raises(RuntimeError, match="before start"):
        started(None)


@pytest.mark.parametrize(("ttl_s", "ms"), [(1.5, 1500), (0.0001, 1), (0.0, 1), (30.0, 30_000)])
def test_ttls_are_whole_milliseconds_and_never_zero(ttl_s: float, ms: int) -> None:
    assert ttl_ms(ttl_s) == ms
