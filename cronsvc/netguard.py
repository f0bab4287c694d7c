"""The SSRF guard: which addresses a webhook may connect to, enforced at connect time.

Webhook URLs are user input. By default only globally routable unicast
addresses are allowed; `allow_private` opens every other range except the
cloud metadata addresses, and `allowed_networks` open the ranges they name
(metadata included), winning over every refusal.

Enforcement is on the address actually connected to, not on the URL's text:
`GuardedResolver` judges every address a name resolves to and the webhook
client (`cronsvc.wire`) connects to exactly those; hosts that are IP
literals it judges itself, before connecting. Nothing is cached: a DNS
answer that changes between two connections (rebinding) is judged afresh
each time.

`TargetPolicy.check_host` is the early, DNS-free check the API makes on a
URL's host when a job is written.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from cronsvc.errors import TargetNotAllowed

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

_METADATA = frozenset({IPv4Address("169.254.169.254"), IPv6Address("fd00:ec2::254")})
_CGNAT = IPv4Network("100.64.0.0/10")
_NAT64 = IPv6Network("64:ff9b::/96")
_METADATA_REASON = "a cloud metadata address"
# What a refusal says would allow the address: a person running a receiver
# on their own machine or network reads it in the API's 400 or the execution
# log, and should not have to find the settings elsewhere.
_OPENED_BY_ALLOW_PRIVATE = (
    "unless webhook.allow_private_targets is true (CRONSVC_WEBHOOK_ALLOW_PRIVATE_TARGETS=true) "
    "or webhook.allowed_cidrs includes it"
)
_OPENED_BY_CIDRS = "unless webhook.allowed_cidrs includes it"

# One part of an IPv4 address as inet_aton(3) reads it: hex, octal or decimal.
_INET_ATON_PART = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetPolicy:
    """Which webhook target addresses are allowed. The default refuses every
    address that is not globally routable."""

    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, *, allow_private: bool, allowed_cidrs: Iterable[str]) -> TargetPolicy:
        """Raises ValueError naming the first entry that is not a network."""
        return cls(
            allow_private=allow_private,
            allowed_networks=tuple(parse_cidr(text) for text in allowed_cidrs),
        )

    def refusal(self, address: IPAddress) -> str | None:
        """Why `address` is refused (a phrase such as "a loopback address"), or None."""
        embedded = _embedded_ipv4(address)
        judged = (address,) if embedded is None else (address, embedded)
        if any(a in network for a in judged for network in self.allowed_networks):
            return None
        if any(a in _METADATA for a in judged):
            # Kept shut by allow_private: opening an internal network rarely
            # means handing jobs the cloud's credentials endpoint.
            return _METADATA_REASON
        if self.allow_private:
            return None
        return _not_global(address)

    def check(self, address: IPAddress | str, *, host: str | None = None) -> None:
        """Raise `TargetNotAllowed` unless `address` may be connected to.

        `host` is the name the address was found for (the address itself when
        not given); it only serves the message, which also names the setting
        that would allow the address. A string that is not an IP address is
        refused: nothing may be connected to without being judged.
        """
        if isinstance(address, str):
            text = address
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                raise TargetNotAllowed(host or text, text, "not an IP address") from None
        reason = self.refusal(address)
        if reason is not None:
            remedy = _OPENED_BY_CIDRS if reason == _METADATA_REASON else _OPENED_BY_ALLOW_PRIVATE
            raise TargetNotAllowed(host or str(address), str(address), reason, remedy)

    def check_host(self, host: str) -> None:
        """Judge a URL's host without DNS: IP literals in every form the system
        resolver accepts, and `localhost` and `*.localhost` (RFC 6761) as
        127.0.0.1. Any other name passes here; its addresses are judged when
        a connection is made."""
        address = literal_address(host)
        if address is None and _is_localhost(host):
            address = IPv4Address("127.0.0.1")
        if address is not None:
            self.check(address, host=host)


def parse_cidr(text: str) -> IPNetwork:
    """A network such as "10.0.0.0/8", or one address. ValueError if neither,
    or if bits are set past the prefix ("10.0.0.1/8" is likely a typo)."""
    return ipaddress.ip_network(text.strip(), strict=True)


def literal_address(host: str) -> IPAddress | None:
    """The address `host` names without DNS, or None if it is a name.

    Besides the canonical forms, IPv4 is read as inet_aton(3) reads it, as the
    system resolver does: `2130706433`, `127.1`, `0x7f.0.0.1` and `0177.0.0.1`
    all name 127.0.0.1. IPv6 may be bracketed and carry a zone (`fe80::1%eth0`).
    """
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        try:
            return IPv6Address(host)
        except ValueError:
            return None
    return _inet_aton(host.removesuffix("."))


def _inet_aton(text: str) -> IPv4Address | None:
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_INET_ATON_PART.fullmatch(p) for p in parts):
        return None
    values = [
        int(p, 16) if p[:2].lower() == "0x" else int(p, 8 if p[0] == "0" else 10) for p in parts
    ]
    *leading, last = values
    # Every part but the last is one byte; the last fills the bytes left.
    if any(v > 255 for v in leading) or last >= 1 << (8 * (5 - len(values))):
        return None
    number = last
    for index, value in enumerate(leading):
        number |= value << (8 * (3 - index))
    return IPv4Address(number)


def _is_localhost(host: str) -> bool:
    name = host.lower().removesuffix(".")
    return name == "localhost" or name.endswith(".localhost")


def _embedded_ipv4(address: IPAddress) -> IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, NAT64), which is
    where a connection to it ends up. The deprecated IPv4-compatible form
    (::a.b.c.d) is not one: it is refused as reserved."""
    if isinstance(address, IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return IPv4Address(address.packed[-4:])
    return None


def _not_global(address: IPAddress) -> str | None:
    """Why `address` is not a globally routable unicast address, or None."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        reason = _not_global(embedded)
        return None if reason is None else f"an IPv6 form of {embedded}, {reason}"
    # Python's is_global lets multicast and some special IPv6 ranges through:
    # those are tested first, by name.
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address in _CGNAT:
        return "a shared (CGNAT) address"
    # Reserved IPv6 is everything outside 2000::/3 and the named ranges above,
    # local-use NAT64 (64:ff9b:1::/48) and IPv4-compatible (::a.b.c.d) included.
    if isinstance(address, IPv6Address) and (address.is_site_local or address.is_reserved):
        return "a reserved or site-local IPv6 address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "not a globally routable address"
    return None


class GuardedResolver(AbstractResolver):
    """Resolves through `inner` (aiohttp's default resolver when None) and
    refuses the whole answer if any address in it is refused.

    A partly private answer is refused outright rather than filtered: the
    client falls back from one address to the next when a connection
    fails, so an attacker who can make the public address fail would land
    on the private one; and a name pointing at both is not one we want to
    reach. The addresses returned are exactly the ones judged, so the
    client connects to what was checked and never resolves again.
    """

    def __init__(self, policy: TargetPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._owns_inner = inner is None
        self._inner = aiohttp.DefaultResolver() if inner is None else inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answer = [entry.copy() for entry in await self._inner.resolve(host, port, family)]
        if not answer:  # as aiohttp's resolvers say it, so its client reports it too
            raise OSError(f"{host} resolved to no address")
        for entry in answer:
            self.policy.check(entry["host"], host=host)
            entry["flags"] = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
        return answer

    async def close(self) -> None:
        if self._owns_inner:
            await self._inner.close()
