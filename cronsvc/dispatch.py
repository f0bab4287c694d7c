"""The webhook dispatcher: every execution's webhook call, its retries and its record.

`Dispatcher.deliver` turns a `WebhookRequest` into a `DeliveryResult` and never
raises for a problem with that one request (bad URL, refused connection, a
receiver that hangs or answers 500): the problem is recorded in the result.
It lets `asyncio.CancelledError` through untouched.

For a burst fired together, the run path's deliveries (`cronsvc.deliveries`)
put each one's first request on the wire (`cronsvc.outgoing`) before they
start the tasks that read the answers and carry on with any retries.

Requests travel over `cronsvc.wire`'s pooled HTTP/1.1 connections, which go
only where the SSRF guard (`cronsvc.netguard`) allows: a target it refuses
is a FAILURE of type `target_not_allowed`, never retried.

The body of an answer is captured best-effort, up to `max_response_bytes`,
and a body that is longer (or cannot be read to its end in time) is cut off
and flagged as truncated rather than failing the delivery. How an attempt's
answer or problem is judged is `cronsvc.verdicts`; the message each attempt
sends, with its Standard Webhooks headers, `cronsvc.webhook_request`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import NamedTuple, Self

import structlog
from aiohttp.abc import AbstractResolver

from cronsvc import __version__
from cronsvc.clock import Clock
from cronsvc.domain import MAX_ATTEMPTS, AttemptRecord, ErrorInfo, ExecutionStatus
from cronsvc.errors import TargetNotAllowed
from cronsvc.netguard import GuardedResolver, TargetPolicy
from cronsvc.outgoing import Outgoing
from cronsvc.slots import Slots
from cronsvc.verdicts import Outcome, failed, judge, problem, retry_delay
from cronsvc.webhook_request import Prepared, WebhookRequest, make_ahead, make_request
from cronsvc.wire import HttpClient, Sent, Target

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

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def prepare(self, request: WebhookRequest, at: float) -> Prepared | None:
        """A delivery's first request made ahead, for `send_first` in the
        second that holds `at` (Unix seconds); see `make_ahead`."""
        return make_ahead(request, at, self._user_agent, self._clock)

    def outgoing(self, request: WebhookRequest, at: float | None = None) -> Outgoing:
        """The delivery of `request` as the run path holds it, to send now or
        at `at` (Unix seconds): its first request is then made now. The
        tokens `prepare` and `send_first` make stay inside it."""
        return Outgoing(self, request, None if at is None else self.prepare(request, at))

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
        outcome = Outcome()
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
        await _after_queued_sends(self._slots)
        return result

    async def _attempt(
        self,
        client: HttpClient,
        request: WebhookRequest,
        attempt: int,
        first: FirstSend | None,
    ) -> tuple[Outcome, float]:
        """One HTTP exchange; returns its outcome and when it was sent."""
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
    """What the problem `exc` makes of an attempt, logged where it calls for it."""
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
    """Let the deliveries waiting for a slot send first: what is left of
    this one is bookkeeping; done at once, each queued request of a burst
    larger than the pool would go out only after an earlier one's
    bookkeeping (BENCHMARKS.md, "Why the constants are what they are").
    Waits at most `_BOOKKEEPING_WAIT_S`, so a pool that stays full still
    records.

    A cancellation (a stop cutting the runs short) ends the wait but not
    the delivery: its answer is in, and is recorded as it was, not as
    cut off by the stop. The one cancellation absorbed is taken back with
    `Task.uncancel()`, as asyncio asks of code that does not propagate
    one; a second is not this wait's, and goes through."""
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
