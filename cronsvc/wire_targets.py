"""Where a webhook URL's requests go, parsed once; a URL no request can be sent to
is refused here, before anything is resolved or connected."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from yarl import URL

_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_HOST_NAME = 253
_MAX_LABEL = 63
_LABEL = re.compile(r"[A-Za-z0-9_-]+")

PoolKey = tuple[str, str, int]
"""Scheme, host and port: the connections one target may share."""


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
