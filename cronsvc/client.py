"""A small client for the cronsvc HTTP API, for the command line.

Built on the standard library (`urllib.request`), not aiohttp: a command makes
one request at a time and then exits, so a blocking client needs no event loop;
Ctrl-C is a plain `KeyboardInterrupt`; the client can be used from any thread
(or script); and the command starts without importing aiohttp, which costs
more than the rest of `cronsvc` put together.

Every failure is one `ApiError` whose message is a single line fit to print:
an error answer becomes `400 Bad Request: cronExpression: ...` (RFC 9457
problem documents, with their `errors` list), and a server that cannot be
reached becomes `ApiUnreachable`, naming the URL. Redirects are not followed,
so a bearer token is never replayed to another address.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

from cronsvc import __version__
from cronsvc.errors import CronSvcError

Query = Mapping[str, str | int | bool | None]

MAX_PAGES = 1000
"""Bound on the pages one listing follows (500 items each at most)."""

_LINK = re.compile(r"<([^>]*)>((?:\s*;\s*[^;,]+)*)")
_MAX_DETAIL = 300


class ApiError(CronSvcError):
    """The API answered with an error, or not at all. `str()` is one line."""

    def __init__(self, message: str, *, status: int | None = None, problem: Any = None) -> None:
        super().__init__(" ".join(message.split()))
        self.status = status
        self.problem = problem


class ApiUnreachable(ApiError, ConnectionError):
    """No answer: connection refused, name not resolved, timed out."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    data: Any
    next_url: str | None
    """The `Link: <...>; rel="next"` target, made absolute."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx then surfaces as an error answer


class Client:
    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"the API URL must be http:// or https:// with a host, not {base_url!r}"
            )
        self.base_url = base_url.rstrip("/")
        self._token = token or None
        self._timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirects())

    def get(self, path: str, query: Query | None = None) -> Any:
        return self.request("GET", path, query=query).data

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body=body).data

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body=body).data

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path).data

    def pages(self, path: str, query: Query | None = None) -> Iterator[list[Any]]:
        """A listing page by page, following `rel="next"` links (at most
        `MAX_PAGES`)."""
        url: str | None = self.url(path, query)
        for _ in range(MAX_PAGES):
            if url is None:
                return
            answer = self.request("GET", url)
            if not isinstance(answer.data, list):
                raise ApiError(f"unexpected answer from {url}: not a JSON array")
            yield answer.data
            url = answer.next_url

    def url(self, path: str, query: Query | None = None) -> str:
        url = self.base_url + path
        pairs = {k: _query_value(v) for k, v in (query or {}).items() if v is not None}
        return f"{url}?{urlencode(pairs)}" if pairs else url

    def request(
        self, method: str, path_or_url: str, *, query: Query | None = None, body: Any = None
    ) -> Answer:
        """One request; `path_or_url` is a path under the base URL or an
        absolute URL (a `Link` target). Raises `ApiError` for any error answer
        and `ApiUnreachable` when there is none."""
        url = path_or_url if "://" in path_or_url else self.url(path_or_url, query)
        headers = {
            "Accept": "application/json, application/problem+json",
            "User-Agent": f"cronsvc-cli/{__version__}",
        }
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                status, raw = response.status, response.read()
                link = response.headers.get("Link")
        except urllib.error.HTTPError as answer:
            with answer:
                raise _error_from(
                    answer.code, answer.read(), answer.headers.get("Location")
                ) from None
        except urllib.error.URLError as exc:
            raise self._unreachable(exc.reason) from None
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None
        return Answer(status, _json(url, raw), _next_link(url, link))

    def _unreachable(self, reason: object) -> ApiUnreachable:
        if isinstance(reason, TimeoutError):
            text = f"no answer within {self._timeout:g} s"
        elif isinstance(reason, OSError) and reason.strerror:
            text = reason.strerror
        else:
            text = str(reason) or type(reason).__name__
        return ApiUnreachable(f"cannot reach {self.base_url}: {text}")


def _query_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _json(url: str, raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise ApiError(f"unexpected answer from {url}: not JSON") from None


def _error_from(status: int, raw: bytes, location: str | None) -> ApiError:
    """`<status> <reason>: <what went wrong>`, from a problem document when
    there is one (its field errors first), else from the first line of text."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    problem: Any = None
    with contextlib.suppress(ValueError):
        problem = json.loads(raw)
    detail = ""
    if isinstance(problem, dict):
        errors = problem.get("errors")
        if isinstance(errors, list) and errors:
            detail = "; ".join(_field_error(e) for e in errors)
        else:
            detail = str(problem.get("detail") or problem.get("title") or "")
    else:
        text = raw.decode("utf-8", "replace").strip()
        detail = text.splitlines()[0] if text else ""
        if text.startswith("<"):
            detail = ""  # an HTML error page (a proxy's, say) says nothing more
    if 300 <= status < 400 and location:
        detail = f"redirected to {location} (not followed: check the API URL)"
    if len(detail) > _MAX_DETAIL:
        detail = detail[: _MAX_DETAIL - 1] + "…"
    message = f"{status} {phrase}: {detail}" if detail else f"{status} {phrase}"
    return ApiError(message, status=status, problem=problem)


def _field_error(error: Any) -> str:
    if isinstance(error, dict):
        return f"{error.get('field', '?')}: {error.get('message', '')}"
    return str(error)


def _next_link(url: str, header: str | None) -> str | None:
    """The `rel="next"` target of a Link header (RFC 8288), made absolute."""
    if not header:
        return None
    for match in _LINK.finditer(header):
        for param in match.group(2).split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "rel" and "next" in value.strip().strip('"').split():
                return urljoin(url, str(match.group(1)))
    return None
