"""The webhook client: one shared aiohttp session that delivers every execution.

`Dispatcher.deliver` turns a `WebhookRequest` into a `DeliveryResult` and never
raises for a problem with that one request (bad URL, refused connection, a
receiver that hangs or answers 500): the problem is recorded in the result.
It lets `asyncio.CancelledError` through untouched.

Connections go only where the SSRF guard (`cronsvc.netguard`) allows: a
target it refuses is a FAILURE of type `target_not_allowed`, never retried.

Once a response's status line has arrived, the status alone decides the
outcome; the body is captured best-effort, up to `max_response_bytes`, and a
body that is longer (or cannot be read to its end in time) is cut off and
flagged as truncated rather than failing the delivery.

Every attempt carries the Standard Webhooks headers: `webhook-id` (the
execution id, the same on every retry of a tick), `webhook-timestamp` (this
attempt's Unix seconds) and, for a job with a secret, `webhook-signature`,
made afresh per attempt since the timestamp is signed. A secret the job
replaced signs too, after the new one, until its grace period ends.
"""

from __future__ import annotations

import asyncio
import codecs
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from types import TracebackType
from typing import Self

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver
from multidict import CIMultiDict
from yarl import URL

from cronsvc import __version__
from cronsvc.clock import Clock
from cronsvc.domain import (
    MAX_ATTEMPTS,
    AttemptRecord,
    ErrorInfo,
    ExecutionStatus,
    HttpMethod,
    JsonValue,
    PreviousSecret,
    RetryPolicy,
    Trigger,
)
from cronsvc.errors import InvalidSecret, TargetNotAllowed
from cronsvc.netguard import GuardedConnector, GuardedResolver, TargetPolicy
from cronsvc.retry import backoff_delay
from cronsvc.signing import signature_header

log = structlog.get_logger(__name__)

_READ_CHUNK = 64 * 1024
_MAX_LOCATION_CHARS = 500
# The dispatcher owns message framing: a user's Content-Length or
# Transfer-Encoding would contradict the body actually sent.
_FRAMING_HEADERS = ("Content-Length", "Transfer-Encoding")
_SIGNATURE_HEADER = "webhook-signature"


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookRequest:
    """One execution's webhook call, as the scheduler hands it over."""

    execution_id: str
    job_id: str
    job_name: str
    scheduled_at: datetime
    trigger: Trigger
    url: str
    method: HttpMethod
    # Headers often carry credentials (Authorization, API keys): kept out of repr.
    headers: Mapping[str, str] = field(repr=False)
    body: JsonValue | None
    """None: the default JSON document; a str is sent as is; anything else as JSON."""
    timeout_s: float
    retry: RetryPolicy
    secret: str | None = field(default=None, repr=False)
    previous_secret: PreviousSecret | None = field(default=None, repr=False)
    """The secret `secret` replaced: it signs too while it is in force."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryResult:
    status: ExecutionStatus
    """SUCCESS or FAILURE."""
    attempts: int
    executed_at: datetime
    """When the first attempt started."""
    first_sent_at: float
    """Unix seconds when the first attempt's request was handed to aiohttp."""
    finished_at: datetime
    duration_ms: int
    """First attempt start to finish, on the monotonic clock."""
    response_status: int | None
    response_body: str | None
    """The last attempt's response text, at most `max_response_bytes` bytes of it."""
    response_truncated: bool
    error: ErrorInfo | None
    retry_after_s: float | None = None
    """The last attempt failed with a 429 or 503 whose `Retry-After` asked
    for this many seconds: the job's next ticks should wait as well."""
    attempt_log: tuple[AttemptRecord, ...]
    """One entry per attempt, in order (`attempts` of them)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Outcome:
    """What one attempt came to."""

    status: int | None = None
    body: str | None = None
    truncated: bool = False
    error: ErrorInfo | None = None
    retry_after: float | None = None
    """Seconds the receiver asked us to wait (429/503 `Retry-After`)."""


def _retry_delay(outcome: _Outcome, attempt: int, policy: RetryPolicy) -> float | None:
    """Seconds to wait before attempt `attempt + 1`, or None to stop here.

    Only transient failures are retried: connection errors, timeouts, 429 and
    5xx (not a refused target, say: the guard would refuse it again). The
    wait is exponential backoff with full jitter, unless the receiver named
    one with `Retry-After`; either way at most `max_backoff_seconds`.
    """
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


class Dispatcher:
    """Delivers webhooks through one pooled `aiohttp.ClientSession`.

    At most `max_concurrency` deliveries run at once (further callers wait for
    a slot); the connection pool has the same size. Use as `async with
    Dispatcher(...) as dispatcher:` or call `start` and `aclose`.

    `target_policy` says which addresses may be connected to (by default only
    globally routable ones); host names are resolved through `resolver`
    (aiohttp's default when None), behind the guard.
    """

    def __init__(
        self,
        *,
        max_concurrency: int,
        max_response_bytes: int,
        clock: Clock,
        user_agent: str = f"cronsvc/{__version__}",
        target_policy: TargetPolicy | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, not {max_concurrency}")
        if max_response_bytes < 0:
            raise ValueError(f"max_response_bytes must not be negative, not {max_response_bytes}")
        self._max_concurrency = max_concurrency
        self._max_response_bytes = max_response_bytes
        self._clock = clock
        self._user_agent = user_agent
        self._target_policy = target_policy or TargetPolicy()
        self._name_resolver = resolver
        self._guard: GuardedResolver | None = None
        self._slots = asyncio.Semaphore(max_concurrency)
        self._in_flight = 0
        self._session: aiohttp.ClientSession | None = None

    @property
    def in_flight(self) -> int:
        """Deliveries holding a concurrency slot right now (waiting ones excluded)."""
        return self._in_flight

    async def start(self) -> None:
        if self._session is not None:
            raise RuntimeError("Dispatcher already started")
        self._guard = GuardedResolver(self._target_policy, self._name_resolver)
        self._session = aiohttp.ClientSession(
            connector=self._make_connector(self._guard),
            # One session serves every job: no cookie may travel from one to another.
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
            # No proxy from the environment: the guard judges the peer it connects to.
            trust_env=False,
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        guard, self._guard = self._guard, None
        if session is not None:
            await session.close()
        if guard is not None:
            await guard.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _make_connector(self, guard: GuardedResolver) -> aiohttp.BaseConnector:
        """The connection pool: it resolves names through `guard` and connects
        only to addresses the policy allows, the very ones it checked."""
        return GuardedConnector(guard, limit=self._max_concurrency)

    def _signature_headers(
        self, request: WebhookRequest, body_bytes: bytes, timestamp: int
    ) -> dict[str, str]:
        """`webhook-signature` for a job with a secret: the current secret's
        signature, then, while it is in force, the replaced secret's. Raises
        `InvalidSecret` for a secret that is not a whsec_ secret."""
        in_use: list[str] = []
        if request.secret is not None:
            in_use.append(request.secret)
        previous = request.previous_secret
        if (
            previous is not None
            and previous.secret != request.secret
            and previous.in_force(self._clock.now())
        ):
            in_use.append(previous.secret)
        if not in_use:
            return {}
        value = signature_header(in_use, request.execution_id, timestamp, body_bytes)
        return {_SIGNATURE_HEADER: value}

    async def deliver(self, request: WebhookRequest) -> DeliveryResult:
        session = self._session
        if session is None:
            raise RuntimeError("Dispatcher.start() has not been called")
        async with self._slots:
            self._in_flight += 1
            try:
                return await self._deliver(session, request)
            finally:
                self._in_flight -= 1

    async def _deliver(
        self, session: aiohttp.ClientSession, request: WebhookRequest
    ) -> DeliveryResult:
        clock = self._clock
        executed_at = clock.now()
        started = clock.monotonic()
        first_sent_at: float | None = None
        # Bounded here too, so a stored policy can never grow the attempt log past it.
        max_attempts = min(max(1, request.retry.max_attempts), MAX_ATTEMPTS)
        attempt = 0
        outcome = _Outcome()
        attempt_log: list[AttemptRecord] = []
        for attempt in range(1, max_attempts + 1):
            attempt_started_at = clock.now()
            attempt_started = clock.monotonic()
            outcome, sent_at = await self._attempt(session, request, attempt)
            if first_sent_at is None:
                first_sent_at = sent_at
            delay = _retry_delay(outcome, attempt, request.retry)
            attempt_log.append(
                AttemptRecord(
                    attempt=attempt,
                    started_at=attempt_started_at,
                    duration_ms=round((clock.monotonic() - attempt_started) * 1000),
                    response_status=outcome.status,
                    error=outcome.error,
                    retry_after_ms=None if delay is None else round(delay * 1000),
                )
            )
            if delay is None:
                break
            log.debug(
                "webhook_retry_scheduled",
                execution_id=request.execution_id,
                job_id=request.job_id,
                attempt=attempt,
                delay_s=round(delay, 3),
            )
            await clock.sleep(delay)
        assert first_sent_at is not None
        return DeliveryResult(
            status=ExecutionStatus.SUCCESS if outcome.error is None else ExecutionStatus.FAILURE,
            attempts=attempt,
            executed_at=executed_at,
            first_sent_at=first_sent_at,
            finished_at=clock.now(),
            duration_ms=round((clock.monotonic() - started) * 1000),
            response_status=outcome.status,
            response_body=outcome.body,
            response_truncated=outcome.truncated,
            error=outcome.error,
            retry_after_s=outcome.retry_after,
            attempt_log=tuple(attempt_log),
        )

    async def _attempt(
        self, session: aiohttp.ClientSession, request: WebhookRequest, attempt: int
    ) -> tuple[_Outcome, float]:
        """One HTTP exchange; returns its outcome and when it was handed to aiohttp."""
        clock = self._clock
        started = clock.monotonic()
        sent_at = clock.time()
        try:
            body, content_type = _encode_body(request, attempt)
            timestamp = int(clock.time())
            headers = self._headers(request, body, content_type, timestamp)
            sent_at = clock.time()
            async with session.request(
                request.method.value,
                request.url,
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=request.timeout_s),
            ) as response:
                text, truncated = await self._capture(response)
                outcome = _judge(response, text, truncated, clock)
        except TargetNotAllowed as exc:
            outcome = _failed("target_not_allowed", str(exc))
            log.warning(
                "webhook_target_refused",
                execution_id=request.execution_id,
                job_id=request.job_id,
                host=exc.host,
                address=exc.address,
                reason=exc.reason,
            )
        except InvalidSecret as exc:
            # Nothing was sent: an unsigned call would be refused, or worse, trusted.
            outcome = _failed("invalid_secret", f"the job's signing secret is unusable: {exc}")
        except TimeoutError:
            outcome = _failed(
                "timeout", f"timed out after {request.timeout_s:g} s without a response"
            )
        except aiohttp.NonHttpUrlClientError as exc:
            outcome = _failed("invalid_url", f"not an http or https URL: {_short(exc)}")
        except aiohttp.InvalidURL as exc:
            outcome = _failed("invalid_url", f"not a valid URL: {_short(exc)}")
        except aiohttp.ClientConnectionError as exc:
            outcome = _failed("connection_error", _short(exc))
        except Exception as exc:  # one bad request must not escape deliver
            outcome = _failed("request_error", f"{type(exc).__name__}: {_short(exc)}")
        log.debug(
            "webhook_attempt",
            execution_id=request.execution_id,
            job_id=request.job_id,
            attempt=attempt,
            method=request.method.value,
            url=_loggable(request.url),
            response_status=outcome.status,
            error_type=outcome.error.type if outcome.error else None,
            elapsed_ms=round((clock.monotonic() - started) * 1000),
        )
        return outcome, sent_at

    def _headers(
        self, request: WebhookRequest, body: bytes | None, content_type: str, timestamp: int
    ) -> CIMultiDict[str]:
        headers = CIMultiDict(request.headers)
        # A signature is ours alone to make: one a user set would only mislead.
        for name in (*_FRAMING_HEADERS, _SIGNATURE_HEADER):
            headers.popall(name, None)
        if body is None:
            headers.popall("Content-Type", None)
        else:
            headers.setdefault("Content-Type", content_type)
        ours = {
            "User-Agent": self._user_agent,
            "webhook-id": request.execution_id,
            "webhook-timestamp": str(timestamp),
            **self._signature_headers(request, body or b"", timestamp),
        }
        for name, value in ours.items():
            headers[name] = value  # replaces every case-variant the user set
        return headers

    async def _capture(self, response: aiohttp.ClientResponse) -> tuple[str, bool]:
        """Read at most `max_response_bytes` of the body, then let the connection go.

        One byte past the limit is read to learn whether more follows; we never
        ask for more than that, so what is held beyond the limit is at most
        aiohttp's own flow-controlled read buffer. A body read to its end lets
        the connection go back to the pool; any other (longer, endless,
        stalled, broken) is closed without draining it.
        """
        limit = self._max_response_bytes
        data = bytearray()
        complete = False
        try:
            # Bounded: every pass adds at least one byte or leaves.
            while len(data) <= limit:
                chunk = await response.content.read(min(_READ_CHUNK, limit + 1 - len(data)))
                if not chunk:
                    complete = True
                    break
                data += chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.debug("webhook_response_body_incomplete", error=_short(exc), read=len(data))
        finally:
            if complete:
                response.release()
            else:
                response.close()
        return _decode(bytes(data[:limit]), complete=complete), not complete


def _encode_body(request: WebhookRequest, attempt: int) -> tuple[bytes | None, str]:
    """The bytes to send (None for none) and the Content-Type they call for."""
    if not request.method.carries_body:
        return None, ""
    body = request.body
    if body is None:
        body = {
            "jobId": request.job_id,
            "jobName": request.job_name,
            "executionId": request.execution_id,
            "scheduledAt": _rfc3339(request.scheduled_at),
            "trigger": request.trigger.value,
            "attempt": attempt,
        }
    if isinstance(body, str):
        try:
            json.loads(body)
        except ValueError:
            return body.encode(), "text/plain; charset=utf-8"
        return body.encode(), "application/json"
    encoded = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return encoded.encode(), "application/json"


def _judge(response: aiohttp.ClientResponse, text: str, truncated: bool, clock: Clock) -> _Outcome:
    status = response.status
    error: ErrorInfo | None = None
    retry_after: float | None = None
    label = f"HTTP {status} {response.reason or _phrase(status)}".rstrip()
    if 300 <= status < 400:
        location = response.headers.get("Location")
        where = (
            f"redirect to {location[:_MAX_LOCATION_CHARS]} not followed"
            if location
            else "redirect (no Location) not followed"
        )
        error = ErrorInfo(type="redirect_not_followed", message=f"{label}: {where}")
    elif not 200 <= status < 300:
        error = ErrorInfo(type="http_status", message=label)
        if status in (429, 503):
            retry_after = _parse_retry_after(response.headers.get("Retry-After"), clock)
    return _Outcome(
        status=status, body=text, truncated=truncated, error=error, retry_after=retry_after
    )


def _failed(kind: str, message: str) -> _Outcome:
    return _Outcome(error=ErrorInfo(type=kind, message=message))


def _parse_retry_after(value: str | None, clock: Clock) -> float | None:
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


def _rfc3339(instant: datetime) -> str:
    """UTC with a `Z`, milliseconds only when there are some."""
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    instant = instant.astimezone(UTC)
    millis = instant.microsecond // 1000
    fraction = f".{millis:03d}" if millis else ""
    return f"{instant:%Y-%m-%dT%H:%M:%S}{fraction}Z"


def _decode(data: bytes, *, complete: bool) -> str:
    # A cut-off body may end inside a multi-byte character: drop that partial
    # character rather than show a replacement mark the receiver never sent.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return decoder.decode(data, final=complete)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _short(exc: BaseException) -> str:
    """An exception's own one-line message, never a traceback."""
    text = " ".join(str(exc).split())
    return text[:500] if text else type(exc).__name__


def _loggable(url: str) -> str:
    """The URL without credentials, query or fragment, which may hold secrets."""
    try:
        parsed = URL(url)
        return str(parsed.with_user(None).with_query(None).with_fragment(None))
    except (TypeError, ValueError):
        return "<unparsable url>"
