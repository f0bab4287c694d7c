"""A webhook call as the run path hands it over, and the bytes one attempt sends,
with the Standard Webhooks headers: `webhook-id` is the execution's, the same on
every retry; the signature is made afresh per attempt since its timestamp is signed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from cronsvc.clock import Clock
from cronsvc.domain import (
    HEADER_NAME,
    HEADER_VALUE_CONTROL,
    RESERVED_HEADERS,
    HttpMethod,
    JsonValue,
    PreviousSecret,
    RetryPolicy,
    Trigger,
)
from cronsvc.instants import rfc3339
from cronsvc.signing import signature_header
from cronsvc.wire import Target, parse_target

_json_string: Callable[[str], str] = json.encoder.encode_basestring


class UnsendableHeader(ValueError):
    """A stored header no request may carry (the API refuses it now)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookRequest:
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


class Prepared(NamedTuple):
    target: Target
    data: bytes
    timestamp: int
    """Its `webhook-timestamp`: good for a send within that second."""


def make_request(
    request: WebhookRequest, attempt: int, timestamp: int, user_agent: str, clock: Clock
) -> Prepared:
    """Raises `InvalidTarget`, `InvalidSecret`, and `UnsendableHeader` for a stored header
    that would break the message (the API refuses those now). One the dispatcher sets
    itself is left out."""
    target = parse_target(request.url)
    body, content_type = encode_body(request, attempt)
    lines = [
        f"{request.method.value} {target.request_target} HTTP/1.1",
        f"Host: {target.host_header}",
    ]
    given = {name.lower() for name in request.headers}
    for name, value in request.headers.items():
        lowered = name.lower()
        if lowered in RESERVED_HEADERS or (body is None and lowered == "content-type"):
            continue
        if not HEADER_NAME.fullmatch(name):
            raise UnsendableHeader(f"the header name {name[:100]!r} is not a token")
        if HEADER_VALUE_CONTROL.search(value):
            raise UnsendableHeader(f"the header {name[:100]!r} holds a control character")
        lines.append(f"{name}: {value}")
    if "accept" not in given:
        lines.append("Accept: */*")
    if "accept-encoding" not in given:
        lines.append("Accept-Encoding: gzip, deflate")
    if body is not None and "content-type" not in given:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"User-Agent: {user_agent}")
    lines.append(f"webhook-id: {request.execution_id}")
    lines.append(f"webhook-timestamp: {timestamp}")
    signature = _signature(request, body or b"", timestamp, clock)
    if signature is not None:
        lines.append(f"webhook-signature: {signature}")
    if body is not None:  # None exactly when the method carries no body
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return Prepared(target, head if body is None else head + body, timestamp)


def make_ahead(
    request: WebhookRequest, at: float, user_agent: str, clock: Clock
) -> Prepared | None:
    """A first request made ahead of its send in the second that holds `at`. None when
    it cannot be made (the send meets and records the same problem), or a replaced
    secret stops signing before that second ends."""
    previous = request.previous_secret
    if (
        previous is not None
        and previous.in_force(clock.now())
        and not previous.in_force(datetime.fromtimestamp(int(at) + 1, UTC))
    ):
        return None
    try:
        return make_request(request, 1, int(at), user_agent, clock)
    except Exception:
        return None


def _signature(request: WebhookRequest, body: bytes, timestamp: int, clock: Clock) -> str | None:
    """The current secret's signature, then, while it is in force, the replaced
    secret's. Raises `InvalidSecret`."""
    in_use = [] if request.secret is None else [request.secret]
    previous = request.previous_secret
    if (
        previous is not None
        and previous.secret != request.secret
        and previous.in_force(clock.now())
    ):
        in_use.append(previous.secret)
    return signature_header(in_use, request.execution_id, timestamp, body) if in_use else None


def encode_body(request: WebhookRequest, attempt: int) -> tuple[bytes | None, str]:
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
