"""Alerts sent: each state change an instance effected (`cronsvc.alertwatch`)
POSTed to its policy's url as JSON, signed as webhooks are, off the firing
path.

Alerts wait in a bounded queue (`[alerts] max_pending`; one that does not
fit is counted "dropped" and logged) and go out from a few tasks of their
own, through a connection pool of their own (`cronsvc.wire`) behind the
same SSRF guard and its policy as webhooks. A delivery is tried up to
`max_attempts` times, on the same transient failures as a webhook
(connection errors, timeouts, 429, 5xx) with backoff and full jitter;
every outcome is counted in `cronsvc_alerts_total{outcome}`: sent, retried
(each retry), failed, dropped.

Requests carry the Standard Webhooks headers: `webhook-id` is the alert's
id (the job and the state version it changed to: equal across retries),
and `webhook-signature` is made with the policy's secret, else the job's,
else `[alerts] secret`; with none the alert goes unsigned.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import structlog
from aiohttp.abc import AbstractResolver

from cronsvc import __version__
from cronsvc.alertdoc import alert_document
from cronsvc.alerts import AlertChange
from cronsvc.clock import Clock
from cronsvc.config import AlertsConfig
from cronsvc.dispatch import Outcome, failed, judge, problem, retry_delay
from cronsvc.domain import HttpMethod, RetryPolicy, Trigger
from cronsvc.metrics import Metrics
from cronsvc.netguard import GuardedResolver, TargetPolicy
from cronsvc.webhook_request import WebhookRequest, make_request
from cronsvc.wire import HttpClient

log = structlog.get_logger(__name__)

SENDERS = 4
"""Alerts in flight at once: enough that one slow receiver does not hold
up the rest, few enough that a burst does not take the webhooks' share."""
MAX_ANSWER_BYTES = 4096
MAX_BACKOFF_S = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """One state change to tell, with what of its job the alert names."""

    change: AlertChange
    job_name: str
    job_secret: str | None


class AlertSender:
    def __init__(
        self,
        *,
        config: AlertsConfig,
        dashboard_url: str,
        target_policy: TargetPolicy,
        clock: Clock,
        metrics: Metrics,
        resolver: AbstractResolver | None = None,
        backoff_s: float = 1.0,
    ) -> None:
        self._config = config
        self._dashboard_url = dashboard_url
        self._clock = clock
        self._metrics = metrics
        self._guard = GuardedResolver(target_policy, resolver)
        self._client = HttpClient(guard=self._guard, max_idle=SENDERS)
        self._retry = RetryPolicy(
            max_attempts=config.max_attempts,
            backoff_seconds=backoff_s,
            max_backoff_seconds=MAX_BACKOFF_S,
        )
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(config.max_pending)
        self._user_agent = f"cronsvc/{__version__}"
        self._dropping = 0
        metrics.gauge("cronsvc_alerts_pending", "Alerts waiting to be sent", self._queue.qsize)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def send(self, alert: Alert) -> None:
        """Queue an alert; never waits. One that does not fit is dropped (counted, logged)."""
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            self._dropped([alert], "queue_full")

    async def run(self) -> None:
        """Send queued alerts until cancelled (see `aclose`)."""
        async with asyncio.TaskGroup() as group:
            for number in range(SENDERS):
                group.create_task(self._work(), name=f"alert-sender-{number}")

    async def aclose(self, run: asyncio.Task[None], grace_s: float) -> None:
        """Let queued alerts go out for up to `grace_s`, then stop `run`
        (the task running `run`); what is left is counted dropped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), grace_s)
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        left = []
        while not self._queue.empty():
            left.append(self._queue.get_nowait())
        if left:
            self._dropped(left, "shutdown")
        await self._client.aclose()
        await self._guard.close()

    async def _work(self) -> None:
        while True:
            alert = await self._queue.get()
            try:
                await self.deliver(alert)
            except asyncio.CancelledError:  # stopped while sending it
                self._dropped([alert], "shutdown")
                raise
            except Exception:  # a bug in one alert must not stop the others
                self._metrics.inc("cronsvc_alerts_total", outcome="failed")
                log.exception("alert_crashed", job_id=alert.change.job_id)
            finally:
                self._queue.task_done()

    async def deliver(self, alert: Alert) -> bool:
        """Send one alert, retrying what is transient. Whether it was taken."""
        change = alert.change
        document = alert_document(
            change,
            job_name=alert.job_name,
            dashboard_url=self._dashboard_url,
            sent_at=self._clock.now(),
        )
        request = WebhookRequest(
            execution_id=change.alert_id,
            job_id=change.job_id,
            job_name=alert.job_name,
            scheduled_at=change.outcome.scheduled_at or self._clock.now(),
            trigger=Trigger.SCHEDULE,
            url=change.policy.url or "",
            method=HttpMethod.POST,
            headers={},
            body=document,
            timeout_s=self._config.timeout_s,
            retry=self._retry,
            secret=change.policy.secret or alert.job_secret or self._config.secret or None,
        )
        attempt = 1
        while True:
            outcome = await self._attempt(request, attempt)
            if outcome.error is None:
                self._metrics.inc("cronsvc_alerts_total", outcome="sent")
                log.info("alert_sent", job_id=change.job_id, kind=change.kind.value)
                return True
            delay = retry_delay(outcome, attempt, self._retry)
            if delay is None:
                self._metrics.inc("cronsvc_alerts_total", outcome="failed")
                log.error(
                    "alert_failed",
                    job_id=change.job_id,
                    kind=change.kind.value,
                    attempts=attempt,
                    error_type=outcome.error.type,
                    error=outcome.error.message,
                )
                return False
            self._metrics.inc("cronsvc_alerts_total", outcome="retried")
            await self._clock.sleep(delay)
            attempt += 1

    async def _attempt(self, request: WebhookRequest, attempt: int) -> Outcome:
        try:
            target, data, _ = make_request(
                request, attempt, int(self._clock.time()), self._user_agent, self._clock
            )
            deadline = asyncio.get_running_loop().time() + request.timeout_s
            response = await self._client.request(
                "POST", target, data, deadline=deadline, max_body=MAX_ANSWER_BYTES
            )
        except Exception as exc:  # one bad alert must not stop the sender
            judged = problem(exc, request.timeout_s)
            if judged is None:
                log.error("alert_request_failed", job_id=request.job_id, exc_info=exc)
                return failed("request_error", "the alert could not be sent (see the log)")
            return judged
        return judge(response, self._clock)

    def _dropped(self, alerts: list[Alert], reason: str) -> None:
        self._metrics.inc("cronsvc_alerts_total", len(alerts), outcome="dropped")
        log.error(
            "alerts_dropped",
            count=len(alerts),
            reason=reason,
            alerts=[
                {"job_id": alert.change.job_id, "kind": alert.change.kind.value}
                for alert in alerts[:20]
            ],
        )
