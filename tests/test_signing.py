"""Secrets and signatures: the Standard Webhooks forms, checked against the
specification's published example and an implementation written in the tests."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import pytest

from cronsvc.errors import InvalidSecret
from cronsvc.signing import generate_secret, parse_secret, signature, signature_header
from tests.standard_webhooks import expected_signature

# The example the Standard Webhooks specification publishes.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def whsec(size: int) -> str:
    return "whsec_" + base64.b64encode(bytes(range(size))).decode()


def test_signature_reproduces_the_specifications_example() -> None:
    assert signature(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_signature_matches_an_independent_implementation_of_the_spec() -> None:
    secret = generate_secret()
    body = '{"jobId":"j","grüße":[1,2]}'.encode()

    made = signature(secret, "exec-1", 1767225600, body)

    assert made == expected_signature(secret, "exec-1", "1767225600", body)
    assert made != signature(secret, "exec-1", 1767225601, body)
    assert made != signature(secret, "exec-2", 1767225600, body)


def test_generated_secrets_are_whsec_base64_of_32_random_bytes() -> None:
    first, second = generate_secret(), generate_secret()

    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) == 32
    assert parse_secret(first) == base64.b64decode(first.removeprefix("whsec_"))
    assert first != second


@pytest.mark.parametrize("size", [24, 32, 64])
def test_secrets_of_24_to_64_bytes_are_accepted(size: int) -> None:
    assert len(parse_secret(whsec(size))) == size


def test_base64_padding_may_be_left_off() -> None:
    padded = whsec(32)
    assert padded.endswith("=")

    assert parse_secret(padded.rstrip("=")) == parse_secret(padded)


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ("s3cret-value", "must start with 'whsec_'"),
        ("WHSEC_" + base64.b64encode(bytes(32)).decode(), "must start with 'whsec_'"),
        ("whsec_", "must have base64"),
        ("whsec_not base64 at all!", "not valid base64"),
        ("whsec_" + base64.urlsafe_b64encode(b"\xff" * 32).decode(), "not valid base64"),
        (whsec(23), "24-64 bytes, not 23"),
        (whsec(65), "24-64 bytes, not 65"),
    ],
)
def test_malformed_secrets_raise_a_clear_error_that_never_quotes_them(
    secret: str, reason: str
) -> None:
    with pytest.raises(InvalidSecret, match=reason) as caught:
        parse_secret(secret)

    encoded = secret.removeprefix("whsec_")
    assert not encoded or encoded not in str(caught.value)


def test_several_secrets_give_space_separated_signatures_in_order() -> None:
    new, old = generate_secret(), generate_secret()

    header = signature_header([new, old], "exec-1", 1767225600, b"{}")

    assert header.split(" ") == [
        expected_signature(new, "exec-1", "1767225600", b"{}"),
        expected_signature(old, "exec-1", "1767225600", b"{}"),
    ]


def test_the_readmes_verification_snippet_accepts_our_signatures_only() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### Verifying webhook signatures", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)
    verify = namespace["verify"]
    new, old = generate_secret(), generate_secret()
    now = int(time.time())
    body = b'{"jobId":"j"}'
    headers = {
        "webhook-id": "exec-1",
        "webhook-timestamp": str(now),
        "webhook-signature": signature_header([new, old], "exec-1", now, body),
    }

    assert verify(new, headers, body) and verify(old, headers, body)
    assert not verify(generate_secret(), headers, body)
    assert not verify(new, headers, body + b" ")
    assert not verify(new, {**headers, "webhook-timestamp": str(now - 3600)}, body)
    assert not verify(new, {k: v for k, v in headers.items() if k != "webhook-signature"}, body)
