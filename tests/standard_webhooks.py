"""A receiver's check of Standard Webhooks signatures, written from the
specification alone (https://www.standardwebhooks.com/): the tests verify
cronsvc's signatures with this, never with cronsvc's own signing code."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping


def new_secret(size: int = 32) -> str:
    """A whsec_ secret of `size` random bytes, made here, not by cronsvc."""
    return "whsec_" + base64.b64encode(os.urandom(size)).decode()


def expected_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """``v1,`` + base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}``, keyed with
    the bytes the base64 after ``whsec_`` decodes to."""
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret[len("whsec_") :])
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signatures(headers: Mapping[str, str]) -> list[str]:
    """The space-separated entries of `webhook-signature` ([] when absent)."""
    value = headers.get("webhook-signature")
    return value.split(" ") if value else []


def verifies(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    """Whether any signature on the request is `secret`'s, as a receiver checks it."""
    wanted = expected_signature(secret, headers["webhook-id"], headers["webhook-timestamp"], body)
    return any(hmac.compare_digest(wanted, given) for given in signatures(headers))
