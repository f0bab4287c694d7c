"""Configuration: TOML file, every key optional, each overridable from the
environment as ``CRONSVC_<SECTION>_<KEY>``.

`load_config` raises `ConfigError` with one line naming the key at fault.
`config.example.toml` documents every key; keep the two in step.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from cronsvc.dispatch import HTTP_CLIENTS
from cronsvc.errors import ConfigError
from cronsvc.netguard import parse_cidr
from cronsvc.urls import StoreBackend, coordination_backend, sqlite_path, store_backend


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    shutdown_grace_s: float = 10.0
    event_loop: str = "auto"
    api_tokens: list[str] = field(default_factory=list, repr=False)
    """Once loaded: every bearer token in force, those of `api_tokens_file`
    included. Kept out of reprs; `cronsvc check-config` prints only a count."""
    api_tokens_file: str = ""
    """One token per line; blank lines and `#` comments are ignored. Read once,
    by `load_config`."""
    allow_unauthenticated: bool = False
    """Serve without tokens on a host that is not loopback (refused otherwise)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiConfig:
    legacy_ids: bool = False
    """As the Node.js service's Mongoose documents did: job and execution log
    answers also carry `_id` (equal to `id`), and job writes accept `_id` and
    `__v` (ignored)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreConfig:
    url: str = "sqlite:///./cronsvc.db"


@dataclass(frozen=True, slots=True, kw_only=True)
class CoordinationConfig:
    url: str = "local"
    key_prefix: str = "cronsvc"


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerConfig:
    resync_interval_s: float = 30.0
    min_interval_s: float = 1.0
    max_catchup: int = 10
    max_missed_records: int = 1000
    lease_ttl_s: float = 120.0
    claim_ahead_s: float = 0.2
    heartbeat_interval_s: float = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookConfig:
    timeout_s: float = 10.0
    max_concurrency: int = 1024
    max_response_bytes: int = 65536
    allow_private_targets: bool = False
    """Let webhooks reach loopback, private and other non-global addresses."""
    allowed_cidrs: list[str] = field(default_factory=list)
    """Networks webhooks may reach even though they are not globally routable."""
    max_defer_s: float = 3600.0
    """The longest a target's Retry-After may hold back a job's next ticks."""
    secret_rotation_grace_s: float = 86400.0
    http_client: str = "wire"
    """The HTTP client webhooks travel on: "wire" (cronsvc.wire, pooled
    connections of its own) or "aiohttp" (aiohttp's ClientSession)."""
    max_connections_per_host: int = 0
    """Connections open to one host at most; 0: as many as max_concurrency."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionConfig:
    execution_logs_days: float = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsConfig:
    max_jobs: int = 10000
    rate_limit_per_s: float = 50.0
    """Requests per second per API token (per client address without tokens); 0: no limit."""
    rate_limit_burst: int = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggingConfig:
    level: str = "info"
    format: str = "json"


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    coordination: CoordinationConfig = field(default_factory=CoordinationConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_LOG_FORMATS = ("json", "console")
_EVENT_LOOPS = ("auto", "asyncio", "uvloop")
_SECRET_KEYS = frozenset({"server.api_tokens"})
"""Keys whose values no error message quotes."""
MIN_TOKEN_LENGTH = 16
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
"""RFC 6750's b64token: what may follow `Bearer ` in an Authorization header."""


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read `path` (if given), then apply ``CRONSVC_<SECTION>_<KEY>`` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    env = os.environ if environ is None else environ
    sections: dict[str, Any] = {}
    for section in dataclasses.fields(Config):
        section_type = _dataclass_type(Config, section.name)
        given = raw.pop(section.name, {})
        if not isinstance(given, dict):
            raise ConfigError(f"{section.name}: expected a table, got {type(given).__name__}")
        sections[section.name] = _build_section(section.name, section_type, given, env)
    if raw:
        unknown = sorted(raw)[0]
        raise ConfigError(f"{unknown}: unknown configuration section")
    config = Config(**sections)
    config = dataclasses.replace(config, server=_with_file_tokens(config.server))
    _check(config)
    return config


def _with_file_tokens(server: ServerConfig) -> ServerConfig:
    """Check every token, and add those of `api_tokens_file` to `api_tokens`.
    No message ever quotes a token: they name its position instead."""
    for number, token in enumerate(server.api_tokens, start=1):
        _check_token(f"server.api_tokens: token {number}", token)
    if not server.api_tokens_file:
        return server
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
            _check_token(f"{key}: {path} line {number}", token)
            tokens.append(token)
    if not tokens:
        raise ConfigError(f"{key}: {path} holds no token (one per line; # starts a comment)")
    merged = list(dict.fromkeys([*server.api_tokens, *tokens]))
    return dataclasses.replace(server, api_tokens=merged)


def _check_token(where: str, token: str) -> None:
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"{where} is shorter than {MIN_TOKEN_LENGTH} characters")
    if not _TOKEN_CHARS.match(token):
        raise ConfigError(
            f"{where} may hold only letters, digits and -._~+/ (then = padding), "
            "as an Authorization: Bearer header carries"
        )


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost": addresses no other machine reaches."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def environment_names() -> set[str]:
    """Every CRONSVC_<SECTION>_<KEY> variable that sets a configuration key."""
    return {
        f"CRONSVC_{section.name}_{key.name}".upper()
        for section in dataclasses.fields(Config)
        for key in dataclasses.fields(_dataclass_type(Config, section.name))
    }


def _dataclass_type(owner: type, name: str) -> type:
    hint = get_type_hints(owner)[name]
    assert isinstance(hint, type)
    return hint


def _build_section(
    section: str, section_type: type, given: dict[str, Any], env: Mapping[str, str]
) -> Any:
    hints = get_type_hints(section_type)
    known = {f.name for f in dataclasses.fields(section_type)}
    for key in given:
        if key not in known:
            raise ConfigError(f"{section}.{key}: unknown configuration key")
    values: dict[str, Any] = {}
    for name in known:
        env_name = f"CRONSVC_{section}_{name}".upper()
        if env_name in env:
            values[name] = _from_env(f"{section}.{name}", hints[name], env[env_name])
        elif name in given:
            values[name] = _coerce(f"{section}.{name}", hints[name], given[name])
    return section_type(**values)


def _from_env(key: str, hint: Any, text: str) -> Any:
    if hint is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true or false, got {text!r}")
    if hint in (int, float):
        try:
            return _coerce(key, hint, json.loads(text))
        except json.JSONDecodeError:
            raise ConfigError(f"{key}: expected a number, got {text!r}") from None
    if isinstance(hint, types.GenericAlias):  # lists: JSON array or comma-separated
        stripped = text.strip()
        try:
            items = json.loads(stripped) if stripped.startswith("[") else stripped.split(",")
        except json.JSONDecodeError:
            raise ConfigError(f"{key}: expected a JSON array or a comma-separated list") from None
        if not isinstance(items, list):
            raise ConfigError(f"{key}: expected a JSON array or a comma-separated list")
        items = [i.strip() if isinstance(i, str) else i for i in items]
        return _coerce(key, hint, [i for i in items if i != ""])
    return text


def _coerce(key: str, hint: Any, value: Any) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if isinstance(hint, types.GenericAlias) and hint.__origin__ is list:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        shown = type(value).__name__ if key in _SECRET_KEYS else repr(value)
        raise ConfigError(f"{key}: expected a list of strings, got {shown}")
    raise ConfigError(f"{key}: unsupported type")  # pragma: no cover - a programming error


def _check(config: Config) -> None:
    """Refuse values no section may hold, section by section."""
    _check_server(config.server)
    _check_limits(config.limits)
    _check_scheduler(config.scheduler)
    _check_webhook(config.webhook)
    _positive("retention.execution_logs_days", config.retention.execution_logs_days)
    _check_logging(config.logging)
    _check_store(config.store)
    _check_coordination(config.coordination)


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{key}: must be greater than 0, got {value}")


def _at_least_one(key: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{key}: must be at least 1")


def _check_server(server: ServerConfig) -> None:
    if server.event_loop not in _EVENT_LOOPS:
        raise ConfigError(f"server.event_loop: must be one of {', '.join(_EVENT_LOOPS)}")
    if not 0 <= server.port <= 65535:
        raise ConfigError(f"server.port: must be 0-65535, got {server.port}")
    if server.shutdown_grace_s < 0:
        raise ConfigError("server.shutdown_grace_s: must not be negative")
    if not server.api_tokens and not server.allow_unauthenticated and not is_loopback(server.host):
        raise ConfigError(
            f"server.host: refusing to serve {server.host!r} without authentication; "
            "set server.api_tokens or server.api_tokens_file, "
            "or server.allow_unauthenticated = true"
        )


def _check_limits(limits: LimitsConfig) -> None:
    _at_least_one("limits.max_jobs", limits.max_jobs)
    if limits.rate_limit_per_s < 0:
        raise ConfigError("limits.rate_limit_per_s: must not be negative (0 turns it off)")
    _at_least_one("limits.rate_limit_burst", limits.rate_limit_burst)


def _check_scheduler(scheduler: SchedulerConfig) -> None:
    _positive("scheduler.resync_interval_s", scheduler.resync_interval_s)
    _positive("scheduler.min_interval_s", scheduler.min_interval_s)
    _positive("scheduler.lease_ttl_s", scheduler.lease_ttl_s)
    if not 0 <= scheduler.claim_ahead_s <= 5:
        raise ConfigError("scheduler.claim_ahead_s: must be from 0 to 5")
    _positive("scheduler.heartbeat_interval_s", scheduler.heartbeat_interval_s)
    _at_least_one("scheduler.max_catchup", scheduler.max_catchup)
    _at_least_one("scheduler.max_missed_records", scheduler.max_missed_records)


def _check_webhook(webhook: WebhookConfig) -> None:
    _positive("webhook.timeout_s", webhook.timeout_s)
    _positive("webhook.max_concurrency", webhook.max_concurrency)
    _positive("webhook.max_response_bytes", webhook.max_response_bytes)
    if webhook.max_defer_s < 0:
        raise ConfigError("webhook.max_defer_s: must be 0 or more")
    for cidr in webhook.allowed_cidrs:
        try:
            parse_cidr(cidr)
        except ValueError as exc:
            raise ConfigError(f"webhook.allowed_cidrs: {exc}") from None
    if webhook.secret_rotation_grace_s < 0:
        raise ConfigError("webhook.secret_rotation_grace_s: must not be negative")
    if webhook.http_client not in HTTP_CLIENTS:
        raise ConfigError(f"webhook.http_client: must be one of {', '.join(HTTP_CLIENTS)}")
    if webhook.max_connections_per_host < 0:
        raise ConfigError("webhook.max_connections_per_host: must be 0 (no limit) or more")


def _check_logging(logging: LoggingConfig) -> None:
    if logging.level.lower() not in _LOG_LEVELS:
        raise ConfigError(f"logging.level: must be one of {', '.join(_LOG_LEVELS)}")
    if logging.format not in _LOG_FORMATS:
        raise ConfigError(f"logging.format: must be one of {', '.join(_LOG_FORMATS)}")


def _check_store(store: StoreConfig) -> None:
    if store_backend(store.url) is StoreBackend.SQLITE:
        sqlite_path(store.url)


def _check_coordination(coordination: CoordinationConfig) -> None:
    coordination_backend(coordination.url)
    if not coordination.key_prefix or any(c in coordination.key_prefix for c in " {}"):
        raise ConfigError(
            "coordination.key_prefix: must be a non-empty word without spaces or braces"
        )
