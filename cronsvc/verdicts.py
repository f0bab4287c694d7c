"""What one webhook attempt came to, and whether and when to try again. Once the
status has come it alone decides, the body kept as far as it was read; but a peer
that hangs up inside the body may have died handling the call: a FAILURE.
"""

from __future__ import annotations

import codecs
import ssl
from datetime import UTC
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import NamedTuple

from cronsvc.clock import Clock
from cronsvc.domain import ErrorInfo, RetryPolicy
from cronsvc.errors import InvalidSecret, TargetNotAllowed
from cronsvc.retry import backoff_delay
from cronsvc.webhook_request import UnsendableHeader
from cronsvc.wire import CutShort, InvalidTarget, ProtocolError, Response

_MAX_LOCATION_CHARS = 500


class Outcome(NamedTuple):
    """(A tuple: made on every attempt, and a frozen dataclass costs ~2.5x as much.)"""

    status: int | None = None
    body: str | None = None
    truncated: bool = False
    error: ErrorInfo | None = None
    retry_after: float | None = None
    """Seconds a 429's or 503's `Retry-After` asked us to wait."""


def judge(response: Response, clock: Clock) -> Outcome:
    """2xx succeeds; a redirect is not followed."""
    status = response.status
    text = decode(response.body, complete=response.complete)
    error: ErrorInfo | None = None
    retry_after: float | None = None
    label = f"HTTP {status} {response.reason or phrase(status)}".rstrip()
    if 300 <= status < 400:
        location = response.headers.get("location")
        where = (
            f"redirect to {location[:_MAX_LOCATION_CHARS]} not followed"
            if location
            else "redirect (no Location) not followed"
        )
        error = ErrorInfo(type="redirect_not_followed", message=f"{label}: {where}")
    elif not 200 <= status < 300:
        error = ErrorInfo(type="http_status", message=label)
        if status in (429, 503):
            retry_after = parse_retry_after(response.headers.get("retry-after"), clock)
    return Outcome(
        status=status,
        body=text,
        truncated=not response.complete,
        error=error,
        retry_after=retry_after,
    )


def failed(kind: str, message: str) -> Outcome:
    return Outcome(error=ErrorInfo(type=kind, message=message))


def problem(exc: Exception, timeout_s: float) -> Outcome | None:
    """None for a problem of no expected kind (the caller logs it)."""
    if isinstance(exc, TargetNotAllowed):
        return failed("target_not_allowed", str(exc))
    if isinstance(exc, InvalidSecret):
        # Nothing was sent: an unsigned call would be refused, or worse, trusted.
        return failed("invalid_secret", f"the job's signing secret is unusable: {exc}")
    if isinstance(exc, InvalidTarget):
        return failed("invalid_url", short(exc, "not a URL a request can go to"))
    if isinstance(exc, UnsendableHeader):
        return failed("request_error", str(exc))
    if isinstance(exc, TimeoutError):
        return failed("timeout", f"timed out after {timeout_s:g} s without a response")
    if isinstance(exc, ProtocolError):
        return failed("invalid_response", short(exc, "the answer is not HTTP/1.x"))
    if isinstance(exc, CutShort):  # retried as a connection error
        answer = exc.response
        return Outcome(
            status=answer.status,
            body=decode(answer.body, complete=False),
            truncated=True,
            error=ErrorInfo(type="connection_error", message=str(exc)),
        )
    if isinstance(exc, ssl.SSLError):
        return failed("connection_error", f"TLS: {short(exc, 'the secure connection failed')}")
    if isinstance(exc, OSError):  # refused, reset, unreachable, closed early
        if str(exc) or exc.strerror is None:
            return failed("connection_error", short(exc, "the connection failed"))
        return failed("connection_error", exc.strerror)  # one that carries only an errno
    return None


def retry_delay(outcome: Outcome, attempt: int, policy: RetryPolicy) -> float | None:
    """Seconds to wait before attempt `attempt + 1`, or None to stop. Only transient
    failures are retried (not a refused target: the guard would refuse it again)."""
    if outcome.error is None or attempt >= policy.max_attempts:
        return None
    transient = outcome.error.type in ("timeout", "connection_error") or (
        outcome.status is not None and (outcome.status == 429 or 500 <= outcome.status < 600)
    )
    if not transient:
        return None
    if outcome.retry_after is not None:
        return min(outcome.retry_after, policy.max_backoff_seconds)
    return backoff_delay(attempt, policy.backoff_seconds, policy.max_backoff_seconds)


def parse_retry_after(value: str | None, clock: Clock) -> float | None:
    """Seconds from a `Retry-After` of delta-seconds or an HTTP-date; None if unusable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - clock.now()).total_seconds())


def decode(data: bytes, *, complete: bool) -> str:
    # A cut-off body may end inside a multi-byte character: drop that partial
    # character rather than show a replacement mark the receiver never sent.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return decoder.decode(data, final=complete)


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def short(exc: BaseException, otherwise: str) -> str:
    """An exception's own one-line message; `otherwise` (never its class name) if none."""
    text = " ".join(str(exc).split())
    return text[:500] if text else otherwise
