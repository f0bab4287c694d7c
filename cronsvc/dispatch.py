"""The webhook call of every execution: its attempts, their retries and its record,
and what each attempt came to (`judge`, `problem`, `retry_delay`).

`Dispatcher.deliver` never raises for a problem with one request (bad URL,
refused connection, a receiver that hangs or answers 500): the result records
it. `asyncio.CancelledError` goes through untouched.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ssl
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import NamedTuple, Self

import structlog
from aiohttp.abc import AbstractResolver

from cronsvc import __version__
from cronsvc.clock import Clock
from cronsvc.domain import MAX_ATTEMPTS, AttemptRecord, ErrorInfo, ExecutionStatus, RetryPolicy
from cronsvc.errors import InvalidSecret, TargetNotAllowed
from cronsvc.netguard import GuardedResolver, TargetPolicy
from cronsvc.retry import backoff_delay
from cronsvc.webhook_request import (
    Prepared,
    UnsendableHeader,
    WebhookRequest,
    make_ahead,
    make_request,
)
from cronsvc.wire import CutShort, HttpClient, InvalidTarget, ProtocolError, Response, Sent, Target

log = structlog.get_logger(__name__)

_BOOKKEEPING_WAIT_S = 0.5


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryResult:
    status: ExecutionStatus
    """SUCCESS or FAILURE."""
    attempts: int
    executed_at: datetime
    """When the first attempt started."""
    first_sent_at: float
    """Unix seconds when the first request was handed to the socket (or to a
    new connection's set-up)."""
    finished_at: datetime
    duration_ms: int
    """First attempt start to finish, on the monotonic clock."""
    response_status: int | None
    response_body: str | None
    """The last attempt's, at most `max_response_bytes` bytes of it."""
    response_truncated: bool
    error: ErrorInfo | None
    retry_after_s: float | None = None
    """The last attempt's 429 or 503 asked this wait: the job's next ticks wait too."""
    attempt_log: tuple[AttemptRecord, ...]


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
    """None for a problem of no expected kind (the caller logs it). Once the status has
    come it alone decides, the body kept as far as it was read; but a peer that hangs
    up inside the body may have died handling the call: a FAILURE."""
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


class Slots:
    """At most `size` holders at once; each gives its slot back with `give`, once.
    Unlike asyncio.Semaphore, taken without awaiting (a burst's first requests are
    written from plain code before any task runs) and telling who waits (so queued
    deliveries send before one's bookkeeping). Like it: first come first served, and
    a cancelled waiter never loses a slot."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._waiting = 0  # in `take`, those handed a slot but not resumed included
        self._none_waiting = asyncio.Event()
        self._none_waiting.set()

    @property
    def waiting(self) -> int:
        return self._waiting

    def try_take(self) -> bool:
        """Take a slot if one is free and nobody waits for it."""
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
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    async def none_waiting(self) -> None:
        await self._none_waiting.wait()


class Outgoing:
    """One delivery as the run path holds it; what the dispatcher keeps between its
    steps (the request made ahead, the first one in flight, its slot) stays inside.
    `send_first`, then once either `result` or `abandon` (its run was replaced)."""

    __slots__ = ("_dispatcher", "_first", "_prepared", "request")

    def __init__(
        self, dispatcher: Dispatcher, request: WebhookRequest, prepared: Prepared | None
    ) -> None:
        self._dispatcher = dispatcher
        self.request = request
        self._prepared = prepared
        self._first: FirstSend | None = None

    def send_first(self) -> None:
        """Where a slot is free; else `result` sends it as usual."""
        prepared, self._prepared = self._prepared, None
        self._first = self._dispatcher.send_first(self.request, prepared)

    def abandon(self) -> None:
        """A first request sent is not read, its slot freed."""
        first, self._first = self._first, None
        if first is not None:
            self._dispatcher.abandon(first)

    async def result(self) -> DeliveryResult:
        first, self._first = self._first, None
        return await self._dispatcher.deliver(self.request, first)


class Dispatcher:
    """At most `max_concurrency` deliveries at once (more wait for a slot), as many
    idle connections, and `max_connections_per_host` (0: no limit of its own) per host.
    Only addresses `target_policy` allows (by default globally routable ones) are
    connected to, names resolved through `resolver` behind the SSRF guard."""

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
        self._slots = Slots(max_concurrency)
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

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def prepare(self, request: WebhookRequest, at: float) -> Prepared | None:
        """A first request made ahead, for `send_first` in the second that holds `at`."""
        return make_ahead(request, at, self._user_agent, self._clock)

    def outgoing(self, request: WebhookRequest, at: float | None = None) -> Outgoing:
        """The delivery as the run path holds it, to send now or at `at` (Unix
        seconds), its first request then made now."""
        return Outgoing(self, request, None if at is None else self.prepare(request, at))

    def send_first(
        self, request: WebhookRequest, prepared: Prepared | None = None
    ) -> FirstSend | None:
        """Send a delivery's first request now if a slot is free, so a burst's
        requests all go out before any of their tasks runs. What it returns
        holds the slot until `deliver` or `abandon`; None: nothing was sent,
        and `deliver` sends as usual."""
        client = self._client
        if client is None or not self._slots.try_take():
            return None
        clock = self._clock
        started_at, started = clock.now(), clock.monotonic()
        sent_at = clock.time()
        try:
            if prepared is None or prepared.timestamp != int(sent_at):
                prepared = make_request(request, 1, int(sent_at), self._user_agent, clock)
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
        """Give up a delivery whose first request went out: its connection is closed."""
        first.sent.cancel()
        self._in_flight -= 1
        self._slots.give()

    async def deliver(
        self, request: WebhookRequest, first: FirstSend | None = None
    ) -> DeliveryResult:
        """All attempts of `request`; `first`: what `send_first` sent of it."""
        client = self._client
        if client is None:
            raise RuntimeError("Dispatcher.start() has not been called")
        clock = self._clock
        started = first_sent_at = 0.0
        # Bounded here too, so a stored policy can never grow the attempt log past it.
        max_attempts = min(max(1, request.retry.max_attempts), MAX_ATTEMPTS)
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
                outcome, sent_at = await self._attempt(client, request, attempt, first)
                first = None
            finally:
                self._in_flight -= 1
                self._slots.give()
            if attempt == 1:
                started, first_sent_at = attempt_started, sent_at
            delay = retry_delay(outcome, attempt, request.retry)
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
        result = DeliveryResult(
            status=ExecutionStatus.SUCCESS if outcome.error is None else ExecutionStatus.FAILURE,
            attempts=attempt,
            executed_at=attempt_log[0].started_at,
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
        await _after_queued_sends(self._slots)
        return result

    async def _attempt(
        self,
        client: HttpClient,
        request: WebhookRequest,
        attempt: int,
        first: FirstSend | None,
    ) -> tuple[Outcome, float]:
        """One exchange: its outcome and when it was sent."""
        clock = self._clock
        started = clock.monotonic() if first is None else first.started
        sent_at = clock.time()
        try:
            if first is None:
                target, data, _ = make_request(
                    request, attempt, int(sent_at), self._user_agent, clock
                )
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
            outcome = judge(response, clock)
        except Exception as exc:  # one bad request must not escape deliver
            outcome = _failure(exc, request, attempt)
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


def _failure(exc: Exception, request: WebhookRequest, attempt: int) -> Outcome:
    outcome = problem(exc, request.timeout_s)
    if outcome is None:
        # Recorded in words (a run's error never names a Python exception);
        # the exception goes to the log, where it can be read.
        log.error(
            "webhook_request_failed",
            execution_id=request.execution_id,
            job_id=request.job_id,
            attempt=attempt,
            exc_info=exc,
        )
        return failed(
            "request_error",
            "the request could not be made: an unexpected problem, logged as "
            "webhook_request_failed",
        )
    if isinstance(exc, TargetNotAllowed):
        log.warning(
            "webhook_target_refused",
            execution_id=request.execution_id,
            job_id=request.job_id,
            host=exc.host,
            address=exc.address,
            reason=exc.reason,
        )
    return outcome


async def _after_queued_sends(slots: Slots) -> None:
    """Let the deliveries waiting for a slot send before this one's bookkeeping,
    else a burst larger than the pool goes out one bookkeeping at a time
    (BENCHMARKS.md); at most `_BOOKKEEPING_WAIT_S`, so a full pool still records.
    A cancellation (a stop) ends the wait, not the delivery, whose answer is in:
    it is taken back with `Task.uncancel()`; a second one goes through."""
    if not slots.waiting:
        return
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_BOOKKEEPING_WAIT_S):
                await slots.none_waiting()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.uncancel() > 0:
            raise  # cancelled more than once: not this wait's to absorb
