"""The webhook call of every execution: its attempts, their retries and its record.

`Dispatcher.deliver` never raises for a problem with one request (bad URL,
refused connection, a receiver that hangs or answers 500): the result records
it. `asyncio.CancelledError` goes through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from datetime import datetime
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
