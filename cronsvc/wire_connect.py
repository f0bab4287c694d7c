"""How the webhook client opens a connection: the target's addresses, each
judged by the SSRF guard (an address-literal host here, a name's answer by
the guarded resolver), then a TCP connection to exactly those addresses,
and TLS on it for https (certificates verified against the system's trust
store, the server name without a trailing dot).

A name with several addresses is connected to as RFC 8305 says (Happy
Eyeballs: the next address is tried after 250 ms without waiting for the
first to fail), so one address that never answers cannot spend the whole
timeout.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from functools import lru_cache

import aiohappyeyeballs

from cronsvc.errors import TargetNotAllowed
from cronsvc.netguard import GuardedResolver, TargetPolicy, literal_address
from cronsvc.wire_framing import Connection
from cronsvc.wire_targets import Target

HAPPY_EYEBALLS_DELAY_S = 0.25
"""RFC 8305's Connection Attempt Delay (its recommended value, and aiohttp's):
how long one address may go unanswered before the next is tried beside it."""


class Connector:
    """Opens connections where `guard`'s policy allows; https ones verified
    against `ssl_context` (the system's trust store when None)."""

    def __init__(self, guard: GuardedResolver, ssl_context: ssl.SSLContext | None) -> None:
        self._guard = guard
        self._ssl = ssl_context

    async def connect(self, target: Target, lost: set[Connection]) -> Connection:
        """A new connection to `target`, added to `lost` once it ends.
        Raises `TargetNotAllowed` and `OSError`."""
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
        """The addresses to try, each judged by the guard's policy."""
        literal = judge_literal(self._guard.policy, target.host)
        if literal is not None:
            return [literal]
        answer = await self._guard.resolve(target.host, target.port, socket.AF_UNSPEC)
        return [(entry["family"], entry["host"]) for entry in answer]


def judge_literal(policy: TargetPolicy, host: str) -> tuple[int, str] | None:
    """The address family and address an address-literal host names, once
    `policy` allows it (else `TargetNotAllowed`); None for a name, which the
    guard judges when it is resolved. A host that looks like an address but
    is none is refused: no resolver ever sees it."""
    literal = literal_address(host)
    if literal is not None:
        policy.check(literal, host=host)
        return (socket.AF_INET6 if literal.version == 6 else socket.AF_INET, str(literal))
    if ":" in host or host.replace(".", "").isdigit():
        raise TargetNotAllowed(host, host, "not a valid IP address")
    return None


def _addr_info(family: int, address: str, port: int) -> aiohappyeyeballs.AddrInfoType:
    sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
    return (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)


@lru_cache(maxsize=1)
def _default_ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()
