"""Configuration: a TOML file, every key optional and overridable from the
environment as ``CRONSVC_<SECTION>_<KEY>``, both validated by one frozen model
per section, strict as TOML is typed. `load_config` raises a `ConfigError` of one
line naming the key at fault, never quoting a token. `config.example.toml`
documents every key; keep the two in step."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Self, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from cronsvc.errors import ConfigError
from cronsvc.netguard import parse_cidr
from cronsvc.signing import whsec_secret
from cronsvc.urls import StoreBackend, coordination_backend, sqlite_path, store_backend
from cronsvc.wire_connect import http_url

_SECRET_KEYS = frozenset({"server.api_tokens", "alerts.secret"})
"""Keys whose values no error message quotes."""
MIN_TOKEN_LENGTH = 16
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
"""RFC 6750's b64token: what may follow `Bearer ` in an Authorization header."""


class _Section(BaseModel):
    # Inputs stay out of a ValidationError's text: one raised by code that
    # builds a section directly must not print a token either.
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid", hide_input_in_errors=True)


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    api_tokens: list[str] = Field(default_factory=list, repr=False)
    """Once loaded: every bearer token in force, those of `api_tokens_file`
    included. Kept out of reprs; `cronsvc check-config` prints only a count."""
    api_tokens_file: str = ""
    """One token per line; blank lines and `#` comments are ignored. Read once,
    by `load_config`."""
    allow_unauthenticated: bool = False

    @field_validator("api_tokens")
    @classmethod
    def _bearer_tokens(cls, tokens: list[str]) -> list[str]:
        for number, token in enumerate(tokens, start=1):
            fault = _token_fault(token)
            if fault:
                raise ValueError(f"token {number} {fault}")
        return tokens

    @model_validator(mode="after")
    def _authenticated_unless_loopback(self) -> Self:
        # A tokens file counts: `load_config` refuses one that holds no token.
        authenticated = self.api_tokens or self.api_tokens_file or self.allow_unauthenticated
        if not authenticated and not is_loopback(self.host):
            raise ConfigError(
                f"server.host: refusing to serve {self.host!r} without authentication; "
                "set server.api_tokens or server.api_tokens_file, "
                "or server.allow_unauthenticated = true"
            )
        return self


class ApiConfig(_Section):
    legacy_ids: bool = False


class StoreConfig(_Section):
    url: str = "sqlite:///./cronsvc.db"

    @field_validator("url")
    @classmethod
    def _served_url(cls, url: str) -> str:
        if store_backend(url) is StoreBackend.SQLITE:
            sqlite_path(url)
        return url


class CoordinationConfig(_Section):
    url: str = "local"
    key_prefix: str = "cronsvc"

    @field_validator("url")
    @classmethod
    def _served_url(cls, url: str) -> str:
        coordination_backend(url)
        return url

    @field_validator("key_prefix")
    @classmethod
    def _one_word(cls, prefix: str) -> str:
        if not prefix or any(c in prefix for c in " {}"):
            raise ValueError("must be a non-empty word without spaces or braces")
        return prefix


class SchedulerConfig(_Section):
    resync_interval_s: float = Field(default=30.0, gt=0)
    min_interval_s: float = Field(default=1.0, gt=0)
    max_catchup: int = Field(default=10, ge=1)
    max_missed_records: int = Field(default=1000, ge=1)
    lease_ttl_s: float = Field(default=120.0, gt=0)
    claim_ahead_s: float = Field(default=0.2, ge=0, le=5)
    heartbeat_interval_s: float = Field(default=5.0, gt=0)


class WebhookConfig(_Section):
    timeout_s: float = Field(default=10.0, gt=0)
    max_concurrency: int = Field(default=1024, gt=0)
    max_response_bytes: int = Field(default=65536, gt=0)
    allow_private_targets: bool = False
    allowed_cidrs: list[str] = Field(default_factory=list)
    max_defer_s: float = Field(default=3600.0, ge=0)
    secret_rotation_grace_s: float = Field(default=86400.0, ge=0)
    max_connections_per_host: int = Field(default=0, ge=0)

    @field_validator("allowed_cidrs")
    @classmethod
    def _networks(cls, cidrs: list[str]) -> list[str]:
        for cidr in cidrs:
            parse_cidr(cidr)  # its ValueError names the CIDR
        return cidrs


class AlertsConfig(_Section):
    url: str = ""
    after: int = Field(default=1, ge=1)
    on_recovery: bool = True
    format: Literal["standard", "slack"] = "standard"
    secret: str = Field(default="", repr=False)
    dashboard_url: str = ""
    timeout_s: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=20)
    max_pending: int = Field(default=10000, ge=1)

    @field_validator("url", "dashboard_url")
    @classmethod
    def _callable(cls, url: str) -> str:
        # Checked as a job's alerts.url is, so a typo stops the start, not
        # every alert later; the SSRF guard still judges the host when sending.
        return http_url(url) if url else url

    @field_validator("secret")
    @classmethod
    def _whsec(cls, secret: str) -> str:
        return whsec_secret(secret) if secret else secret


class RetentionConfig(_Section):
    execution_logs_days: float = Field(default=30.0, gt=0)


class LimitsConfig(_Section):
    max_jobs: int = Field(default=10000, ge=1)
    rate_limit_per_s: float = Field(default=50.0, ge=0)
    rate_limit_burst: int = Field(default=100, ge=1)


class LoggingConfig(_Section):
    level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    format: Literal["json", "console"] = "json"

    @field_validator("level", mode="before")
    @classmethod
    def _any_case(cls, level: object) -> object:
        return level.lower() if isinstance(level, str) else level


class Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    server: ServerConfig = Field(default_factory=ServerConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    coordination: CoordinationConfig = Field(default_factory=CoordinationConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    webhook: WebhookConfig = Field(default_factory=WebhookConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    raw: dict[str, Any] = {} if path is None else _read_file(path)
    env = os.environ if environ is None else environ
    for section, model in _sections():
        given = raw.setdefault(section, {})
        if not isinstance(given, dict):
            raise ConfigError(f"{section}: expected a table, got {type(given).__name__}")
        for key, field in model.model_fields.items():
            text = env.get(_environment_name(section, key))
            if text is not None:
                given[key] = _from_env(f"{section}.{key}", field.annotation, text)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_fault(exc.errors()[0], raw)) from None
    if not config.server.api_tokens_file:
        return config
    return config.model_copy(update={"server": _with_file_tokens(config.server)})


def environment_names() -> set[str]:
    return {
        _environment_name(section, key)
        for section, model in _sections()
        for key in model.model_fields
    }


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost": addresses no other machine reaches."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _token_fault(token: str) -> str | None:
    """In words that never quote the token."""
    if len(token) < MIN_TOKEN_LENGTH:
        return f"is shorter than {MIN_TOKEN_LENGTH} characters"
    if not _TOKEN_CHARS.match(token):
        return (
            "may hold only letters, digits and -._~+/ (then = padding), "
            "as an Authorization: Bearer header carries"
        )
    return None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _sections() -> Iterator[tuple[str, type[_Section]]]:
    for name, field in Config.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, _Section)
        yield name, model


def _environment_name(section: str, key: str) -> str:
    return f"CRONSVC_{section}_{key}".upper()


def _from_env(key: str, annotation: Any, text: str) -> Any:
    """`text` read by the key's type; the model then checks it as it checks a file's."""
    if annotation is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true or false, got {text!r}")
    if annotation in (int, float):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise ConfigError(f"{key}: expected a number, got {text!r}") from None
    if get_origin(annotation) is list:  # a JSON array or comma-separated
        stripped = text.strip()
        try:
            items = json.loads(stripped) if stripped.startswith("[") else stripped.split(",")
        except json.JSONDecodeError:
            items = None
        if not isinstance(items, list):
            raise ConfigError(f"{key}: expected a JSON array or a comma-separated list")
        items = [i.strip() if isinstance(i, str) else i for i in items]
        return [i for i in items if i != ""]
    return text


_EXPECTED: dict[Any, str] = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list of strings",
}
_BOUND_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than_equal"})


def _fault(error: ErrorDetails, raw: dict[str, Any]) -> str:
    """The line naming the key behind `error`; never a secret key's value."""
    section, *rest = (str(part) for part in error["loc"])
    key = f"{section}.{rest[0]}" if rest else section
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{key}: unknown configuration {'key' if rest else 'section'}"
    if kind == "value_error" or not rest:
        return _raised(key, error)
    name = rest[0]
    field = dict(_sections())[section].model_fields[name]
    value = raw[section][name]
    if kind in _BOUND_ERRORS:
        return f"{key}: must be {_bounds(field)}, got {value}"
    if kind == "literal_error":
        return f"{key}: must be one of {', '.join(get_args(field.annotation))}"
    expected = _EXPECTED[get_origin(field.annotation) or field.annotation]
    shown = type(value).__name__ if key in _SECRET_KEYS else repr(value)
    return f"{key}: expected {expected}, got {shown}"


def _raised(key: str, error: ErrorDetails) -> str:
    """A validator's message, after the key unless a `ConfigError` names it itself."""
    cause = error.get("ctx", {}).get("error")
    return str(cause) if isinstance(cause, ConfigError) else f"{key}: {cause}"


def _bounds(field: FieldInfo) -> str:
    """A field's declared bounds in words: "from 0 to 5", "at least 1"."""
    bounds = {
        name: getattr(limit, name)
        for limit in field.metadata
        for name in ("gt", "ge", "le")
        if hasattr(limit, name)
    }
    if "ge" in bounds and "le" in bounds:
        return f"from {bounds['ge']} to {bounds['le']}"
    if "gt" in bounds:
        return f"greater than {bounds['gt']}"
    if "le" in bounds:
        return f"at most {bounds['le']}"
    return "0 or more" if bounds["ge"] == 0 else f"at least {bounds['ge']}"


def _with_file_tokens(server: ServerConfig) -> ServerConfig:
    """`server` with the tokens of its `api_tokens_file` added. Messages name a
    token's line, never the token."""
    key, path = "server.api_tokens_file", Path(server.api_tokens_file)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{key}: {path} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {path} is not UTF-8 text") from None
    tokens = []
    for number, line in enumerate(text.splitlines(), start=1):
        token = line.strip()
        if token and not token.startswith("#"):
            fault = _token_fault(token)
            if fault:
                raise ConfigError(f"{key}: {path} line {number} {fault}")
            tokens.append(token)
    if not tokens:
        raise ConfigError(f"{key}: {path} holds no token (one per line; # starts a comment)")
    merged = list(dict.fromkeys([*server.api_tokens, *tokens]))
    return server.model_copy(update={"api_tokens": merged})
