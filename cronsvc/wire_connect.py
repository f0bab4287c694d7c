"""How the webhook client opens a connection: to exactly the addresses the SSRF
guard judged, several tried as RFC 8305 says (Happy Eyeballs) so one that never
answers cannot spend the whole timeout; TLS for https, the server name without a
trailing dot.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from functools import lru_cache

import aiohappyeyeballs

from cronsvc.errors import TargetNotAllowed
from cronsvc.netguard import GuardedResolver, literal_address
from cronsvc.wire_framing import Connection
from cronsvc.wire_targets import Target

HAPPY_EYEBALLS_DELAY_S = 0.25
"""RFC 8305's recommended Connection Attempt Delay, as aiohttp uses."""


class Connector:
    """https verified against `ssl_context` (the system's trust store when None)."""

    def __init__(self, guard: GuardedResolver, ssl_context: ssl.SSLContext | None) -> None:
        self._guard = guard
        self._ssl = ssl_context

    async def connect(self, target: Target, lost: set[Connection]) -> Connection:
        """A connection that adds itself to `lost` once it ends. Raises
        `TargetNotAllowed` and `OSError`."""
        addresses = await self._resolve(target)
        if not addresses:
            raise OSError(f"{target.host} resolved to no address")
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        if target.tls:
            tls = self._ssl or _default_ssl_context()
        server_name = target.server_name if tls is not None else None
        connection = Connection(target.pool_key, lost)
        if len(addresses) == 1:
            family, address = addresses[0]
            await loop.create_connection(
                lambda: connection,
                address,
                target.port,
                family=family,
                ssl=tls,
                server_hostname=server_name,
            )
            return connection
        sock = await aiohappyeyeballs.start_connection(
            [_addr_info(family, address, target.port) for family, address in addresses],
            happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY_S,
            interleave=1,
        )
        try:
            await loop.create_connection(
                lambda: connection, sock=sock, ssl=tls, server_hostname=server_name
            )
        except BaseException:
            sock.close()
            raise
        return connection

    async def _resolve(self, target: Target) -> list[tuple[int, str]]:
        host = target.host
        literal = literal_address(host)
        if literal is not None:
            self._guard.policy.check(literal, host=host)
            return [(socket.AF_INET6 if literal.version == 6 else socket.AF_INET, str(literal))]
        if ":" in host or host.replace(".", "").isdigit():
            # Looks like an address but is none: no resolver ever sees it.
            raise TargetNotAllowed(host, host, "not a valid IP address")
        answer = await self._guard.resolve(host, target.port, socket.AF_UNSPEC)
        return [(entry["family"], entry["host"]) for entry in answer]


def _addr_info(family: int, address: str, port: int) -> aiohappyeyeballs.AddrInfoType:
    sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
    return (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)


@lru_cache(maxsize=1)
def _default_ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()
