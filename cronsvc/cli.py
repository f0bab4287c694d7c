"""The `cronsvc` command: `serve` runs the service, `check-config` validates;
`jobs`, `logs`, `next` and `cluster` talk to a running one (`cronsvc.commands`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Coroutine, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cronsvc import __version__
from cronsvc.commands import CLIENT_OPTIONS, add_client_options, add_commands, run
from cronsvc.config import Config, load_config
from cronsvc.errors import CannotListen, ConfigError, StartupRefused
from cronsvc.logs import configure_logging


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cronsvc", description="A dynamic cron service.")
    parser.add_argument("--version", action="version", version=f"cronsvc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("serve", "run the service"),
        ("check-config", "validate the configuration and print it as resolved"),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("--config", type=Path, help="TOML file (every key optional)")
    add_commands(commands)
    add_client_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if hasattr(args, "handler"):
        return run(args)
    if any(hasattr(args, option) for option in CLIENT_OPTIONS):
        parser.error(f"--url, --token, --json and --timeout are not options of {args.command}")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"cronsvc: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(json.dumps(_printable(config), indent=2))
        return 0
    configure_logging(config.logging)
    try:
        _run(_serve(config), config.server.event_loop)
    except StartupRefused as exc:
        print(f"cronsvc: refusing to start: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"cronsvc: configuration error: {exc}", file=sys.stderr)
        return 2
    except CannotListen as exc:
        print(f"cronsvc: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _run(main: Coroutine[Any, Any, None], event_loop: str) -> None:
    """Run on uvloop when asked, or when `auto` finds it installed: it halves
    the event loop's cost per webhook call (see BENCHMARKS.md)."""
    if event_loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                main.close()
                raise ConfigError(
                    "server.event_loop: uvloop is not installed (pip install 'cronsvc[uvloop]')"
                ) from None
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


async def _serve(config: Config) -> None:
    from cronsvc.service import serve

    await serve(config)


def _printable(config: Config) -> dict[str, object]:
    """The resolved configuration, API tokens masked: their count shows, never
    their text."""
    printable = asdict(config)
    printable["server"]["api_tokens"] = ["<redacted>"] * len(config.server.api_tokens)
    return printable
