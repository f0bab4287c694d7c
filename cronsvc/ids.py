"""Identifiers: 24 lowercase hex characters, ordered by creation time.

Layout: 6 bytes of Unix milliseconds, then 6 bytes that are random per process
start and count up per id, so ids made in one process are strictly increasing
and ids from different processes do not collide.
"""

from __future__ import annotations

import itertools
import os
import re
import time

_ID_RE = re.compile(r"[0-9a-f]{24}")
_counter = itertools.count(int.from_bytes(os.urandom(6), "big") & 0x7FFFFFFFFFFF)


def new_id() -> str:
    ms = int(time.time() * 1000) & 0xFFFFFFFFFFFF
    tail = next(_counter) & 0xFFFFFFFFFFFF
    return f"{ms:012x}{tail:012x}"


def is_valid_id(value: str) -> bool:
    return _ID_RE.fullmatch(value) is not None
