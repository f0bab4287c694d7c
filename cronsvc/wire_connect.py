"""What a webhook URL becomes: a `Target`, parsed once and refused before anything is
resolved if no request can reach it; then a connection to exactly the addresses the SSRF
guard judged, tried as RFC 8305 says (Happy Eyeballs) so one that never answers cannot
spend the whole timeout; TLS for https, the server name without a trailing dot."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import aiohappyeyeballs
from yarl import URL

from cronsvc.errors import TargetNotAllowed
from cronsvc.netguard import GuardedResolver, literal_address
from cronsvc.wire_framing import Connection, PoolKey

_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_HOST_NAME = 253
_MAX_LABEL = 63
_LABEL = re.compile(r"[A-Za-z0-9_-]+")


class InvalidTarget(ValueError):
    """A URL no request can be sent to: not http(s), no host, a bad port."""


@dataclass(frozen=True, slots=True)
class Target:
    tls: bool
    host: str
    """What to connect to: a name (a trailing dot kept: it says the name is
    fully qualified), or an address (IPv6 without brackets)."""
    port: int
    host_header: str
    """The Host header: the name without a trailing dot, as certificates and
    virtual hosts know it, and the port unless it is the scheme's."""
    request_target: str
    """Path and query, percent-encoded as the URL had them."""
    server_name: str
    """For SNI and the certificate check: the host without a trailing dot."""

    @property
    def pool_key(self) -> PoolKey:
        return ("https" if self.tls else "http", self.host, self.port)


@lru_cache(maxsize=4096)
def parse_target(url: str) -> Target:
    """Raises `InvalidTarget`."""
    try:
        parsed = URL(url)
        scheme, host, port = parsed.scheme, parsed.raw_host, parsed.port
    except (TypeError, ValueError) as exc:
        raise InvalidTarget(f"not a valid URL: {exc}") from None
    if scheme not in _DEFAULT_PORTS:
        raise InvalidTarget(f"not an http or https URL: {url[:200]}")
    if not host or port is None:
        raise InvalidTarget(f"names no host: {url[:200]}")
    if parsed.raw_user is not None or parsed.raw_password is not None:
        # The API refuses them; a URL with credentials is never sent as it is.
        raise InvalidTarget("credentials in a URL are not sent; use headers")
    if not 0 < port < 65536:
        raise InvalidTarget(f"port {port} is out of range")
    problem = _host_problem(url, host)
    if problem is not None:
        raise InvalidTarget(problem)
    server_name = host if ":" in host else host.removesuffix(".")
    name = f"[{host}]" if ":" in host else server_name
    host_header = name if port == _DEFAULT_PORTS[scheme] else f"{name}:{port}"
    return Target(
        tls=scheme == "https",
        host=host,
        port=port,
        host_header=host_header,
        request_target=parsed.raw_path_qs or "/",
        server_name=server_name,
    )


def _host_problem(url: str, host: str) -> str | None:
    """Why no request can reach `host` (IDNA-encoded, an IPv6 address unbracketed), or
    None. A name must be one DNS can hold; '_' is found in service names."""
    if ":" in host:
        return None  # an IPv6 address, which yarl has checked
    try:
        authority = urlsplit(url).netloc
    except ValueError:
        return "not a valid URL"
    if authority.rpartition("@")[2].startswith("["):
        return "only an IPv6 address may stand in brackets"
    name = host.removesuffix(".")
    if len(name) > _MAX_HOST_NAME:
        return f"the host name is longer than {_MAX_HOST_NAME} characters"
    for label in name.split("."):
        if not label:
            return "the host name has an empty label (two dots in a row)"
        if len(label) > _MAX_LABEL:
            return f"the host name has a label longer than {_MAX_LABEL} characters"
        if not _LABEL.fullmatch(label):
            return (
                f"the host {host[:100]!r} holds characters no host name can: "
                "letters, digits, '-' and '_' between dots"
            )
    return None


def http_url(value: str, *, credentials: str = "use headers instead") -> str:
    """`value` if cronsvc can call it (a webhook, an alert), else ValueError saying why.
    Its host is judged by the SSRF guard separately."""
    try:
        url = URL(value)
    except (ValueError, TypeError):
        raise ValueError("is not a valid URL") from None
    if url.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not url.host:
        raise ValueError("must name a host")
    if url.user is not None or url.password is not None:
        raise ValueError(f"must not carry credentials; {credentials}")
    try:
        parse_target(value)  # as the dispatcher will: its host and port
    except InvalidTarget as exc:
        raise ValueError(str(exc)) from None
    return value


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
        tls = (self._ssl or _default_ssl_context()) if target.tls else None
        server_name = target.server_name if target.tls else None
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
