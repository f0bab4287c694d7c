"""The deployment files parse, and every setting they make exists; the
Makefile installs what each target needs and no more.

No container engine runs here, so the Dockerfile and compose file are checked
as text, and what of them runs without one is run: the image's health check,
and the wheel built from what the image copies."""

from __future__ import annotations

import asyncio
import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
import yaml

from cronsvc.config import environment_names, load_config
from cronsvc.errors import ConfigError
from cronsvc.urls import sqlite_path
from tests.fakes import free_port
from tests.helpers_api import Client

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "deploy-test-token-0123456789"


def interpolate(value: str, shell: dict[str, str]) -> str:
    """Compose's ${NAME} and ${NAME:?message}, from `shell`."""
    return re.sub(r"\$\{(\w+)(?::\?[^}]*)?\}", lambda m: shell[m.group(1)], value)


def compose() -> dict[str, object]:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(document, dict)
    return document


def dockerfile_instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, as (keyword, arguments), continuations joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = (line.strip() for line in text.splitlines())
    found = (line.split(None, 1) for line in lines if line and not line.startswith("#"))
    return [(parts[0].upper(), parts[1] if len(parts) > 1 else "") for parts in found]


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
        shell = {"CRONSVC_SERVER_API_TOKENS": TOKEN}
        environ = {k: interpolate(str(v), shell) for k, v in service["environment"].items()}
        assert all(k.startswith("CRONSVC_") for k in environ)
        config = load_config(None, environ=environ)
        assert config.store.url == "mongodb://mongo:27017/cronsvc"
        assert config.coordination.url == "redis://redis:6379/0"
        assert config.server.api_tokens == [TOKEN]
        assert set(environ) <= environment_names()


def test_compose_will_not_start_without_api_tokens() -> None:
    """Its instances listen on 0.0.0.0: `${VAR:?}` stops compose when unset."""
    services = compose()["services"]
    assert isinstance(services, dict)
    for name, service in services.items():
        if name.startswith("cronsvc-"):
            tokens = service["environment"]["CRONSVC_SERVER_API_TOKENS"]
            assert tokens.startswith("${CRONSVC_SERVER_API_TOKENS:?"), tokens


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
    with pytest.raises(ConfigError, match=r"^server\.host: refusing"):
        load_config(None, environ=environ)  # 0.0.0.0 and no token
    config = load_config(None, environ={**environ, "CRONSVC_SERVER_API_TOKENS": TOKEN})
    assert config.server.host == "0.0.0.0"
    assert config.store.url == "sqlite:////var/lib/cronsvc/cronsvc.db"


def test_compose_builds_one_image_and_every_instance_runs_it() -> None:
    services = compose()["services"]
    assert isinstance(services, dict)
    instances = {name: s for name, s in services.items() if name.startswith("cronsvc-")}
    builders = [name for name, service in instances.items() if "build" in service]
    assert len(builders) == 1, builders
    images = {service.get("image") for service in instances.values()}
    assert len(images) == 1 and None not in images, images
    (image,) = images
    assert "/" not in image  # a local name: compose pulls nothing for it


def test_the_image_keeps_the_sqlite_file_on_a_volume() -> None:
    environ: dict[str, str] = {}
    volumes: list[str] = []
    for keyword, arguments in dockerfile_instructions():
        if keyword == "ENV":
            environ |= dict(part.split("=", 1) for part in arguments.split())
        elif keyword == "VOLUME":
            given = arguments.strip()
            volumes += json.loads(given) if given.startswith("[") else given.split()
    database = sqlite_path(environ["CRONSVC_STORE_URL"])
    assert str(database.parent) in volumes


def healthcheck_command() -> list[str]:
    """The Dockerfile's HEALTHCHECK command, as the container runs it."""
    (arguments,) = [args for keyword, args in dockerfile_instructions() if keyword == "HEALTHCHECK"]
    command = arguments.partition(" CMD ")[2].strip()
    if command.startswith("["):
        exec_form: list[str] = json.loads(command)
        return exec_form
    return ["/bin/sh", "-c", command]


async def test_the_images_healthcheck_asks_the_port_the_service_is_configured_with(
    client: Client,
) -> None:
    """Run as the image would run it, with this environment's Python as `python`."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"

    async def healthcheck(port: int) -> int:
        process = await asyncio.create_subprocess_exec(
            *healthcheck_command(),
            env={**os.environ, "PATH": path, "CRONSVC_SERVER_PORT": str(port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        async with asyncio.timeout(10):
            return await process.wait()

    assert client.port is not None
    assert await healthcheck(client.port) == 0
    assert await healthcheck(free_port()) == 1  # nothing listens there
    exposed = [args for keyword, args in dockerfile_instructions() if keyword == "EXPOSE"]
    assert exposed == ["8080"]
    assert "'CRONSVC_SERVER_PORT', '8080'" in " ".join(healthcheck_command())


def test_the_build_context_holds_what_the_dockerfile_copies_and_no_more() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*"  # .venv, .git and the rest are left out
    copied = [
        source
        for keyword, arguments in dockerfile_instructions()
        if keyword == "COPY"
        for source in arguments.split()[:-1]
    ]
    assert {f"!{source}" for source in copied} <= set(patterns)


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


def test_the_systemd_units_install_steps_use_its_venv_and_a_local_source() -> None:
    """cronsvc is on no package index: pip gets a checkout or a wheel by path,
    into the virtual environment whose `cronsvc` the unit runs."""
    text = (ROOT / "deploy" / "cronsvc.service").read_text()
    steps = [line[1:].strip() for line in text.splitlines() if line.startswith("#   ")]
    (venv,) = re.findall(r"^#\s+python3 -m venv (\S+)", text, re.MULTILINE)
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(text)
    assert unit["Service"]["ExecStart"].startswith(f"{venv}/bin/cronsvc ")
    installs = [step for step in steps if " install " in step and "pip" in step]
    assert len(installs) == 2
    for step in installs:
        pip, _, requirement = step.partition(" install ")
        assert pip == f"{venv}/bin/pip"
        assert "/" in requirement and re.search(r"\[uvloop\]['\"]$", requirement), step
    assert any(".whl" in step for step in installs)
    for step in steps:
        if step.startswith("install ") and "/etc/cronsvc/config.toml" in step:
            assert (ROOT / step.split()[-2]).is_file(), step


DEPLOY_CONFIGS = sorted((ROOT / "deploy").glob("*.toml"))


def test_there_is_a_config_for_a_cluster_and_one_for_a_single_host() -> None:
    assert {path.name for path in DEPLOY_CONFIGS} >= {"config.toml", "config.single.toml"}


@pytest.mark.parametrize("path", DEPLOY_CONFIGS, ids=lambda path: path.name)
def test_every_deploy_config_loads_with_its_tokens_file(tmp_path: Path, path: Path) -> None:
    server = tomllib.loads(path.read_text())["server"]
    assert server["api_tokens_file"] == "/etc/cronsvc/api_tokens"
    tokens = tmp_path / "api_tokens"
    tokens.write_text(f"# the operators\n{TOKEN}\n")
    config = load_config(path, environ={"CRONSVC_SERVER_API_TOKENS_FILE": str(tokens)})
    assert config.server.api_tokens == [TOKEN]
    if config.store.url.startswith("sqlite:"):
        # In-process coordination serves one process: no cluster on SQLite.
        assert config.coordination.url == "local"
        # ProtectSystem=strict: the unit may write only its StateDirectory.
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.read(ROOT / "deploy" / "cronsvc.service")
        state = Path("/var/lib") / unit["Service"]["StateDirectory"]
        assert sqlite_path(config.store.url).parent == state
    else:
        assert config.store.url.startswith("mongodb://")
        assert config.coordination.url.startswith("redis://")


# -- the Makefile --------------------------------------------------------------

DEV_TARGETS = ("test", "lint", "fmt", "bench", "cluster-check")


def make_dry_run(target: str, venv: Path) -> list[str]:
    """The commands `make TARGET` would run, with its virtual environment at `venv`."""
    done = subprocess.run(
        ["make", "--dry-run", "--no-print-directory", f"VENV={venv}", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.splitlines()


def extras_installed(commands: list[str]) -> list[set[str]]:
    """The extras of each `pip install -e '.[...]'` among `commands`."""
    found = (re.search(r"pip install .*-e '\.\[([\w,]*)\]'", line) for line in commands)
    return [set(match.group(1).split(",")) for match in found if match]


def test_the_readme_opens_with_make_run_and_make_test_and_ci_runs_make_test() -> None:
    first_block = (ROOT / "README.md").read_text().split("```")[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:]]
    assert commands == ["make run", "make test"]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()]
    assert ci[-1] == "make test"


def test_make_run_installs_the_service_and_uvloop_without_the_dev_tools(tmp_path: Path) -> None:
    run = make_dry_run("run", tmp_path / "venv")
    assert extras_installed(run) == [{"uvloop"}]
    assert run[-1].split()[:2] == [f"{tmp_path}/venv/bin/cronsvc", "serve"]


@pytest.mark.parametrize("target", DEV_TARGETS)
def test_every_developer_target_installs_the_dev_extra(tmp_path: Path, target: str) -> None:
    assert extras_installed(make_dry_run(target, tmp_path / "venv")) == [{"dev", "uvloop"}]


def test_each_install_is_redone_when_pyproject_changes_and_not_otherwise(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "pyvenv.cfg").touch()
    changed = (ROOT / "pyproject.toml").stat().st_mtime
    for stamp in (".installed-run", ".installed-dev"):
        (venv / stamp).touch()
        os.utime(venv / stamp, (changed + 60, changed + 60))
    assert extras_installed(make_dry_run("run", venv)) == []
    assert extras_installed(make_dry_run("test", venv)) == []
    os.utime(venv / ".installed-run", (changed - 60, changed - 60))
    assert extras_installed(make_dry_run("run", venv)) == [{"uvloop"}]
    assert extras_installed(make_dry_run("test", venv)) == []
    os.utime(venv / ".installed-dev", (changed - 60, changed - 60))
    assert extras_installed(make_dry_run("test", venv)) == [{"dev", "uvloop"}]


# -- the package ---------------------------------------------------------------


def image_sources(into: Path) -> Path:
    """What the Dockerfile copies into the image before installing it, laid out
    in `into` as in its WORKDIR."""
    for keyword, arguments in dockerfile_instructions():
        if keyword != "COPY":
            continue
        *sources, destination = arguments.split()
        for source in sources:
            origin, target = ROOT / source, into / destination
            if origin.is_dir():
                ignore = shutil.ignore_patterns("__pycache__")
                shutil.copytree(origin, target, ignore=ignore, dirs_exist_ok=True)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(origin, target / origin.name)
    return into


def test_the_wheel_builds_from_what_the_image_copies_with_its_files_and_license(
    tmp_path: Path,
) -> None:
    """The way deploy/cronsvc.service and the Dockerfile install cronsvc: a
    wheel built from the checkout. The build backend is the dev extra's, so
    nothing is downloaded; its output must carry no deprecation warning."""
    source = image_sources(tmp_path / "source")
    wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    built = subprocess.run(
        [*wheel, str(source), "--wheel-dir", str(tmp_path / "dist")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert "deprecat" not in (built.stdout + built.stderr).lower(), built.stderr
    (wheel,) = (tmp_path / "dist").glob("cronsvc-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (info,) = {name.split("/")[0] for name in names if ".dist-info/" in name}
        metadata = Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    static = ROOT / "cronsvc" / "api" / "static"
    shipped = {str(path.relative_to(ROOT)) for path in static.rglob("*") if path.is_file()}
    assert {"cronsvc/api/static/docs.js", "cronsvc/api/static/dashboard/app.js"} <= shipped
    assert shipped | {"cronsvc/py.typed", "cronsvc/cli.py"} <= names
    assert f"{info}/licenses/LICENSE" in names
    assert metadata["License-Expression"] == "MIT"
    assert "cronsvc = cronsvc.cli:main" in entry_points
    assert "uvloop" in metadata["Provides-Extra"]
