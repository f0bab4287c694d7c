"""The webhook dispatcher: every execution's webhook call, its retries and its record.

`Dispatcher.deliver` turns a `WebhookRequest` into a `DeliveryResult` and never
raises for a problem with that one request (bad URL, refused connection, a
receiver that hangs or answers 500): the problem is recorded in the result.
It lets `asyncio.CancelledError` through untouched.

For a burst of executions fired together, the run path's deliveries
(`cronsvc.deliveries`, for the claim pipeline) first put each one's first
request on the wire (`prepare` ahead of the tick, `send_first` at it) and
only then start the tasks that `deliver` them: those read the answers and
carry on with any retries.

Requests travel over `cronsvc.wire`'s pooled HTTP/1.1 connections, which go
only where the SSRF guard (`cronsvc.netguard`) allows: a target it refuses
is a FAILURE of type `target_not_allowed`, never retried.

Once a response's status line has arrived, the status alone decides the
outcome; the body is captured best-effort, up to `max_response_bytes`, and a
body that is longer (or cannot be read to its end in time) is cut off and
flagged as truncated rather than failing the delivery. A peer that hangs
up inside the body, though, is a FAILURE (`connection_error`, the status
kept): it may have died while handling the call.

Every attempt carries the Standard Webhooks headers: `webhook-id` (the
execution id, the same on every retry of a tick), `webhook-timestamp` (this
attempt's Unix seconds) and, for a job with a secret, `webhook-signature`,
made afresh per attempt since the timestamp is signed. A secret the job
replaced signs too, after the new one, until its grace period ends.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import ssl
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from types import TracebackType
from typing import NamedTuple, Self

import structlog
from aiohttp.abc import AbstractResolver

from cronsvc import __version__
from cronsvc.clock import Clock
from cronsvc.domain import (
    HEADER_NAME,
    HEADER_VALUE_CONTROL,
    MAX_ATTEMPTS,
    RESERVED_HEADERS,
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
from cronsvc.instants import rfc3339
from cronsvc.netguard import GuardedResolver, TargetPolicy
from cronsvc.retry import backoff_delay
from cronsvc.signing import signature_header
from cronsvc.wire import (
    CutShort,
    HttpClient,
    InvalidTarget,
    ProtocolError,
    Response,
    Sent,
    Target,
    parse_target,
)

log = structlog.get_logger(__name__)

_MAX_LOCATION_CHARS = 500
_BOOKKEEPING_WAIT_S = 0.5
_json_string: Callable[[str], str] = json.encoder.encode_basestring
"""A JSON string literal, as json.dumps(..., ensure_ascii=False) writes one."""
_SIGNATURE_HEADER = "webhook-signature"


class _UnsendableHeader(ValueError):
    """A stored header no request may carry (the API refuses it now)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookRequest:
    """One execution's webhook call, as the run path hands it over (`cronsvc.deliveries`)."""

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
    """Unix seconds when the first attempt's request was handed to the socket
    (or to the connection's set-up, when none was open)."""
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


class _Outcome(NamedTuple):
    """What one attempt came to. (A tuple: made on every attempt, and a
    frozen dataclass costs ~2.5x as much to build.)"""

    status: int | None = None
    body: str | None = None
    truncated: bool = False
    error: ErrorInfo | None = None
    retry_after: float | None = None
    """Seconds the receiver asked us to wait (429/503 `Retry-After`)."""


class Prepared(NamedTuple):
    """A first request made ahead of its send (`Dispatcher.prepare`)."""

    target: Target
    data: bytes
    timestamp: int
    """Its `webhook-timestamp`: good for a send within that second."""


class FirstSend(NamedTuple):
    """A delivery's first request, already written by `Dispatcher.send_first`."""

    started_at: datetime
    started: float
    """The monotonic clock when the attempt began."""
    sent_at: float
    target: Target
    data: bytes
    deadline: float
    sent: Sent


class _Slots:
    """At most `size` holders at once; the rest wait their turn, first come
    first served. (asyncio.Semaphore cannot be taken without awaiting, and a
    burst's requests are written before any task runs.)"""

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._waiting = 0
        """Callers in `take`, including those handed a slot that have not
        resumed yet."""
        self._none_waiting = asyncio.Event()
        self._none_waiting.set()

    @property
    def waiting(self) -> int:
        return self._waiting

    def try_take(self) -> bool:
        if self._free and not self._waiters:
            self._free -= 1
            return True
        return False

    async def take(self) -> None:
        if self.try_take():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._waiting += 1
        self._none_waiting.clear()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed a slot just as it was cancelled: pass it on
            elif waiter in self._waiters:  # (`give` may have passed over it already)
                self._waiters.remove(waiter)
            raise
        finally:
            self._waiting -= 1
            if not self._waiting:
                self._none_waiting.set()

    def give(self) -> None:
        """Hand the slot to the first waiter, or free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    async def none_waiting(self) -> None:
        await self._none_waiting.wait()


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
    """Delivers webhooks through one pool of connections (`cronsvc.wire`).

    At most `max_concurrency` deliveries run at once (further callers wait for
    a slot); at most as many connections are kept idle. With
    `max_connections_per_host`, at most that many connections are open to
    one host (0: as many as `max_concurrency`). Use as `async with
    Dispatcher(...) as dispatcher:` or call `start` and `aclose`.

    `target_policy` says which addresses may be connected to (by default only
    globally routable ones); host names are resolved through `resolver`
    (aiohttp's default when None), behind the guard. https targets are
    verified against `ssl_context` (the system's trust store when None).
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
        ssl_context: ssl.SSLContext | None = None,
        max_connections_per_host: int = 0,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, not {max_concurrency}")
        if max_connections_per_host < 0:
            raise ValueError("max_connections_per_host must not be negative")
        if max_response_bytes < 0:
            raise ValueError(f"max_response_bytes must not be negative, not {max_response_bytes}")
        self._max_concurrency = max_concurrency
        self._max_response_bytes = max_response_bytes
        self._clock = clock
        self._user_agent = user_agent
        self._target_policy = target_policy or TargetPolicy()
        self._name_resolver = resolver
        self._ssl_context = ssl_context
        self._max_per_host = max_connections_per_host
        self._guard: GuardedResolver | None = None
        self._slots = _Slots(max_concurrency)
        self._in_flight = 0
        self._client: HttpClient | None = None

    @property
    def in_flight(self) -> int:
        """Deliveries holding a concurrency slot right now (waiting ones excluded)."""
        return self._in_flight

    async def start(self) -> None:
        if self._client is not None:
            raise RuntimeError("Dispatcher already started")
        self._guard = GuardedResolver(self._target_policy, self._name_resolver)
        self._client = HttpClient(
            guard=self._guard,
            max_idle=self._max_concurrency,
            ssl_context=self._ssl_context,
            max_per_host=self._max_per_host,
        )

    async def aclose(self) -> None:
        client, self._client = self._client, None
        guard, self._guard = self._guard, None
        if client is not None:
            await client.aclose()
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

    def prepare(self, request: WebhookRequest, at: float) -> Prepared | None:
        """A delivery's first request, made ahead of its tick, for a send in
        the second that holds `at` (Unix seconds): `send_first` uses it when
        it sends in that second. None when it is better made at the send:
        it cannot be made (`deliver` records why), or a replaced secret stops
        signing before that second ends."""
        previous = request.previous_secret
        if (
            previous is not None
            and previous.in_force(self._clock.now())
            and not previous.in_force(datetime.fromtimestamp(int(at) + 1, UTC))
        ):
            return None
        try:
            return self._make(request, 1, int(at))
        except Exception:  # deliver meets the same problem and records it
            return None

    def send_first(
        self, request: WebhookRequest, prepared: Prepared | None = None
    ) -> FirstSend | None:
        """Send a delivery's first request now, if a concurrency slot is free:
        written at once on an idle connection, else as soon as a new one
        opens (`HttpClient.send`), so a burst's requests all go out before
        any of their tasks runs. `prepared`, made ahead by `prepare`, saves
        making it now. What it returns goes to `deliver` (it holds a slot
        until then) or `abandon`; None: nothing was sent, and `deliver`
        sends as usual."""
        client = self._client
        if client is None or not self._slots.try_take():
            return None
        clock = self._clock
        started_at, started = clock.now(), clock.monotonic()
        sent_at = clock.time()
        try:
            if prepared is None or prepared.timestamp != int(sent_at):
                prepared = self._make(request, 1, int(sent_at))
            target, data, _ = prepared
            deadline = asyncio.get_running_loop().time() + request.timeout_s
            sent_at = clock.time()
            sent = client.send(target, data, deadline=deadline)
        except Exception:  # deliver meets the same problem and records it
            self._slots.give()
            return None
        self._in_flight += 1
        return FirstSend(started_at, started, sent_at, target, data, deadline, sent)

    def abandon(self, first: FirstSend) -> None:
        """Give up a delivery after its first request went out (its run was
        replaced meanwhile): its answer is not read, its connection closed."""
        first.sent.cancel()
        self._in_flight -= 1
        self._slots.give()

    async def deliver(
        self, request: WebhookRequest, first: FirstSend | None = None
    ) -> DeliveryResult:
        """The delivery of `request`, all attempts; `first`: its first request
        already went out (`send_first`)."""
        client = self._client
        if client is None:
            raise RuntimeError("Dispatcher.start() has not been called")
        clock = self._clock
        executed_at: datetime | None = None
        started = 0.0
        first_sent_at: float | None = None
        # Bounded here too, so a stored policy can never grow the attempt log past it.
        max_attempts = min(max(1, request.retry.max_attempts), MAX_ATTEMPTS)
        attempt = 0
        outcome = _Outcome()
        attempt_log: list[AttemptRecord] = []
        for attempt in range(1, max_attempts + 1):
            if first is not None:  # its slot is taken already
                attempt_started_at, attempt_started = first.started_at, first.started
            else:
                # A slot per attempt: a backoff wait holds none.
                await self._slots.take()
                self._in_flight += 1
                attempt_started_at, attempt_started = clock.now(), clock.monotonic()
            try:
                if executed_at is None:  # the first attempt, once it has a slot
                    executed_at, started = attempt_started_at, attempt_started
                outcome, sent_at = await self._attempt(client, request, attempt, first)
                first = None
            finally:
                self._in_flight -= 1
                self._slots.give()
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
        assert first_sent_at is not None and executed_at is not None
        result = DeliveryResult(
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
        await self._after_queued_sends()
        return result

    async def _after_queued_sends(self) -> None:
        """Let the deliveries waiting for a slot send first: what is left of
        this one is bookkeeping; done at once, each queued request of a burst
        larger than the pool would go out only after an earlier one's
        bookkeeping (BENCHMARKS.md, "Why the constants are what they are").
        Waits at most
        `_BOOKKEEPING_WAIT_S`, so a pool that stays full still records.

        A cancellation (a stop cutting the runs short) ends the wait but not
        the delivery: its answer is in, and is recorded as it was, not as
        cut off by the stop."""
        if not self._slots.waiting:
            return
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_BOOKKEEPING_WAIT_S):
                    await self._slots.none_waiting()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.uncancel() > 0:
                raise  # cancelled more than once: not this wait's to absorb

    def _make(self, request: WebhookRequest, attempt: int, timestamp: int) -> Prepared:
        """Where an attempt goes and its message, stamped `timestamp`."""
        target = parse_target(request.url)
        body, content_type = _encode_body(request, attempt)
        data = self._message(
            request, target.host_header, target.request_target, body, content_type, timestamp
        )
        return Prepared(target, data, timestamp)

    async def _attempt(
        self,
        client: HttpClient,
        request: WebhookRequest,
        attempt: int,
        first: FirstSend | None,
    ) -> tuple[_Outcome, float]:
        """One HTTP exchange; returns its outcome and when it was sent."""
        clock = self._clock
        started = clock.monotonic() if first is None else first.started
        sent_at = clock.time()
        try:
            if first is None:
                target, data, _ = self._make(request, attempt, int(sent_at))
                deadline = asyncio.get_running_loop().time() + request.timeout_s
                sent_at, sent = clock.time(), None
            else:
                target, data, deadline, sent = first.target, first.data, first.deadline, first.sent
                sent_at = first.sent_at
            response = await client.request(
                request.method.value,
                target,
                data,
                deadline=deadline,
                max_body=self._max_response_bytes,
                sent=sent,
            )
            text = _decode(response.body, complete=response.complete)
            outcome = _judge(response, text, not response.complete, clock)
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
        except InvalidTarget as exc:
            outcome = _failed("invalid_url", _short(exc, "not a URL a request can go to"))
        except _UnsendableHeader as exc:
            outcome = _failed("request_error", str(exc))
        except TimeoutError:
            outcome = _failed(
                "timeout", f"timed out after {request.timeout_s:g} s without a response"
            )
        except ProtocolError as exc:
            outcome = _failed("invalid_response", _short(exc, "the answer is not HTTP/1.x"))
        except CutShort as exc:
            outcome = _cut_short(exc)
        except OSError as exc:  # refused, reset, unreachable, TLS, closed early
            outcome = _failed("connection_error", _connection_problem(exc))
        except Exception as exc:  # one bad request must not escape deliver
            # Recorded in words (a run's error never names a Python exception);
            # the exception goes to the log, where it can be read.
            outcome = _failed(
                "request_error",
                "the request could not be made: an unexpected problem, logged as "
                "webhook_request_failed",
            )
            log.error(
                "webhook_request_failed",
                execution_id=request.execution_id,
                job_id=request.job_id,
                attempt=attempt,
                exc_info=exc,
            )
        log.debug(
            "webhook_attempt",
            execution_id=request.execution_id,
            job_id=request.job_id,
            attempt=attempt,
            method=request.method.value,
            response_status=outcome.status,
            error_type=outcome.error.type if outcome.error else None,
            elapsed_ms=round((clock.monotonic() - started) * 1000),
        )
        return outcome, sent_at

    def _message(
        self,
        request: WebhookRequest,
        host: str,
        request_target: str,
        body: bytes | None,
        content_type: str,
        timestamp: int,
    ) -> bytes:
        """The request as it goes on the wire: request line, headers, body.

        Raises `_UnsendableHeader` for a header that would break the message
        (the API refuses those; a stored one is refused here, before anything
        is sent). A stored header the dispatcher sets itself is left out."""
        lines = [f"{request.method.value} {request_target} HTTP/1.1", f"Host: {host}"]
        given = {name.lower() for name in request.headers}
        for name, value in request.headers.items():
            lowered = name.lower()
            if lowered in RESERVED_HEADERS or (body is None and lowered == "content-type"):
                continue
            if not HEADER_NAME.fullmatch(name):
                raise _UnsendableHeader(f"the header name {name[:100]!r} is not a token")
            if HEADER_VALUE_CONTROL.search(value):
                raise _UnsendableHeader(f"the header {name[:100]!r} holds a control character")
            lines.append(f"{name}: {value}")
        if "accept" not in given:
            lines.append("Accept: */*")
        if "accept-encoding" not in given:
            lines.append("Accept-Encoding: gzip, deflate")
        if body is not None and "content-type" not in given:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"User-Agent: {self._user_agent}")
        lines.append(f"webhook-id: {request.execution_id}")
        lines.append(f"webhook-timestamp: {timestamp}")
        signature = self._signature_headers(request, body or b"", timestamp)
        if signature:
            lines.append(f"{_SIGNATURE_HEADER}: {signature[_SIGNATURE_HEADER]}")
        if body is not None:  # None exactly when the method carries no body
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        return head if body is None else head + body


def _encode_body(request: WebhookRequest, attempt: int) -> tuple[bytes | None, str]:
    """The bytes to send (None for none) and the Content-Type they call for."""
    if not request.method.carries_body:
        return None, ""
    body = request.body
    if body is None:
        # What json.dumps makes of the same document, built directly: this
        # runs for every fire of most jobs.
        text = (
            f'{{"jobId":{_json_string(request.job_id)},'
            f'"jobName":{_json_string(request.job_name)},'
            f'"executionId":{_json_string(request.execution_id)},'
            f'"scheduledAt":"{rfc3339(request.scheduled_at)}",'
            f'"trigger":"{request.trigger.value}","attempt":{attempt}}}'
        )
        return text.encode(), "application/json"
    if isinstance(body, str):
        try:
            json.loads(body)
        except (ValueError, RecursionError):  # not JSON, or too deep to tell
            return body.encode(), "text/plain; charset=utf-8"
        return body.encode(), "application/json"
    encoded = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return encoded.encode(), "application/json"


def _judge(response: Response, text: str, truncated: bool, clock: Clock) -> _Outcome:
    status = response.status
    error: ErrorInfo | None = None
    retry_after: float | None = None
    label = f"HTTP {status} {response.reason or _phrase(status)}".rstrip()
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
            retry_after = _parse_retry_after(response.headers.get("retry-after"), clock)
    return _Outcome(
        status=status, body=text, truncated=truncated, error=error, retry_after=retry_after
    )


def _failed(kind: str, message: str) -> _Outcome:
    return _Outcome(error=ErrorInfo(type=kind, message=message))


def _cut_short(exc: CutShort) -> _Outcome:
    """The peer hung up inside the body: the status and what came of the
    body are kept, and the attempt failed (retried as a connection error)."""
    response = exc.response
    return _Outcome(
        status=response.status,
        body=_decode(response.body, complete=False),
        truncated=True,
        error=ErrorInfo(type="connection_error", message=str(exc)),
    )


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


def _connection_problem(exc: OSError) -> str:
    """What went wrong with the connection, in one line: the system's words
    where the exception carries only an errno."""
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {_short(exc, 'the secure connection failed')}"
    if str(exc) or exc.strerror is None:
        return _short(exc, "the connection failed")
    return exc.strerror


def _short(exc: BaseException, otherwise: str) -> str:
    """An exception's own one-line message, never a traceback; `otherwise`
    when it has none (never the exception's class name)."""
    text = " ".join(str(exc).split())
    return text[:500] if text else otherwise
