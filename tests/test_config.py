"""Configuration: file, environment overrides, and one clear error per bad key."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from cronsvc.config import Config, load_config
from cronsvc.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


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
        256,
        65536,
    )
    assert config.webhook.secret_rotation_grace_s == 86400
    assert config.retention.execution_logs_days == 30
    assert (config.logging.level, config.logging.format) == ("info", "json")


def test_example_file_documents_every_key_with_its_default() -> None:
    example = tomllib.loads((ROOT / "config.example.toml").read_text())
    defaults = Config()
    for section in dataclasses.fields(Config):
        documented = example[section.name]
        values = dataclasses.asdict(getattr(defaults, section.name))
        assert set(documented) == set(values), section.name
        for key, value in values.items():
            assert documented[key] == value, f"{section.name}.{key}"
    assert set(example) == {f.name for f in dataclasses.fields(Config)}
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
        ("[logging]\nlevel = 'loud'\n", {}, "logging.level"),
        ("", {"CRONSVC_SERVER_PORT": "eighty"}, "server.port"),
        ("", {"CRONSVC_WEBHOOK_TIMEOUT_S": "-1"}, "webhook.timeout_s"),
        ("", {"CRONSVC_COORDINATION_URL": "zookeeper://x"}, "coordination.url"),
        ("", {"CRONSVC_STORE_URL": "sqlite:///"}, "store.url"),
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
