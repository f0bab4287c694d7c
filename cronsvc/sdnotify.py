"""systemd's service notification protocol, spoken without libsystemd.

Under `Type=notify` systemd passes `NOTIFY_SOCKET` (a datagram socket path,
or an abstract one starting with "@"); the service sends `READY=1` once it
serves, `STOPPING=1` when it begins to stop, and, when the unit sets
`WatchdogSec=`, `WATCHDOG=1` more often than `WATCHDOG_USEC` (systemd kills
and restarts a service whose pings stop). Outside systemd nothing is set
and every call does nothing.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger(__name__)


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + path[1:] if path.startswith("@") else path
        self.watchdog_s = _watchdog_interval(env)
        self._failed = False

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, *fields: str) -> None:
        """Send `fields` (e.g. "READY=1") as one message. A failure is logged
        once, never raised: a service must not stop for want of a listener."""
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("sd_notify_failed", error=str(exc))

    async def keep_alive(self, healthy: Callable[[], bool]) -> None:
        """Ping the watchdog at half its interval while `healthy()` holds;
        returns at once when no watchdog is set. A blocked event loop or a
        dead engine stops the pings, and systemd restarts the service."""
        if self.watchdog_s is None or not self._address:
            return
        while True:
            if healthy():
                self.notify("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_s / 2)


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """`WATCHDOG_USEC` in seconds, if it is meant for this process."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000
