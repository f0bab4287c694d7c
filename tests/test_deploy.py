"""The deployment files parse, and every setting they make exists.

No container engine runs here, so the Dockerfile and compose file are checked
as text: what can be checked without running them."""

from __future__ import annotations

import configparser
from pathlib import Path

import yaml

from cronsvc.config import environment_names, load_config

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict[str, object]:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(document, dict)
    return document


def test_compose_runs_three_instances_behind_nginx_with_redis_and_mongo_7() -> None:
    services = compose()["services"]
    assert isinstance(services, dict)
    instances = [name for name in services if name.startswith("cronsvc-")]
    assert len(instances) == 3
    assert services["mongo"]["image"].startswith("mongo:7")
    assert services["redis"]["image"].startswith("redis:")
    assert set(services["nginx"]["depends_on"]) == set(instances)
    upstreams = (ROOT / "deploy" / "nginx.conf").read_text()
    for name in instances:
        assert f"server {name}:8080" in upstreams


def test_every_variable_compose_sets_is_a_configuration_key() -> None:
    services = compose()["services"]
    assert isinstance(services, dict)
    for name, service in services.items():
        if not name.startswith("cronsvc-"):
            continue
        environ = {k: str(v) for k, v in service["environment"].items()}
        assert all(k.startswith("CRONSVC_") for k in environ)
        config = load_config(None, environ=environ)
        assert config.store.url == "mongodb://mongo:27017/cronsvc"
        assert config.coordination.url == "redis://redis:6379/0"
        assert set(environ) <= environment_names()


def test_the_dockerfile_runs_as_a_user_with_a_healthcheck_and_every_env_key_exists() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "\nUSER cronsvc\n" in text
    assert "HEALTHCHECK" in text and "/healthz" in text
    environ: dict[str, str] = {}
    for line in text.split("ENV", 1)[1].split("\n\n", 1)[0].splitlines():
        for part in line.replace("\\", "").split():
            key, _, value = part.partition("=")
            if key.startswith("CRONSVC_"):
                environ[key] = value
    assert environ and set(environ) <= environment_names()
    config = load_config(None, environ=environ)
    assert config.server.host == "0.0.0.0"
    assert config.store.url == "sqlite:////var/lib/cronsvc/cronsvc.db"


def test_the_systemd_unit_restarts_on_failure_as_a_dedicated_user() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(ROOT / "deploy" / "cronsvc.service")
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    assert service["User"] == "cronsvc"
    assert service["ExecStart"].endswith("serve --config /etc/cronsvc/config.toml")
    assert "ExecReload" not in service
    # Readiness and the watchdog come from cronsvc.sdnotify.
    assert service["Type"] == "notify"
    assert float(service["WatchdogSec"]) > 0


def test_the_documented_cluster_config_loads() -> None:
    config = load_config(ROOT / "deploy" / "config.toml", environ={})
    assert config.store.url.startswith("mongodb://")
    assert config.coordination.url.startswith("redis://")
