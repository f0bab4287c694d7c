"""Webhook signing as the Standard Webhooks specification defines it.

A secret is ``whsec_`` followed by the base64 of 24 to 64 random bytes; those
bytes (not the text) are the HMAC key. A request is signed over
``{webhook-id}.{webhook-timestamp}.{body}`` with HMAC-SHA256, and the
`webhook-signature` header carries ``v1,`` + the base64 digest; several
signatures (a rotated secret and its predecessor) are separated by spaces.

Secrets are never put in an error message, a log line or a repr.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable

from cronsvc.errors import InvalidSecret

PREFIX = "whsec_"
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64
GENERATED_KEY_BYTES = 32
VERSION = "v1"


def generate_secret() -> str:
    """A new secret: ``whsec_`` + base64 of 32 bytes from `secrets`."""
    key = secrets.token_bytes(GENERATED_KEY_BYTES)
    return PREFIX + base64.b64encode(key).decode("ascii")


def parse_secret(secret: str) -> bytes:
    """The HMAC key a secret holds. Raises `InvalidSecret` naming what is wrong
    (never the secret itself). Padding may be left off; nothing else is lenient."""
    if not secret.startswith(PREFIX):
        raise InvalidSecret(f"must start with {PREFIX!r} followed by base64")
    encoded = secret[len(PREFIX) :]
    if not encoded:
        raise InvalidSecret(f"must have base64 after {PREFIX!r}")
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSecret(f"the part after {PREFIX!r} is not valid base64") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise InvalidSecret(
            f"the part after {PREFIX!r} must decode to {MIN_KEY_BYTES}-{MAX_KEY_BYTES} bytes, "
            f"not {len(key)}"
        )
    return key


def is_valid_secret(secret: str) -> bool:
    try:
        parse_secret(secret)
    except InvalidSecret:
        return False
    return True


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``{msg_id}.{timestamp}.{body}`` under `secret`."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(parse_secret(secret), signed, hashlib.sha256).digest()
    return f"{VERSION},{base64.b64encode(digest).decode('ascii')}"


def signature_header(
    secrets_in_use: Iterable[str], msg_id: str, timestamp: int, body: bytes
) -> str:
    """The `webhook-signature` value: one signature per secret, space-separated."""
    return " ".join(signature(secret, msg_id, timestamp, body) for secret in secrets_in_use)


def whsec_secret(value: str) -> str:
    """`value` if it is a whsec_ secret; ValueError saying what is wrong
    (never quoting it)."""
    try:
        parse_secret(value)
    except InvalidSecret as exc:
        raise ValueError(str(exc)) from None
    return value
