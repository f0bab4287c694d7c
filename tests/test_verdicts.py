"""How an attempt's answer or problem is judged, and whether it is tried
again: pure functions, tested by table."""

from __future__ import annotations

import errno
from datetime import timedelta
from email.utils import format_datetime

import pytest

from cronsvc.dispatch import Outcome, judge, parse_retry_after, problem, retry_delay
from cronsvc.domain import ErrorInfo, RetryPolicy
from cronsvc.errors import InvalidSecret
from cronsvc.webhook_request import UnsendableHeader
from cronsvc.wire import CutShort, InvalidTarget, ProtocolError, Response
from tests.fakes import FakeClock


def response(status: int, body: bytes = b"", complete: bool = True, **headers: str) -> Response:
    return Response(
        status, "", {k.replace("_", "-"): v for k, v in headers.items()}, body, complete
    )


@pytest.mark.parametrize(
    ("answer", "error_type", "message"),
    [
        (response(204), None, None),
        (response(500), "http_status", "HTTP 500 Internal Server Error"),
        (response(799), "http_status", "HTTP 799"),
        (
            response(302, location="https://elsewhere.example/"),
            "redirect_not_followed",
            "HTTP 302 Found: redirect to https://elsewhere.example/ not followed",
        ),
        (
            response(301),
            "redirect_not_followed",
            "HTTP 301 Moved Permanently: redirect (no Location) not followed",
        ),
    ],
    ids=["2xx", "5xx", "no phrase", "redirect", "redirect nowhere"],
)
def test_an_answer_is_judged_by_its_status_alone(
    answer: Response, error_type: str | None, message: str | None
) -> None:
    outcome = judge(answer, FakeClock())

    assert outcome.status == answer.status
    if error_type is None:
        assert outcome.error is None
    else:
        assert outcome.error == ErrorInfo(type=error_type, message=message or "")


def test_a_body_cut_off_inside_a_character_drops_the_partial_character() -> None:
    outcome = judge(response(200, "é".encode() + b"\xc3", complete=False), FakeClock())

    assert (outcome.body, outcome.truncated) == ("é", True)


def test_retry_after_is_read_from_a_429_or_503_only() -> None:
    clock = FakeClock()
    later = format_datetime(clock.now() + timedelta(seconds=30), usegmt=True)

    assert judge(response(429, retry_after="7"), clock).retry_after == 7.0
    assert judge(response(500, retry_after="7"), clock).retry_after is None
    seconds = parse_retry_after(later, clock)
    assert seconds is not None and 28 <= seconds <= 30
    assert parse_retry_after("soon", clock) is None
    assert parse_retry_after(None, clock) is None


@pytest.mark.parametrize(
    ("exc", "error_type"),
    [
        (InvalidSecret("bad"), "invalid_secret"),
        (InvalidTarget("ftp://x"), "invalid_url"),
        (UnsendableHeader("the header name 'a b' is not a token"), "request_error"),
        (TimeoutError(), "timeout"),
        (ProtocolError("garbage"), "invalid_response"),
        (CutShort(response(200, b"par", complete=False)), "connection_error"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "connection_error"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v,
)
def test_each_expected_problem_has_its_error_type(exc: Exception, error_type: str) -> None:
    outcome = problem(exc, timeout_s=2.5)

    assert outcome is not None and outcome.error is not None
    assert outcome.error.type == error_type


def test_a_timeout_names_the_timeout_and_an_unexpected_problem_is_left_to_the_caller() -> None:
    timed_out = problem(TimeoutError(), timeout_s=2.5)

    assert timed_out is not None and timed_out.error is not None
    assert timed_out.error.message == "timed out after 2.5 s without a response"
    assert problem(RuntimeError("bug"), timeout_s=1) is None


POLICY = RetryPolicy(max_attempts=3, backoff_seconds=1.0, max_backoff_seconds=10.0)


@pytest.mark.parametrize(
    ("outcome", "attempt", "retried"),
    [
        (Outcome(status=200), 1, False),
        (Outcome(error=ErrorInfo(type="timeout", message="")), 1, True),
        (Outcome(error=ErrorInfo(type="connection_error", message="")), 2, True),
        (Outcome(error=ErrorInfo(type="connection_error", message="")), 3, False),
        (Outcome(status=503, error=ErrorInfo(type="http_status", message="")), 1, True),
        (Outcome(status=429, error=ErrorInfo(type="http_status", message="")), 1, True),
        (Outcome(status=404, error=ErrorInfo(type="http_status", message="")), 1, False),
        (Outcome(error=ErrorInfo(type="target_not_allowed", message="")), 1, False),
    ],
    ids=["success", "timeout", "refused", "last attempt", "503", "429", "404", "guard"],
)
def test_only_transient_failures_are_tried_again(
    outcome: Outcome, attempt: int, retried: bool
) -> None:
    delay = retry_delay(outcome, attempt, POLICY)

    assert (delay is not None) is retried
    if delay is not None:
        assert 0 <= delay <= POLICY.max_backoff_seconds


def test_a_named_retry_after_is_waited_for_up_to_the_longest_backoff() -> None:
    def asked(seconds: float) -> Outcome:
        error = ErrorInfo(type="http_status", message="")
        return Outcome(status=429, error=error, retry_after=seconds)

    assert retry_delay(asked(4), 1, POLICY) == 4
    assert retry_delay(asked(400), 1, POLICY) == POLICY.max_backoff_seconds
