"""The process's open-file limit, raised to what the webhook pool needs.

Every webhook connection is a file descriptor, and a pool of
`webhook.max_concurrency` connections plus the API's clients, the store and
the coordinator must fit under RLIMIT_NOFILE. Many systems start processes
with a soft limit of 1024 (and a far higher hard limit): the soft limit is
raised here, as far as the hard one allows, instead of failing connections
with EMFILE under load. What cannot be raised is said once, at start-up.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

RESERVED = 256
"""Descriptors kept for everything but webhook connections: the API's
clients, the store, the coordinator, logs."""


@dataclass(frozen=True, slots=True)
class OpenFiles:
    needed: int
    before: int
    """The soft limit found."""
    now: int
    """The soft limit after raising it (as far as the hard limit allowed)."""

    @property
    def enough(self) -> bool:
        return self.now >= self.needed


def ensure_open_files(webhook_connections: int) -> OpenFiles:
    """Raise the soft RLIMIT_NOFILE to fit `webhook_connections` plus
    `RESERVED`, never lowering it and never above the hard limit."""
    needed = webhook_connections + RESERVED
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            target = soft
        return OpenFiles(needed=needed, before=soft, now=target)
    now = needed if soft == resource.RLIM_INFINITY else soft
    return OpenFiles(needed=needed, before=now, now=now)
