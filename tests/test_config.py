"""Configuration: file, environment overrides, and one clear error per bad key."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from cronsvc.config import Config, SchedulerConfig, ServerConfig, environment_names, load_config
from cronsvc.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
LONG = "a-token-of-32-characters-0123456"


def test_defaults_match_the_design() -> None:
    config = load_config(None, environ={})
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.store.url == "sqlite:///./cronsvc.db"
    assert config.coordination.url == "local"
    assert config.scheduler.resync_interval_s == 30
    assert (
        config.webhook.timeout_s,
        config.webhook.max_concurrency,
        config.webhook.max_response_bytes,
    ) == (
        10,
        1024,
        65536,
    )
    assert config.webhook.secret_rotation_grace_s == 86400
    assert config.retention.execution_logs_days == 30
    assert (config.logging.level, config.logging.format) == ("info", "json")
    assert config.server.api_tokens == [] and config.server.api_tokens_file == ""
    assert config.server.allow_unauthenticated is False
    assert (
        config.limits.max_jobs,
        config.limits.rate_limit_per_s,
        config.limits.rate_limit_burst,
    ) == (10000, 50, 100)


def test_the_ssrf_guard_is_shut_by_default() -> None:
    webhook = load_config(None, environ={}).webhook
    assert webhook.allow_private_targets is False
    assert webhook.allowed_cidrs == []


def test_example_file_documents_every_key_with_its_default() -> None:
    example = tomllib.loads((ROOT / "config.example.toml").read_text())
    defaults = Config()
    for section in Config.model_fields:
        documented = example[section]
        values = getattr(defaults, section).model_dump()
        assert set(documented) == set(values), section
        for key, value in values.items():
            assert documented[key] == value, f"{section}.{key}"
    assert set(example) == set(Config.model_fields)
    assert load_config(ROOT / "config.example.toml", environ={}) == defaults


def test_file_values_are_read(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[server]\nport = 9000\n[webhook]\ntimeout_s = 3\n[logging]\nformat = "console"\n'
    )
    config = load_config(path, environ={})
    assert config.server.port == 9000 and config.webhook.timeout_s == 3.0
    assert config.logging.format == "console"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[server]\nport = 9000\n")
    config = load_config(
        path,
        environ={
            "CRONSVC_SERVER_PORT": "9100",
            "CRONSVC_SERVER_HOST": "::1",
            "CRONSVC_SCHEDULER_MAX_CATCHUP": "3",
            "CRONSVC_STORE_URL": "sqlite:////var/lib/cronsvc/x.db",
        },
    )
    assert config.server.port == 9100 and config.server.host == "::1"
    assert config.scheduler.max_catchup == 3
    assert config.store.url == "sqlite:////var/lib/cronsvc/x.db"


def test_the_ssrf_guard_is_opened_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[webhook]\nallow_private_targets = true\nallowed_cidrs = ["10.0.0.0/8", "fd00::/8"]\n'
    )
    webhook = load_config(path, environ={}).webhook
    assert webhook.allow_private_targets is True
    assert webhook.allowed_cidrs == ["10.0.0.0/8", "fd00::/8"]


@pytest.mark.parametrize(
    "text",
    [
        "10.0.0.0/8,192.168.5.0/24",
        " 10.0.0.0/8 , 192.168.5.0/24, ",
        '["10.0.0.0/8", "192.168.5.0/24"]',
    ],
)
def test_allowed_cidrs_come_from_the_environment_as_json_or_comma_separated(text: str) -> None:
    config = load_config(
        None,
        environ={
            "CRONSVC_WEBHOOK_ALLOWED_CIDRS": text,
            "CRONSVC_WEBHOOK_ALLOW_PRIVATE_TARGETS": "yes",
        },
    )
    assert config.webhook.allowed_cidrs == ["10.0.0.0/8", "192.168.5.0/24"]
    assert config.webhook.allow_private_targets is True


def test_a_config_that_still_chooses_a_webhook_http_client_is_refused(tmp_path: Path) -> None:
    """webhook.http_client chose aiohttp's client once; it is gone, and a file
    that still sets the key fails at start-up naming it."""
    path = tmp_path / "cronsvc.toml"
    path.write_text('[webhook]\nhttp_client = "aiohttp"\n')

    with pytest.raises(ConfigError, match=r"webhook\.http_client: unknown configuration key"):
        load_config(path, environ={})
    assert "CRONSVC_WEBHOOK_HTTP_CLIENT" not in environment_names()


def test_an_empty_allowed_cidrs_variable_is_an_empty_list() -> None:
    config = load_config(None, environ={"CRONSVC_WEBHOOK_ALLOWED_CIDRS": ""})
    assert config.webhook.allowed_cidrs == []


@pytest.mark.parametrize(
    ("content", "env", "key"),
    [
        ("[server]\nport = 'x'\n", {}, "server.port"),
        ("[server]\nport = 70000\n", {}, "server.port"),
        ("[server]\nnope = 1\n", {}, "server.nope"),
        ("[nowhere]\nx = 1\n", {}, "nowhere"),
        ("server = 3\n", {}, "server"),
        ("[scheduler]\nresync_interval_s = 0\n", {}, "scheduler.resync_interval_s"),
        ("[scheduler]\nmax_catchup = 1.5\n", {}, "scheduler.max_catchup"),
        ("[webhook]\nmax_concurrency = true\n", {}, "webhook.max_concurrency"),
        ("[webhook]\nsecret_rotation_grace_s = -1\n", {}, "webhook.secret_rotation_grace_s"),
        ("[webhook]\nhttp_client = 'httpx'\n", {}, "webhook.http_client"),
        ("[webhook]\nmax_connections_per_host = -1\n", {}, "webhook.max_connections_per_host"),
        ("[logging]\nlevel = 'loud'\n", {}, "logging.level"),
        ("", {"CRONSVC_SERVER_PORT": "eighty"}, "server.port"),
        ("", {"CRONSVC_WEBHOOK_TIMEOUT_S": "-1"}, "webhook.timeout_s"),
        ("", {"CRONSVC_COORDINATION_URL": "zookeeper://x"}, "coordination.url"),
        ("", {"CRONSVC_STORE_URL": "sqlite:///"}, "store.url"),
        ("[webhook]\nallowed_cidrs = ['10.0.0.1/8']\n", {}, "webhook.allowed_cidrs"),
        ("[webhook]\nallowed_cidrs = ['intranet']\n", {}, "webhook.allowed_cidrs"),
        ("[webhook]\nallowed_cidrs = '10.0.0.0/8'\n", {}, "webhook.allowed_cidrs"),
        ("[webhook]\nallow_private_targets = 'yes'\n", {}, "webhook.allow_private_targets"),
        ("", {"CRONSVC_WEBHOOK_ALLOWED_CIDRS": "10.0.0.0/8,10.0.0.0/33"}, "webhook.allowed_cidrs"),
        ("", {"CRONSVC_WEBHOOK_ALLOWED_CIDRS": '["10.0.0.0/8"'}, "webhook.allowed_cidrs"),
        ("", {"CRONSVC_WEBHOOK_ALLOWED_CIDRS": "[1, 2]"}, "webhook.allowed_cidrs"),
        ("", {"CRONSVC_WEBHOOK_ALLOW_PRIVATE_TARGETS": "maybe"}, "webhook.allow_private_targets"),
        ("[server]\napi_tokens = 'x'\n", {}, "server.api_tokens"),
        ("[server]\napi_tokens = ['too-short']\n", {}, "server.api_tokens: token 1"),
        ("", {"CRONSVC_SERVER_API_TOKENS": f"{LONG},short"}, "server.api_tokens: token 2"),
        ("[server]\napi_tokens = ['has spaces in it 123']\n", {}, "server.api_tokens"),
        ("[server]\nallow_unauthenticated = 'yes'\n", {}, "server.allow_unauthenticated"),
        ("[server]\nhost = '0.0.0.0'\n", {}, "server.host: refusing to serve"),
        ("", {"CRONSVC_SERVER_HOST": "::"}, "server.host: refusing to serve"),
        ("", {"CRONSVC_SERVER_HOST": "cron.example.org"}, "server.host: refusing to serve"),
        ("", {"CRONSVC_SERVER_API_TOKENS": "[not json"}, "server.api_tokens"),
        ("", {"CRONSVC_SERVER_API_TOKENS": '["a", 1]'}, "server.api_tokens"),
        ("[limits]\nmax_jobs = 0\n", {}, "limits.max_jobs"),
        ("[limits]\nrate_limit_per_s = -1\n", {}, "limits.rate_limit_per_s"),
        ("[limits]\nrate_limit_burst = 0\n", {}, "limits.rate_limit_burst"),
    ],
)
def test_bad_value_names_its_key(
    tmp_path: Path, content: str, env: dict[str, str], key: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=env)
    assert str(caught.value).startswith(key)
    assert "\n" not in str(caught.value)


def test_missing_and_malformed_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, environ={})


def test_credentials_in_a_store_url_never_reach_an_error_message() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={"CRONSVC_STORE_URL": "postgres://admin:hunter2@db/x"})
    assert "hunter2" not in str(caught.value)


def test_a_rejected_token_is_named_by_position_never_quoted(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[server]\napi_tokens = "{LONG}"\n')  # a string, not a list
    with pytest.raises(ConfigError, match=r"^server\.api_tokens: expected a list") as caught:
        load_config(path, environ={})
    assert LONG not in str(caught.value)
    for tokens in (["short-secret"], [LONG, "with a space 0123456789"]):
        with pytest.raises(ConfigError) as caught:
            load_config(None, environ={"CRONSVC_SERVER_API_TOKENS": ",".join(tokens)})
        assert tokens[-1] not in str(caught.value)
        assert f"token {len(tokens)}" in str(caught.value)
    path = tmp_path / "tokens"
    path.write_text(f"{LONG}\n\nshort-secret\n")
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={"CRONSVC_SERVER_API_TOKENS_FILE": str(path)})
    assert "line 3" in str(caught.value) and "short-secret" not in str(caught.value)


def test_tokens_come_from_the_list_and_the_file_comments_and_blanks_ignored(
    tmp_path: Path,
) -> None:
    tokens_file = tmp_path / "api_tokens"
    tokens_file.write_text(f"# operators\n\n  {LONG}-file  \n# {LONG}-commented\n{LONG}-list\n")
    path = tmp_path / "c.toml"
    path.write_text(f'[server]\napi_tokens = ["{LONG}-list"]\napi_tokens_file = "{tokens_file}"\n')
    config = load_config(path, environ={})
    assert config.server.api_tokens == [f"{LONG}-list", f"{LONG}-file"]


@pytest.mark.parametrize("content", ["", "# only a comment\n\n"])
def test_a_tokens_file_without_tokens_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "api_tokens"
    path.write_text(content)
    with pytest.raises(ConfigError, match=r"^server\.api_tokens_file: .* holds no token"):
        load_config(None, environ={"CRONSVC_SERVER_API_TOKENS_FILE": str(path)})


def test_an_unreadable_tokens_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^server\.api_tokens_file: .* cannot be read"):
        load_config(None, environ={"CRONSVC_SERVER_API_TOKENS_FILE": str(tmp_path / "absent")})
    with pytest.raises(ConfigError, match=r"^server\.api_tokens_file: .* cannot be read"):
        load_config(None, environ={"CRONSVC_SERVER_API_TOKENS_FILE": str(tmp_path)})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "localhost", "LOCALHOST"])
def test_a_loopback_host_serves_without_tokens(host: str) -> None:
    assert load_config(None, environ={"CRONSVC_SERVER_HOST": host}).server.host == host


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "cron.example.org", ""])
def test_a_public_host_serves_with_a_token_or_when_explicitly_unauthenticated(host: str) -> None:
    with_token = load_config(
        None, environ={"CRONSVC_SERVER_HOST": host, "CRONSVC_SERVER_API_TOKENS": LONG}
    )
    assert with_token.server.api_tokens == [LONG]
    allowed = load_config(
        None, environ={"CRONSVC_SERVER_HOST": host, "CRONSVC_SERVER_ALLOW_UNAUTHENTICATED": "true"}
    )
    assert allowed.server.allow_unauthenticated and allowed.server.api_tokens == []


def test_tokens_stay_out_of_the_configuration_repr() -> None:
    config = load_config(None, environ={"CRONSVC_SERVER_API_TOKENS": LONG})
    assert LONG not in repr(config) and LONG not in str(config.server)


def test_limits_are_read(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[limits]\nmax_jobs = 5\nrate_limit_per_s = 0\nrate_limit_burst = 1\n")
    limits = load_config(path, environ={"CRONSVC_LIMITS_MAX_JOBS": "7"}).limits
    assert (limits.max_jobs, limits.rate_limit_per_s, limits.rate_limit_burst) == (7, 0.0, 1)


BOUNDS = [
    # key, just inside, just outside (as the environment writes them)
    ("server.port", "0", "-1"),
    ("server.port", "65535", "65536"),
    ("server.shutdown_grace_s", "0", "-0.001"),
    ("scheduler.resync_interval_s", "0.001", "0"),
    ("scheduler.min_interval_s", "0.001", "0"),
    ("scheduler.max_catchup", "1", "0"),
    ("scheduler.max_missed_records", "1", "0"),
    ("scheduler.lease_ttl_s", "0.001", "0"),
    ("scheduler.claim_ahead_s", "0", "-0.001"),
    ("scheduler.claim_ahead_s", "5", "5.001"),
    ("scheduler.heartbeat_interval_s", "0.001", "0"),
    ("webhook.timeout_s", "0.001", "0"),
    ("webhook.max_concurrency", "1", "0"),
    ("webhook.max_response_bytes", "1", "0"),
    ("webhook.max_defer_s", "0", "-0.001"),
    ("webhook.max_connections_per_host", "0", "-1"),
    ("webhook.secret_rotation_grace_s", "0", "-0.001"),
    ("alerts.after", "1", "0"),
    ("alerts.timeout_s", "0.001", "0"),
    ("alerts.max_attempts", "1", "0"),
    ("alerts.max_attempts", "20", "21"),
    ("alerts.max_pending", "1", "0"),
    ("retention.execution_logs_days", "0.001", "0"),
    ("limits.max_jobs", "1", "0"),
    ("limits.rate_limit_per_s", "0", "-0.001"),
    ("limits.rate_limit_burst", "1", "0"),
]


def variable(key: str) -> str:
    return "CRONSVC_" + key.replace(".", "_").upper()


@pytest.mark.parametrize(("key", "inside", "outside"), BOUNDS)
def test_each_bound_takes_the_value_just_inside_and_refuses_the_one_just_outside(
    key: str, inside: str, outside: str
) -> None:
    section, name = key.split(".")
    config = load_config(None, environ={variable(key): inside})
    assert getattr(getattr(config, section), name) == json.loads(inside)
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={variable(key): outside})
    assert str(caught.value).startswith(f"{key}: must be ")
    assert str(caught.value).endswith(f", got {json.loads(outside)}")


def test_every_declared_bound_has_its_rows_in_the_table() -> None:
    bounded = {
        f"{section}.{key}"
        for section, field in Config.model_fields.items()
        for key, declared in field.annotation.model_fields.items()  # type: ignore[union-attr]
        if declared.metadata
    }
    assert bounded == {key for key, _, _ in BOUNDS}


@pytest.mark.parametrize(
    ("key", "outside", "words"),
    [
        ("server.port", "70000", "must be from 0 to 65535, got 70000"),
        ("scheduler.claim_ahead_s", "6", "must be from 0 to 5, got 6"),
        ("scheduler.max_catchup", "0", "must be at least 1, got 0"),
        ("webhook.timeout_s", "0", "must be greater than 0, got 0"),
        ("webhook.max_defer_s", "-1", "must be 0 or more, got -1"),
        ("server.event_loop", "trio", "must be one of auto, asyncio, uvloop"),
        ("logging.format", "xml", "must be one of json, console"),
        ("server.port", "80.5", "expected an integer, got 80.5"),
        ("server.port", "true", "expected an integer, got True"),
        ("webhook.timeout_s", '"3"', "expected a number, got '3'"),
        ("coordination.key_prefix", "two words", "must be a non-empty word without spaces"),
        ("alerts.url", "hooks.example.com/x", "must be an http:// or https:// URL"),
        ("alerts.url", "https://bot:pw@hooks.example.com/", "must not carry credentials"),
        ("alerts.url", "https://hooks.example.com:99999/", "is not a valid URL"),
        ("alerts.dashboard_url", "cron.example.com", "must be an http:// or https:// URL"),
        ("alerts.secret", "hunter2", "must start with 'whsec_'"),
    ],
)
def test_a_refusal_says_what_the_key_takes(key: str, outside: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={variable(key): outside})
    assert str(caught.value).startswith(f"{key}: {words}")


def test_a_refused_alert_secret_or_url_is_never_quoted() -> None:
    for key, value in (
        ("alerts.secret", "hunter2"),
        ("alerts.url", "https://bot:hunter2@x.example/"),
    ):
        with pytest.raises(ConfigError) as caught:
            load_config(None, environ={variable(key): value})
        assert "hunter2" not in str(caught.value)


def test_a_number_key_written_as_an_integer_is_a_float() -> None:
    config = load_config(None, environ={"CRONSVC_WEBHOOK_TIMEOUT_S": "3"})
    assert isinstance(config.webhook.timeout_s, float)
    assert isinstance(load_config(None, environ={}).scheduler.claim_ahead_s, float)


def test_the_log_level_is_read_in_any_case() -> None:
    config = load_config(None, environ={"CRONSVC_LOGGING_LEVEL": "WARNING"})
    assert config.logging.level == "warning"


def test_every_key_has_its_environment_variable() -> None:
    names = environment_names()
    keys = {
        f"{section}.{key}"
        for section, field in Config.model_fields.items()
        for key in field.annotation.model_fields  # type: ignore[union-attr]
    }
    assert names == {variable(key) for key in keys}
    assert {"CRONSVC_SCHEDULER_CLAIM_AHEAD_S", "CRONSVC_SERVER_API_TOKENS_FILE"} <= names


def test_a_section_built_in_code_is_checked_as_a_loaded_one_and_stays_frozen() -> None:
    with pytest.raises(ValidationError):
        SchedulerConfig(claim_ahead_s=6)
    with pytest.raises(ValidationError) as caught:
        ServerConfig(api_tokens=[LONG, "short-secret"])
    assert "short-secret" not in str(caught.value)
    with pytest.raises(ValidationError):
        load_config(None, environ={}).scheduler.max_catchup = 2  # type: ignore[misc]
