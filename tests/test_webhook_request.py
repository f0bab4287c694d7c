"""The bytes one webhook attempt sends, made without a network: the request
line, the headers in their order, the default body; a request that cannot
be made is refused before anything is sent, and one made ahead is left to
its send when it would not hold there."""

from __future__ import annotations

import pytest

from cronsvc.domain import HttpMethod
from cronsvc.webhook_request import UnsendableHeader, make_ahead, make_request
from tests.fakes import FakeClock
from tests.helpers_dispatch import webhook


def test_a_post_of_the_default_body_is_made_byte_for_byte() -> None:
    request = webhook("http://example.com:8080/hook?x=1", headers={"X-Key": "k"})

    made = make_request(request, 2, 1_767_225_600, "cronsvc/t", FakeClock())

    body = (
        b'{"jobId":"job-0001","jobName":"nightly report","executionId":"exec-0001",'
        b'"scheduledAt":"2026-01-01T00:00:00.000Z","trigger":"schedule","attempt":2}'
    )
    assert made.timestamp == 1_767_225_600
    assert made.target.host_header == "example.com:8080"
    assert made.data == (
        b"POST /hook?x=1 HTTP/1.1\r\nHost: example.com:8080\r\nX-Key: k\r\n"
        b"Accept: */*\r\nAccept-Encoding: gzip, deflate\r\n"
        b"Content-Type: application/json\r\nUser-Agent: cronsvc/t\r\n"
        b"webhook-id: exec-0001\r\nwebhook-timestamp: 1767225600\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def test_a_get_carries_no_body_and_no_content_type() -> None:
    request = webhook("http://example.com/", method=HttpMethod.GET, headers={"Content-Type": "x"})

    made = make_request(request, 1, 0, "u", FakeClock())

    assert made.data.endswith(b"webhook-timestamp: 0\r\n\r\n")
    assert b"Content-" not in made.data


def test_a_header_that_would_break_the_message_is_refused() -> None:
    request = webhook("http://example.com/", headers={"X-Bad": "a\r\nInjected: 1"})

    with pytest.raises(UnsendableHeader):
        make_request(request, 1, 0, "u", FakeClock())
    assert make_ahead(request, 0, "u", FakeClock()) is None
