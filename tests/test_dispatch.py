"""The dispatcher against real aiohttp receivers on loopback; no HTTP mocks."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver

from cronsvc import __version__
from cronsvc.clock import SystemClock
from cronsvc.dispatch import DeliveryResult, Dispatcher
from cronsvc.domain import ExecutionStatus, HttpMethod, PreviousSecret, RetryPolicy, Trigger
from cronsvc.netguard import TargetPolicy
from tests.fakes import (
    HOLD_LIMIT_S,
    BlockingClock,
    FakeClock,
    Handler,
    Receiver,
    ScriptedResolver,
    StartReceiver,
    free_port,
)
from tests.helpers_dispatch import SCHEDULED_AT, MakeDispatcher, webhook
from tests.standard_webhooks import new_secret, signatures, verifies


@pytest.fixture
async def dispatcher(make_dispatcher: MakeDispatcher) -> Dispatcher:
    """A started dispatcher on the system clock; closed at teardown."""
    return await make_dispatcher()


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def retrying_dispatcher(make_dispatcher: MakeDispatcher, fake_clock: FakeClock) -> Dispatcher:
    """A started dispatcher whose backoff sleeps are recorded, not waited out."""
    return await make_dispatcher(clock=fake_clock)


def answer(status: int = 200, text: str = "", **headers: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text=text, headers=headers)

    return handler


def answers(*responses: tuple[int, dict[str, str]]) -> Handler:
    """Answer the n-th request with the n-th (status, headers); then 200."""
    remaining = list(responses)

    async def handler(request: web.Request) -> web.StreamResponse:
        status, headers = remaining.pop(0) if remaining else (200, {})
        return web.Response(status=status, text=f"status {status}", headers=headers)

    return handler


# --- success and what is sent ------------------------------------------------


async def test_2xx_is_success_with_status_and_body_captured(
    start_receiver: StartReceiver, dispatcher: Dispatcher
) -> None:
    receiver = await start_receiver(answer(201, "created it"))

    before = time.time()
    result = await dispatcher.deliver(webhook(receiver.url))

    assert result.status is ExecutionStatus.SUCCESS
    assert result.attempts == 1
    assert result.response_status == 201
    assert result.response_body == "created it"
    assert result.response_truncated is False
    assert result.error is None
    assert result.executed_at <= result.finished_at
    assert result.duration_ms >= 0
    assert before - 1 <= result.first_sent_at <= time.time() + 1
    assert dispatcher.in_flight == 0


async def test_default_body_names_job_tick_and_execution(
    start_receiver: StartReceiver, dispatcher: Dispatcher
) -> None:
    receiver = await start_receiver(answer(204))

    await dispatcher.deliver(webhook(receiver.url, trigger=Trigger.MANUAL))

    [seen] = receiver.requests
    assert seen.method == "POST"
    assert seen.headers["Content-Type"] == "application/json"
    assert json.loads(seen.body) == {
        "jobId": "job-0001",
        "jobName": "nightly report",
        "executionId": "exec-0001",
        "scheduledAt": "2026-01-01T00:00:00.000Z",
        "trigger": "manual",
        "attempt": 1,
    }


async def test_default_body_is_exactly_compact_json_whatever_the_job_is_called(
    start_receiver: StartReceiver, dispatcher: Dispatcher
) -> None:
    receiver = await start_receiver(answer(204))
    name = 'say "hi" \\ to\tthe\nteam \u2014 caf\u00e9 \U0001f600 \x01'

    await dispatcher.deliver(webhook(receiver.url, job_name=name))

    expected = {
        "jobId": "job-0001",
        "jobName": name,
        "executionId": "exec-0001",
        "scheduledAt": "2026-01-01T00:00:00.000Z",
        "trigger": "schedule",
        "attempt": 1,
    }
    body = json.dumps(expected, separators=(",", ":"), ensure_ascii=False).encode()
    assert receiver.requests[0].body == body


async def test_default_body_scheduled_at_keeps_milliseconds(
    start_receiver: StartReceiver, dispatcher: Dispatcher
) -> None:
    receiver = await start_receiver(answer(204))
    tick = datetime(2026, 3, 29, 1, 30, 0, 123000, tzinfo=UTC)

    await dispatcher.deliver(webhook(receiver.url, scheduled_at=tick))

    assert json.loads(receiver.requests[0].body)["scheduledAt"] == "2026-03-29T01:30:00.123Z"


async def test_default_body_scheduled_at_is_written_as_the_api_writes_instants(
    start_receiver: StartReceiver, dispatcher: Dispatcher
) -> None:
    receiver = await start_receiver(answer(204))
    ticks = [datetime(2026, 3, 29, 1, 30, tzinfo=UTC), datetime(939, 3, 14, 5, 52, tzinfo=UTC)]

    for tick in ticks:
        await dispatcher.deliver(webhook(receiver.url, scheduled_at=tick))

    assert [json.loads(seen.body)["scheduledAt"] for seen in receiver.requests] == [
        "2026-03-29T01:30:00.000Z",
        "0939-03-14T05:52:00.000Z",
    ]


async def test_standard_webhook_headers_are_added(
    start_receiver: StartReceiver, dispatcher: Dispatcher
) -> None:
    receiver = await start_receiver(answer(200))

    await dispatcher.deliver(webhook(receiver.url, execution_id="exec-42"))

    headers = receiver.requests[0].headers
    assert headers["webhook-id"] == "exec-42"
    timestamp = headers["webhook-timestamp"]
    assert timestamp.isdigit()
    assert abs(int(timestamp) - time.time()) < 60
    assert headers["User-Agent"] == f"cronsvc/{__version__}"


async def test_json_string_body_is_sent_as_is_with_json_content_type(
    start_receiver: StartReceiver, dispatcher: Dispatcher
) -> None:
    receiver = await start_receiver(answer(200))
    text = '{"b": 1,  "a": [1, 2]}'

    await dispatcher.deliver(webhook(receiver.url, body=text))

    assert receiver.requests[0].body == text.encode()
    assert receiver.requests[0].headers["Content-Type"] == "application/json"


async def test_plain_string_body_is_sent_as_utf8_text(
    start_receiver: StartReceiver, dispatcher: Dispatcher
) -> None:
    receiver = await start_receiver(answer(200))

    await dispatcher.deliver(webhook(receiver.url, body="grüße, not json"))

    assert receiver.requests[0].body == "grüße, not json".encode()
    assert receiver.requests[0].headers["Content-Type"] == "text/plain; charset=utf-8"


async def test_a_string_body_too_deep_to_parse_is_sent_as_text(
    start_receiver: StartReceiver, dispatcher: Dispatcher
) -> None:
    receiver = await start_receiver(answer(200))
    text = "[" * 5000 + "]" * 5000  # JSON, but deeper than the parser goes

    result = await dispatcher.deliver(webhook(receiver.url, body=text))

    assert result.error is None
    assert receiver.requests[0].body == text.encode()
    assert receiver.requests[0].headers["Content-Type"] == "text/plain; charset=utf-8"


async def test_dict_body_is_sent_as_compact_json(
    start_receiver: StartReceiver, dispatcher: Dispatcher
) -> None:
    receiver = await start_receiver(answer(200))

    await dispatcher.deliver(webhook(receiver.url, body={"report": "daily", "n": [1, 2]}))

    assert receiver.requests[0].body == b'{"report":"daily","n":[1,2]}'
    assert receiver.requests[0].headers["Content-Type"] == "application/json"


async def test_user_content_type_wins(
    start_receiver: StartReceiver, dispatcher: Dispatcher
) -> None:
    receiver = await start_receiver(answer(200))

    await dispatcher.deliver(
        webhook(receiver.url, body={"a": 1}, headers={"content-type": "application/vnd.x+json"})
    )

    assert receiver.requests[0].headers.getall("Content-Type") == ["application/vnd.x+json"]


async def test_user_headers_are_sent(start_receiver: StartReceiver, dispatcher: Dispatcher) -> None:
    receiver = await start_receiver(answer(200))

    await dispatcher.deliver(
        webhook(receiver.url, headers={"Authorization": "Bearer t0ken", "X-Team": "ops"})
    )

    assert receiver.requests[0].headers["Authorization"] == "Bearer t0ken"
    assert receiver.requests[0].headers["X-Team"] == "ops"


async def test_user_cannot_override_webhook_id_timestamp_or_user_agent(
    start_receiver: StartReceiver, dispatcher: Dispatcher
) -> None:
    receiver = await start_receiver(answer(200))
    forged = {"Webhook-Id": "forged", "WEBHOOK-TIMESTAMP": "1", "user-agent": "forged/1"}

    await dispatcher.deliver(webhook(receiver.url, execution_id="exec-7", headers=forged))

    headers = receiver.requests[0].headers
    assert headers.getall("webhook-id") == ["exec-7"]
    assert headers.getall("webhook-timestamp") != ["1"]
    assert len(headers.getall("webhook-timestamp")) == 1
    assert headers.getall("User-Agent") == [f"cronsvc/{__version__}"]


async def test_a_stored_host_header_never_replaces_the_real_one(
    start_receiver: StartReceiver, dispatcher: Dispatcher
) -> None:
    """The API refuses one; a job stored before it did still goes to its URL's host."""
    receiver = await start_receiver(answer(200))

    await dispatcher.deliver(webhook(receiver.url, headers={"host": "elsewhere.example"}))

    assert receiver.requests[0].headers.getall("Host") == [
        receiver.base_url.removeprefix("http://")
    ]


async def test_get_sends_no_body_and_no_content_type(
    start_receiver: StartReceiver, dispatcher: Dispatcher
) -> None:
    receiver = await start_receiver(answer(200))

    await dispatcher.deliver(
        webhook(
            receiver.url,
            method=HttpMethod.GET,
            body={"ignored": True},
            headers={"Content-Type": "application/json"},
        )
    )

    [seen] = receiver.requests
    assert seen.method == "GET"
    assert seen.body == b""
    assert "Content-Type" not in seen.headers
    assert seen.headers["webhook-id"] == "exec-0001"


@pytest.mark.parametrize("method", [HttpMethod.PUT, HttpMethod.PATCH, HttpMethod.DELETE])
async def test_method_arrives_as_configured_with_default_body(
    start_receiver: StartReceiver, dispatcher: Dispatcher, method: HttpMethod
) -> None:
    receiver = await start_receiver(answer(200))

    result = await dispatcher.deliver(webhook(receiver.url, method=method))

    assert result.status is ExecutionStatus.SUCCESS
    assert receiver.requests[0].method == method.value
    assert json.loads(receiver.requests[0].body)["executionId"] == "exec-0001"


async def test_connections_are_kept_alive_between_deliveries(
    start_receiver: StartReceiver, dispatcher: Dispatcher
) -> None:
    receiver = await start_receiver(answer(200, "ok"))

    for i in range(3):
        await dispatcher.deliver(webhook(receiver.url, execution_id=f"e{i}"))

    assert len({seen.peer for seen in receiver.requests}) == 1


# --- failures ----------------------------------------------------------------


async def test_500_is_failure_with_http_status_error(
    start_receiver: StartReceiver, dispatcher: Dispatcher
) -> None:
    receiver = await start_receiver(answer(500, "boom"))

    result = await dispatcher.deliver(webhook(receiver.url))

    assert result.status is ExecutionStatus.FAILURE
    assert result.response_status == 500
    assert result.response_body == "boom"
    assert result.error is not None
    assert result.error.type == "http_status"
    assert result.error.message == "HTTP 500 Internal Server Error"


async def test_404_fails_at_once_without_retry(
    start_receiver: StartReceiver, retrying_dispatcher: Dispatcher, fake_clock: FakeClock
) -> None:
    receiver = await start_receiver(answer(404))

    result = await retrying_dispatcher.deliver(
        webhook(receiver.url, retry=RetryPolicy(max_attempts=3))
    )

    assert result.status is ExecutionStatus.FAILURE
    assert result.attempts == 1
    assert len(receiver.requests) == 1
    assert fake_clock.sleeps == []
    assert result.error is not None
    assert result.error.type == "http_status"
    assert result.error.message == "HTTP 404 Not Found"


async def test_302_is_not_followed(
    start_receiver: StartReceiver, retrying_dispatcher: Dispatcher
) -> None:
    target = await start_receiver(answer(200))
    redirector = await start_receiver(answer(302, Location=target.at("/elsewhere")))

    result = await retrying_dispatcher.deliver(
        webhook(redirector.url, retry=RetryPolicy(max_attempts=3))
    )

    assert result.status is ExecutionStatus.FAILURE
    assert result.attempts == 1
    assert result.response_status == 302
    assert result.error is not None
    assert result.error.type == "redirect_not_followed"
    assert target.at("/elsewhere") in result.error.message
    assert target.requests == []
    [only] = result.attempt_log
    assert only.response_status == 302 and only.error == result.error
    assert only.retry_after_ms is None


async def test_timeout_is_failure_naming_the_limit(
    start_receiver: StartReceiver, retrying_dispatcher: Dispatcher
) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await receiver.hold()
        return web.Response(text="too late")

    receiver = await start_receiver(slow)

    result = await retrying_dispatcher.deliver(
        webhook(receiver.url, timeout_s=0.2, retry=RetryPolicy(max_attempts=2))
    )

    assert result.status is ExecutionStatus.FAILURE
    assert result.attempts == 2, "a timeout is transient and retried"
    assert result.response_status is None
    assert result.error is not None
    assert result.error.type == "timeout"
    assert "0.2 s" in result.error.message


async def test_refused_connection_is_connection_error_without_traceback(
    retrying_dispatcher: Dispatcher, fake_clock: FakeClock
) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"

    result = await retrying_dispatcher.deliver(webhook(url, retry=RetryPolicy(max_attempts=2)))

    assert result.status is ExecutionStatus.FAILURE
    assert result.attempts == 2, "a connection error is transient and retried"
    assert len(fake_clock.sleeps) == 1
    assert result.error is not None
    assert result.error.type == "connection_error"
    assert result.error.message
    assert "Traceback" not in result.error.message
    assert "\n" not in result.error.message
    assert 'File "' not in result.error.message


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/hook", "http://", "http://127.0.0.1:99999/hook", "not a url"]
)
async def test_unusable_url_is_invalid_url_and_not_retried(
    retrying_dispatcher: Dispatcher, url: str
) -> None:
    result = await retrying_dispatcher.deliver(webhook(url, retry=RetryPolicy(max_attempts=3)))

    assert result.status is ExecutionStatus.FAILURE
    assert result.attempts == 1
    assert result.error is not None
    assert result.error.type == "invalid_url"


@pytest.mark.parametrize("value", ["a\r\nInjected: yes", "a\x00b", "a\x0bb", "a\x7fb"])
async def test_a_stored_header_that_cannot_be_sent_is_a_worded_request_error(
    start_receiver: StartReceiver, dispatcher: Dispatcher, value: str
) -> None:
    receiver = await start_receiver(answer(200))

    result = await dispatcher.deliver(webhook(receiver.url, headers={"X-Evil": value}))

    assert result.status is ExecutionStatus.FAILURE
    assert result.error is not None
    assert result.error.type == "request_error"
    assert result.error.message == "the header 'X-Evil' holds a control character"
    assert receiver.requests == []


class BrokenResolver(AbstractResolver):
    """Fails as the system's IDNA encoding does for a name it cannot encode."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[Any]:
        raise UnicodeError("encoding with 'idna' codec failed (UnicodeError: label too long)")

    async def close(self) -> None:
        pass


async def test_an_unexpected_problem_is_recorded_in_words_never_as_an_exception_name(
    make_dispatcher: MakeDispatcher,
) -> None:
    dispatcher = await make_dispatcher(resolver=BrokenResolver())

    result = await dispatcher.deliver(webhook("http://receiver.example/hook"))

    assert result.status is ExecutionStatus.FAILURE
    assert result.error is not None
    assert result.error.type == "request_error"
    assert result.error.message.startswith("the request could not be made")
    assert "Error" not in result.error.message and "idna" not in result.error.message


@pytest.mark.parametrize(
    "url",
    ["http://" + "a" * 64 + ".example/hook", "http://%31%32%37.0.0.1/", "http://[v1.x]/"],
)
async def test_a_stored_url_whose_host_no_request_can_reach_is_invalid_url(
    dispatcher: Dispatcher, url: str
) -> None:
    result = await dispatcher.deliver(webhook(url))

    assert result.error is not None
    assert result.error.type == "invalid_url"
    assert result.error.message.startswith(("the host", "only an IPv6")), result.error.message


# --- retries -----------------------------------------------------------------


async def test_503_twice_then_200_succeeds_on_third_attempt_with_jittered_backoff(
    start_receiver: StartReceiver, retrying_dispatcher: Dispatcher, fake_clock: FakeClock
) -> None:
    receiver = await start_receiver(answers((503, {}), (503, {})))
    policy = RetryPolicy(max_attempts=3, backoff_seconds=10.0, max_backoff_seconds=15.0)

    result = await retrying_dispatcher.deliver(webhook(receiver.url, retry=policy))

    assert result.status is ExecutionStatus.SUCCESS
    assert result.attempts == 3
    assert result.response_status == 200
    assert result.error is None
    assert [seen.headers["webhook-id"] for seen in receiver.requests] == ["exec-0001"] * 3
    assert [json.loads(seen.body)["attempt"] for seen in receiver.requests] == [1, 2, 3]
    first, second = fake_clock.sleeps
    assert 0.0 <= first <= 10.0  # backoff * 2**0
    assert 0.0 <= second <= 15.0  # backoff * 2**1 = 20, capped at max_backoff


@pytest.mark.parametrize(
    ("status", "retry_after", "max_backoff", "expected"),
    [
        (503, "7", 60.0, 7.0),
        (429, "3", 60.0, 3.0),
        (503, "3600", 30.0, 30.0),
        (429, "Wed, 21 Oct 2015 07:28:00 GMT", 30.0, 0.0),  # a date in the past
    ],
)
async def test_retry_after_is_honoured_and_capped(
    start_receiver: StartReceiver,
    retrying_dispatcher: Dispatcher,
    fake_clock: FakeClock,
    status: int,
    retry_after: str,
    max_backoff: float,
    expected: float,
) -> None:
    receiver = await start_receiver(answers((status, {"Retry-After": retry_after})))
    policy = RetryPolicy(max_attempts=2, backoff_seconds=1.0, max_backoff_seconds=max_backoff)

    result = await retrying_dispatcher.deliver(webhook(receiver.url, retry=policy))

    assert result.status is ExecutionStatus.SUCCESS
    assert result.attempts == 2
    assert fake_clock.sleeps == [expected]
    assert [a.retry_after_ms for a in result.attempt_log] == [round(expected * 1000), None]


async def test_exhausted_attempts_fail_with_last_response(
    start_receiver: StartReceiver, retrying_dispatcher: Dispatcher, fake_clock: FakeClock
) -> None:
    receiver = await start_receiver(answer(502, "bad gateway"))

    result = await retrying_dispatcher.deliver(
        webhook(receiver.url, retry=RetryPolicy(max_attempts=3))
    )

    assert result.status is ExecutionStatus.FAILURE
    assert result.attempts == 3
    assert len(receiver.requests) == 3
    assert len(fake_clock.sleeps) == 2, "no wait after the last attempt"
    assert result.response_status == 502
    assert result.response_body == "bad gateway"
    assert result.error is not None
    assert result.error.type == "http_status"


# --- the attempt log -----------------------------------------------------------


async def test_503_503_200_records_three_attempts_with_statuses_durations_and_waits(
    start_receiver: StartReceiver, retrying_dispatcher: Dispatcher, fake_clock: FakeClock
) -> None:
    receiver = await start_receiver(answers((503, {}), (503, {})))
    policy = RetryPolicy(max_attempts=5, backoff_seconds=2.0, max_backoff_seconds=60.0)

    result = await retrying_dispatcher.deliver(webhook(receiver.url, retry=policy))

    assert result.status is ExecutionStatus.SUCCESS
    assert result.attempts == 3
    log = result.attempt_log
    assert [a.attempt for a in log] == [1, 2, 3]
    assert [a.response_status for a in log] == [503, 503, 200]
    assert [a.error.type if a.error else None for a in log] == ["http_status", "http_status", None]
    assert all(isinstance(a.duration_ms, int) and 0 <= a.duration_ms < 5000 for a in log)
    waits = [round(s * 1000) for s in fake_clock.sleeps]
    assert [a.retry_after_ms for a in log] == [*waits, None]
    assert result.executed_at <= log[0].started_at <= log[1].started_at <= log[2].started_at
    # Each attempt starts after the wait before it (the fake clock moves on by it).
    gap = (log[2].started_at - log[1].started_at).total_seconds() * 1000
    assert gap >= waits[1] - 1


async def test_refused_connections_record_each_attempts_error_type(
    retrying_dispatcher: Dispatcher,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"

    result = await retrying_dispatcher.deliver(webhook(url, retry=RetryPolicy(max_attempts=3)))

    assert result.status is ExecutionStatus.FAILURE
    assert len(result.attempt_log) == result.attempts == 3
    assert all(a.response_status is None for a in result.attempt_log)
    assert [a.error.type if a.error else None for a in result.attempt_log] == [
        "connection_error"
    ] * 3
    assert result.attempt_log[-1].retry_after_ms is None
    assert all(a.retry_after_ms is not None for a in result.attempt_log[:-1])


async def test_attempt_log_never_exceeds_ten_entries(
    retrying_dispatcher: Dispatcher,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    stored_past_the_limit = RetryPolicy(max_attempts=50, backoff_seconds=0.0)

    result = await retrying_dispatcher.deliver(webhook(url, retry=stored_past_the_limit))

    assert result.attempts == len(result.attempt_log) == 10


# --- signing -------------------------------------------------------------------


async def test_a_job_with_a_secret_is_signed_as_the_standard_says(
    start_receiver: StartReceiver, dispatcher: Dispatcher
) -> None:
    receiver = await start_receiver(answer(200))
    secret = new_secret()

    await dispatcher.deliver(webhook(receiver.url, execution_id="exec-9", secret=secret))

    [seen] = receiver.requests
    assert seen.headers["webhook-id"] == "exec-9"
    assert len(signatures(seen.headers)) == 1
    assert verifies(secret, seen.headers, seen.body)
    assert not verifies(new_secret(), seen.headers, seen.body)


async def test_a_get_without_a_body_is_signed_over_an_empty_body(
    start_receiver: StartReceiver, dispatcher: Dispatcher
) -> None:
    receiver = await start_receiver(answer(200))
    secret = new_secret()

    await dispatcher.deliver(webhook(receiver.url, method=HttpMethod.GET, secret=secret))

    [seen] = receiver.requests
    assert seen.body == b""
    assert verifies(secret, seen.headers, b"")


async def test_a_job_without_a_secret_sends_no_signature_not_even_a_users(
    start_receiver: StartReceiver, dispatcher: Dispatcher
) -> None:
    receiver = await start_receiver(answer(200))

    await dispatcher.deliver(webhook(receiver.url, headers={"Webhook-Signature": "v1,forged"}))

    assert "webhook-signature" not in receiver.requests[0].headers


async def test_a_users_signature_header_never_replaces_ours(
    start_receiver: StartReceiver, dispatcher: Dispatcher
) -> None:
    receiver = await start_receiver(answer(200))
    secret = new_secret()

    await dispatcher.deliver(
        webhook(receiver.url, secret=secret, headers={"WEBHOOK-SIGNATURE": "v1,forged"})
    )

    [seen] = receiver.requests
    assert len(seen.headers.getall("webhook-signature")) == 1
    assert signatures(seen.headers) != ["v1,forged"]
    assert verifies(secret, seen.headers, seen.body)


async def test_a_rotated_secret_signs_beside_the_new_one_until_its_grace_ends(
    start_receiver: StartReceiver, retrying_dispatcher: Dispatcher, fake_clock: FakeClock
) -> None:
    receiver = await start_receiver(answer(200))
    new, old = new_secret(), new_secret()
    grace_ends = fake_clock.now() + timedelta(days=1)
    rotated = webhook(
        receiver.url,
        secret=new,
        previous_secret=PreviousSecret(secret=old, expires_at=grace_ends),
    )

    await retrying_dispatcher.deliver(rotated)
    fake_clock.advance(timedelta(days=1).total_seconds() - 60)
    await retrying_dispatcher.deliver(rotated)
    fake_clock.advance(61)  # the grace is over
    await retrying_dispatcher.deliver(rotated)

    within, last_minute, after = receiver.requests
    for seen in (within, last_minute):
        first, second = signatures(seen.headers)
        assert verifies(new, {**seen.headers, "webhook-signature": first}, seen.body)
        assert verifies(old, {**seen.headers, "webhook-signature": second}, seen.body)
    assert len(signatures(after.headers)) == 1
    assert verifies(new, after.headers, after.body)
    assert not verifies(old, after.headers, after.body)
    assert int(after.headers["webhook-timestamp"]) >= grace_ends.timestamp()


async def test_a_removed_secret_still_signs_alone_during_its_grace(
    start_receiver: StartReceiver, retrying_dispatcher: Dispatcher, fake_clock: FakeClock
) -> None:
    receiver = await start_receiver(answer(200))
    old = new_secret()
    removed = webhook(
        receiver.url,
        secret=None,
        previous_secret=PreviousSecret(
            secret=old, expires_at=fake_clock.now() + timedelta(hours=1)
        ),
    )

    await retrying_dispatcher.deliver(removed)
    fake_clock.advance(3601)
    await retrying_dispatcher.deliver(removed)

    within, after = receiver.requests
    assert len(signatures(within.headers)) == 1
    assert verifies(old, within.headers, within.body)
    assert "webhook-signature" not in after.headers


async def test_every_attempt_is_signed_afresh_under_one_webhook_id(
    start_receiver: StartReceiver, retrying_dispatcher: Dispatcher, fake_clock: FakeClock
) -> None:
    receiver = await start_receiver(
        answers((503, {"Retry-After": "5"}), (429, {"Retry-After": "5"}))
    )
    secret = new_secret()
    policy = RetryPolicy(max_attempts=3, backoff_seconds=1.0, max_backoff_seconds=60.0)

    result = await retrying_dispatcher.deliver(
        webhook(receiver.url, execution_id="exec-77", secret=secret, retry=policy)
    )

    assert result.status is ExecutionStatus.SUCCESS
    assert fake_clock.sleeps == [5.0, 5.0]
    seen = receiver.requests
    assert [s.headers["webhook-id"] for s in seen] == ["exec-77"] * 3
    timestamps = [int(s.headers["webhook-timestamp"]) for s in seen]
    assert timestamps[0] < timestamps[1] < timestamps[2]
    assert all(verifies(secret, s.headers, s.body) for s in seen)
    assert len({s.headers["webhook-signature"] for s in seen}) == 3


async def test_an_unusable_secret_fails_the_delivery_without_sending_or_quoting_it(
    start_receiver: StartReceiver, retrying_dispatcher: Dispatcher
) -> None:
    receiver = await start_receiver(answer(200))

    result = await retrying_dispatcher.deliver(
        webhook(receiver.url, secret="legacy-s3cret", retry=RetryPolicy(max_attempts=3))
    )

    assert result.status is ExecutionStatus.FAILURE
    assert result.attempts == 1
    assert result.error is not None and result.error.type == "invalid_secret"
    assert "legacy-s3cret" not in result.error.message
    assert receiver.requests == []


# --- bounded response capture --------------------------------------------------


async def test_large_response_is_truncated_to_exactly_the_limit(
    start_receiver: StartReceiver, make_dispatcher: MakeDispatcher
) -> None:
    dispatcher = await make_dispatcher(max_response_bytes=1000)
    receiver = await start_receiver(answer(200, "x" * 5000))

    result = await dispatcher.deliver(webhook(receiver.url))

    assert result.status is ExecutionStatus.SUCCESS
    assert result.response_body == "x" * 1000
    assert result.response_truncated is True


async def test_response_of_exactly_the_limit_is_not_truncated(
    start_receiver: StartReceiver, make_dispatcher: MakeDispatcher
) -> None:
    dispatcher = await make_dispatcher(max_response_bytes=1000)
    receiver = await start_receiver(answer(200, "y" * 1000))

    result = await dispatcher.deliver(webhook(receiver.url))

    assert result.response_body == "y" * 1000
    assert result.response_truncated is False


async def test_truncation_never_leaves_half_a_utf8_character(
    start_receiver: StartReceiver, make_dispatcher: MakeDispatcher
) -> None:
    dispatcher = await make_dispatcher(max_response_bytes=5)
    receiver = await start_receiver(answer(200, "ééé"))  # 6 bytes; the limit cuts the third

    result = await dispatcher.deliver(webhook(receiver.url))

    assert result.response_body == "éé"
    assert result.response_truncated is True


async def test_endless_stream_returns_promptly_with_truncated_body(
    start_receiver: StartReceiver, make_dispatcher: MakeDispatcher
) -> None:
    chunk, max_chunks = b"z" * 1024, 10_000
    sent = 0
    stream_ended = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        if request.path != "/endless":
            return web.Response(text="short")
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            # ~10 s of stream at best: far longer than the delivery may take.
            while sent < max_chunks:
                await response.write(chunk)
                sent += 1
                await asyncio.sleep(0.001)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            stream_ended.set()
        return response

    dispatcher = await make_dispatcher(max_response_bytes=4096)
    receiver = await start_receiver(endless)

    result = await dispatcher.deliver(webhook(receiver.at("/endless"), timeout_s=30.0))

    assert result.status is ExecutionStatus.SUCCESS
    assert result.error is None
    assert result.response_body == "z" * 4096
    assert result.response_truncated is True
    assert sent < max_chunks, "the delivery waited for the stream to end"
    # The connection was dropped, not drained: the receiver's writes fail.
    async with asyncio.timeout(5):
        await stream_ended.wait()
    assert sent < max_chunks

    after = await dispatcher.deliver(webhook(receiver.at("/short")))

    assert after.response_body == "short"
    endless_request, short_request = receiver.requests
    assert short_request.peer != endless_request.peer, "a half-read connection was reused"


# --- concurrency and cancellation ----------------------------------------------


async def test_concurrency_limit_bounds_requests_in_flight(
    start_receiver: StartReceiver, make_dispatcher: MakeDispatcher
) -> None:
    gate = asyncio.Semaphore(0)

    async def held(request: web.Request) -> web.StreamResponse:
        async with asyncio.timeout(HOLD_LIMIT_S):
            await gate.acquire()
        return web.Response(text="done")

    dispatcher = await make_dispatcher(max_concurrency=2)
    receiver = await start_receiver(held)
    deliveries = [
        asyncio.create_task(dispatcher.deliver(webhook(receiver.url, execution_id=f"e{i}")))
        for i in range(5)
    ]

    for finished in range(5):
        expected = min(2, 5 - finished)
        await receiver.wait_active(expected)
        await asyncio.sleep(0.05)  # room for an over-limit request to show up
        assert receiver.active == expected
        assert dispatcher.in_flight == expected
        gate.release()
    results = await asyncio.gather(*deliveries)

    assert [r.status for r in results] == [ExecutionStatus.SUCCESS] * 5
    assert receiver.max_active == 2
    assert len(receiver.requests) == 5
    assert dispatcher.in_flight == 0


async def test_a_delivery_waiting_for_a_slot_is_sent_before_the_one_that_freed_it_returns(
    start_receiver: StartReceiver, make_dispatcher: MakeDispatcher
) -> None:
    dispatcher = await make_dispatcher(max_concurrency=1)
    receiver = await start_receiver(answer(200))
    in_flight_when_done: list[int] = []

    async def deliver(execution_id: str) -> None:
        await dispatcher.deliver(webhook(receiver.url, execution_id=execution_id))
        in_flight_when_done.append(dispatcher.in_flight)

    await asyncio.gather(deliver("first"), deliver("second"))

    assert [seen.headers["webhook-id"] for seen in receiver.requests] == ["first", "second"]
    assert in_flight_when_done == [1, 0], "the first returned before the second was sent"


async def test_a_delivery_cancelled_after_its_answer_returns_the_answer(
    start_receiver: StartReceiver, make_dispatcher: MakeDispatcher
) -> None:
    """Once answered, a delivery only waits for the queued ones to send
    first; a stop then must not turn its success into a failure."""
    answer_now = asyncio.Event()

    async def gated(request: web.Request) -> web.StreamResponse:
        async with asyncio.timeout(HOLD_LIMIT_S):
            await answer_now.wait()
        return web.Response(text="done")

    async def held(request: web.Request) -> web.StreamResponse:
        await slow.hold()
        return web.Response()

    dispatcher = await make_dispatcher(max_concurrency=1)
    fast, slow = await start_receiver(gated), await start_receiver(held)
    answered = asyncio.create_task(dispatcher.deliver(webhook(fast.url, execution_id="a")))
    await fast.wait_active(1)
    queued = [
        asyncio.create_task(dispatcher.deliver(webhook(slow.url, execution_id=f"q{n}")))
        for n in range(2)
    ]
    await asyncio.sleep(0.05)  # both wait for the one slot
    answer_now.set()
    await slow.wait_active(1)  # the first queued one took the slot; the other still waits
    await asyncio.sleep(0.05)

    answered.cancel()

    result = await answered
    assert (result.status, result.response_body) == (ExecutionStatus.SUCCESS, "done")
    assert result.duration_ms < 1000
    for task in queued:
        task.cancel()
    await asyncio.gather(*queued, return_exceptions=True)


async def test_cancelling_a_delivery_propagates_cancelled_error(
    start_receiver: StartReceiver, dispatcher: Dispatcher
) -> None:
    async def held(request: web.Request) -> web.StreamResponse:
        await receiver.hold()
        return web.Response()

    receiver = await start_receiver(held)
    delivery = asyncio.create_task(dispatcher.deliver(webhook(receiver.url)))
    await receiver.wait_active(1)

    delivery.cancel()

    with pytest.raises(asyncio.CancelledError):
        await delivery
    assert dispatcher.in_flight == 0


async def test_cancelling_during_backoff_propagates_cancelled_error(
    start_receiver: StartReceiver, make_dispatcher: MakeDispatcher
) -> None:
    clock = BlockingClock()
    dispatcher = await make_dispatcher(clock=clock)
    receiver = await start_receiver(answer(503))
    delivery = asyncio.create_task(
        dispatcher.deliver(webhook(receiver.url, retry=RetryPolicy(max_attempts=3)))
    )
    async with asyncio.timeout(5):
        await clock.sleeping.wait()

    delivery.cancel()

    with pytest.raises(asyncio.CancelledError):
        await delivery
    assert len(receiver.requests) == 1
    assert dispatcher.in_flight == 0


async def one_slot_taken(
    start_receiver: StartReceiver, make_dispatcher: MakeDispatcher, handler: Handler
) -> tuple[Dispatcher, Receiver, asyncio.Task[DeliveryResult]]:
    """A one-slot dispatcher whose slot a delivery (execution "a") holds
    while `handler` keeps its request open."""
    dispatcher = await make_dispatcher(max_concurrency=1)
    receiver = await start_receiver(handler)
    holding = asyncio.create_task(dispatcher.deliver(webhook(receiver.url, execution_id="a")))
    await receiver.wait_active(1)
    return dispatcher, receiver, holding


async def test_a_waiter_cancelled_for_a_slot_leaves_the_slot_to_the_next(
    start_receiver: StartReceiver, make_dispatcher: MakeDispatcher
) -> None:
    gate = asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        async with asyncio.timeout(HOLD_LIMIT_S):
            await gate.wait()
        return web.Response()

    dispatcher, receiver, holding = await one_slot_taken(start_receiver, make_dispatcher, held)
    cancelled = asyncio.create_task(dispatcher.deliver(webhook(receiver.url, execution_id="b")))
    waiting = asyncio.create_task(dispatcher.deliver(webhook(receiver.url, execution_id="c")))
    await asyncio.sleep(0.05)  # both wait for the one slot
    cancelled.cancel()
    gate.set()

    async with asyncio.timeout(5):
        first, last = await holding, await waiting
    assert (first.status, last.status) == (ExecutionStatus.SUCCESS, ExecutionStatus.SUCCESS)
    assert [seen.headers["webhook-id"] for seen in receiver.requests] == ["a", "c"]
    assert dispatcher.in_flight == 0


# --- a burst's first requests, sent before their tasks run -------------------------


async def test_a_first_send_goes_out_on_a_kept_connection_and_deliver_reads_its_answer(
    start_receiver: StartReceiver, dispatcher: Dispatcher
) -> None:
    receiver = await start_receiver(answer(200, "fine"))
    await dispatcher.deliver(webhook(receiver.url, execution_id="warm"))
    request = webhook(receiver.url, execution_id="burst")

    first = dispatcher.send_first(request)

    assert first is not None
    assert dispatcher.in_flight == 1
    result = await dispatcher.deliver(request, first)
    assert (result.status, result.attempts, result.response_body) == (
        ExecutionStatus.SUCCESS,
        1,
        "fine",
    )
    assert [seen.headers["webhook-id"] for seen in receiver.requests] == ["warm", "burst"]
    assert receiver.requests[1].peer == receiver.requests[0].peer
    assert result.first_sent_at == first.sent_at
    assert dispatcher.in_flight == 0


async def test_a_first_send_opens_a_connection_when_none_is_kept_and_waits_for_no_task(
    start_receiver: StartReceiver, dispatcher: Dispatcher
) -> None:
    receiver = await start_receiver(answer(200))
    request = webhook(receiver.url, execution_id="cold")

    first = dispatcher.send_first(request)

    assert first is not None
    await receiver.wait_for(1, within_s=5)  # arrives though deliver is not called
    result = await dispatcher.deliver(request, first)
    assert (result.status, result.attempts) == (ExecutionStatus.SUCCESS, 1)
    assert len(receiver.requests) == 1


async def test_nothing_is_sent_first_without_a_free_slot(
    start_receiver: StartReceiver, make_dispatcher: MakeDispatcher
) -> None:
    async def held(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(HOLD_LIMIT_S)
        return web.Response()

    dispatcher, receiver, holding = await one_slot_taken(start_receiver, make_dispatcher, held)

    assert dispatcher.send_first(webhook(receiver.url, execution_id="b")) is None
    assert dispatcher.in_flight == 1
    holding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holding


async def test_an_abandoned_first_send_frees_its_slot(
    start_receiver: StartReceiver, make_dispatcher: MakeDispatcher
) -> None:
    dispatcher = await make_dispatcher(max_concurrency=1)
    receiver = await start_receiver(answer(200))
    await dispatcher.deliver(webhook(receiver.url, execution_id="warm"))
    first = dispatcher.send_first(webhook(receiver.url, execution_id="replaced"))
    assert first is not None

    dispatcher.abandon(first)

    assert dispatcher.in_flight == 0
    async with asyncio.timeout(5):  # with the one slot still taken, this would wait forever
        result = await dispatcher.deliver(webhook(receiver.url, execution_id="next"))
    assert result.status is ExecutionStatus.SUCCESS


async def test_an_outgoing_delivery_made_ahead_is_sent_first_then_read(
    start_receiver: StartReceiver, dispatcher: Dispatcher
) -> None:
    receiver = await start_receiver(answer(200, "fine"))
    outgoing = dispatcher.outgoing(webhook(receiver.url, execution_id="ahead"), time.time())

    outgoing.send_first()

    assert dispatcher.in_flight == 1
    await receiver.wait_for(1, within_s=5)  # arrives before its result is awaited
    result = await outgoing.result()
    assert (result.status, result.attempts, result.response_body) == (
        ExecutionStatus.SUCCESS,
        1,
        "fine",
    )
    assert dispatcher.in_flight == 0


async def test_an_abandoned_outgoing_delivery_frees_its_slot_and_one_unsent_needs_nothing(
    start_receiver: StartReceiver, make_dispatcher: MakeDispatcher
) -> None:
    dispatcher = await make_dispatcher(max_concurrency=1)
    receiver = await start_receiver(answer(200))
    unsent = dispatcher.outgoing(webhook(receiver.url, execution_id="unsent"))
    unsent.abandon()
    replaced = dispatcher.outgoing(webhook(receiver.url, execution_id="replaced"))
    replaced.send_first()
    assert dispatcher.in_flight == 1

    replaced.abandon()

    assert dispatcher.in_flight == 0
    async with asyncio.timeout(5):  # with the one slot still taken, this would wait forever
        result = await dispatcher.outgoing(webhook(receiver.url, execution_id="next")).result()
    assert result.status is ExecutionStatus.SUCCESS


async def test_a_request_made_ahead_goes_out_as_made_within_its_second(
    start_receiver: StartReceiver, dispatcher: Dispatcher
) -> None:
    receiver = await start_receiver(answer(200))
    await dispatcher.deliver(webhook(receiver.url, execution_id="warm"))
    request = webhook(receiver.url, execution_id="ahead", secret=new_secret())
    prepared = dispatcher.prepare(request, time.time())
    assert prepared is not None
    # The same message with one more header: what goes out is what was made.
    marked = prepared._replace(data=prepared.data.replace(b"\r\n", b"\r\nx-made: ahead\r\n", 1))

    first = dispatcher.send_first(request, marked)
    assert first is not None
    await dispatcher.deliver(request, first)

    seen = receiver.requests[-1]
    if int(seen.headers["webhook-timestamp"]) == prepared.timestamp:
        assert seen.headers["x-made"] == "ahead"
    else:  # the second ended between prepare and send: made again, unmarked
        assert "x-made" not in seen.headers


async def test_a_request_made_for_another_second_is_made_again_at_the_send(
    start_receiver: StartReceiver, dispatcher: Dispatcher
) -> None:
    receiver = await start_receiver(answer(200))
    await dispatcher.deliver(webhook(receiver.url, execution_id="warm"))
    secret = new_secret()
    request = webhook(receiver.url, execution_id="late", secret=secret)
    prepared = dispatcher.prepare(request, time.time() - 5)
    assert prepared is not None

    first = dispatcher.send_first(request, prepared)
    assert first is not None
    sent_at = first.sent_at
    await dispatcher.deliver(request, first)

    seen = receiver.requests[-1]
    assert int(seen.headers["webhook-timestamp"]) == int(sent_at)
    assert verifies(secret, seen.headers, seen.body)


@pytest.mark.parametrize(
    ("grace_left_s", "made_ahead"),
    [(None, True), (300.0, True), (50.0, False), (-1.0, True)],
    ids=["no replaced secret", "outlives the send", "ends first", "over already"],
)
async def test_a_request_is_left_to_its_send_when_a_replaced_secret_stops_signing_first(
    dispatcher: Dispatcher, grace_left_s: float | None, made_ahead: bool
) -> None:
    now = time.time()
    previous = None
    if grace_left_s is not None:
        expires = datetime.fromtimestamp(now + grace_left_s, UTC)
        previous = PreviousSecret(secret=new_secret(), expires_at=expires)
    request = webhook("http://127.0.0.1:9/hook", secret=new_secret(), previous_secret=previous)

    prepared = dispatcher.prepare(request, now + 100)  # its send, 100 s from now

    assert (prepared is not None) is made_ahead


# --- SSRF guard ----------------------------------------------------------------
# Only loopback addresses are ever connected to: receivers on 127.0.0.1, and on
# 127.0.0.2 where a test needs one address the policy allows and one it refuses.

SHUT = TargetPolicy()
"""The default policy: only globally routable addresses."""
ONLY_127_0_0_2 = TargetPolicy.from_settings(allow_private=False, allowed_cidrs=["127.0.0.2/32"])


def refused(result: DeliveryResult) -> str:
    """Assert a delivery was refused by the guard at its first attempt; its message."""
    assert result.status is ExecutionStatus.FAILURE
    assert result.attempts == 1
    assert result.response_status is None
    assert result.error is not None
    assert result.error.type == "target_not_allowed"
    return result.error.message


def closing(status: int = 200) -> Handler:
    """Answer and close the connection, so the next delivery needs a new one."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.Response(status=status, text="ok")
        response.force_close()
        return response

    return handler


async def test_loopback_receiver_is_refused_by_default_and_not_retried(
    start_receiver: StartReceiver, make_dispatcher: MakeDispatcher, fake_clock: FakeClock
) -> None:
    receiver = await start_receiver(answer(200))
    dispatcher = await make_dispatcher(clock=fake_clock, target_policy=SHUT)

    result = await dispatcher.deliver(webhook(receiver.url, retry=RetryPolicy(max_attempts=3)))

    message = refused(result)
    assert "127.0.0.1 is a loopback address" in message
    assert fake_clock.sleeps == []
    assert receiver.requests == []


@pytest.mark.parametrize(
    "host",
    [
        "2130706433",
        "127.1",
        "0x7f.0.0.1",
        "0177.0.0.1",
        "127.0.0.1.",
        "[::ffff:127.0.0.1]",
        "[::1]",
        "localhost",  # through the system resolver
    ],
)
async def test_every_spelling_of_loopback_is_refused(
    start_receiver: StartReceiver, make_dispatcher: MakeDispatcher, host: str
) -> None:
    receiver = await start_receiver(answer(200))
    port = receiver.base_url.rsplit(":", 1)[1]
    dispatcher = await make_dispatcher(target_policy=SHUT)

    result = await dispatcher.deliver(webhook(f"http://{host}:{port}/hook"))

    refused(result)
    assert receiver.requests == []


async def test_a_name_resolving_to_loopback_is_refused(
    start_receiver: StartReceiver, make_dispatcher: MakeDispatcher
) -> None:
    receiver = await start_receiver(answer(200))
    port = receiver.base_url.rsplit(":", 1)[1]
    resolver = ScriptedResolver(["127.0.0.1"])
    dispatcher = await make_dispatcher(target_policy=SHUT, resolver=resolver)

    result = await dispatcher.deliver(webhook(f"http://hooks.example.test:{port}/hook"))

    assert "hooks.example.test (127.0.0.1) is a loopback address" in refused(result)
    assert resolver.lookups == ["hooks.example.test"]
    assert receiver.requests == []


async def test_a_name_is_connected_to_at_the_address_that_was_checked(
    start_receiver: StartReceiver, make_dispatcher: MakeDispatcher
) -> None:
    receiver = await start_receiver(answer(200), host="127.0.0.2")
    port = receiver.base_url.rsplit(":", 1)[1]
    dispatcher = await make_dispatcher(
        target_policy=ONLY_127_0_0_2, resolver=ScriptedResolver(["127.0.0.2"])
    )

    result = await dispatcher.deliver(webhook(f"http://hooks.example.test:{port}/hook"))

    assert result.status is ExecutionStatus.SUCCESS
    [seen] = receiver.requests
    assert seen.headers["Host"] == f"hooks.example.test:{port}"


async def test_allowed_cidrs_open_one_range_and_nothing_else(
    start_receiver: StartReceiver, make_dispatcher: MakeDispatcher
) -> None:
    inside = await start_receiver(answer(200), host="127.0.0.2")
    outside = await start_receiver(answer(200))
    dispatcher = await make_dispatcher(target_policy=ONLY_127_0_0_2)

    allowed = await dispatcher.deliver(webhook(inside.url))
    denied = await dispatcher.deliver(webhook(outside.url))

    assert allowed.status is ExecutionStatus.SUCCESS
    assert len(inside.requests) == 1
    refused(denied)
    assert outside.requests == []


async def test_a_redirect_to_loopback_is_not_followed(
    start_receiver: StartReceiver, make_dispatcher: MakeDispatcher, fake_clock: FakeClock
) -> None:
    internal = await start_receiver(answer(200))
    redirector = await start_receiver(answer(302, Location=internal.at("/admin")), host="127.0.0.2")
    dispatcher = await make_dispatcher(clock=fake_clock, target_policy=ONLY_127_0_0_2)

    result = await dispatcher.deliver(webhook(redirector.url, retry=RetryPolicy(max_attempts=3)))

    assert internal.at("/admin").startswith("http://127.0.0.1:")
    assert result.status is ExecutionStatus.FAILURE
    assert result.attempts == 1
    assert result.response_status == 302
    assert result.error is not None
    assert result.error.type == "redirect_not_followed"
    assert len(redirector.requests) == 1
    assert internal.requests == []


async def test_a_name_that_rebinds_to_a_refused_address_is_refused_at_the_next_connection(
    start_receiver: StartReceiver, make_dispatcher: MakeDispatcher
) -> None:
    receiver = await start_receiver(closing(), host="127.0.0.2")
    port = receiver.base_url.rsplit(":", 1)[1]
    # Allowed first, refused from then on: DNS rebinding.
    resolver = ScriptedResolver(["127.0.0.2"], ["127.0.0.1"])
    dispatcher = await make_dispatcher(target_policy=ONLY_127_0_0_2, resolver=resolver)
    url = f"http://rebind.example.test:{port}/hook"

    first = await dispatcher.deliver(webhook(url, execution_id="e1"))
    second = await dispatcher.deliver(webhook(url, execution_id="e2"))

    assert first.status is ExecutionStatus.SUCCESS
    assert "rebind.example.test (127.0.0.1)" in refused(second)
    assert [seen.headers["webhook-id"] for seen in receiver.requests] == ["e1"]
    assert len(resolver.lookups) == 2, "each new connection resolves the name afresh"


async def test_an_answer_with_one_refused_address_is_refused_whole(
    start_receiver: StartReceiver, make_dispatcher: MakeDispatcher
) -> None:
    receiver = await start_receiver(answer(200), host="127.0.0.2")
    port = receiver.base_url.rsplit(":", 1)[1]
    resolver = ScriptedResolver(["127.0.0.2", "127.0.0.1"])
    dispatcher = await make_dispatcher(target_policy=ONLY_127_0_0_2, resolver=resolver)

    result = await dispatcher.deliver(webhook(f"http://mixed.example.test:{port}/hook"))

    assert "mixed.example.test (127.0.0.1)" in refused(result)
    assert receiver.requests == []


# --- hygiene -------------------------------------------------------------------


def test_secret_and_headers_stay_out_of_repr() -> None:
    previous = PreviousSecret(secret="old-s3cr3t", expires_at=SCHEDULED_AT)
    request = webhook(
        "http://127.0.0.1/hook",
        secret="s3cr3t-value",
        previous_secret=previous,
        headers={"Authorization": "Bearer t0ken"},
    )

    assert "s3cr3t-value" not in repr(request)
    assert "old-s3cr3t" not in repr(request)
    assert "old-s3cr3t" not in repr(previous)
    assert "t0ken" not in repr(request)


async def test_deliver_before_start_is_a_programming_error() -> None:
    dispatcher = Dispatcher(max_concurrency=1, max_response_bytes=10, clock=SystemClock())

    with pytest.raises(RuntimeError, match="start"):
        await dispatcher.deliver(webhook("http://127.0.0.1/hook"))
