"""The `cronsvc` command: `serve` runs the service, `check-config` validates,
`import-legacy` brings the Node.js service's data over (`cronsvc.legacy`);
`jobs`, `logs`, `next`, `cluster`, `apply` and `export` talk to a running one
(`cronsvc.commands`, `cronsvc.apply`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cronsvc import __version__
from cronsvc.commands import CLIENT_OPTIONS, add_client_options, add_commands, run
from cronsvc.config import Config, load_config
from cronsvc.errors import CannotListen, ConfigError, StartupRefused
from cronsvc.logs import configure_logging

if TYPE_CHECKING:
    from cronsvc.legacy import Report


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
    _add_import_legacy(commands)
    add_commands(commands)
    add_client_options(parser)
    return parser


IMPORT_LEGACY = "import-legacy"


def _add_import_legacy(commands: Any) -> None:
    text = (
        "copy the jobs and execution logs of the Node.js service cronsvc replaces "
        "(collections cronjobs and executionlogs) into the configured store"
    )
    sub = commands.add_parser(
        IMPORT_LEGACY,
        help="import the Node.js service's jobs and logs",
        description=text + ". Running it again imports nothing twice.",
    )
    sub.add_argument(
        "--from", dest="source", required=True, metavar="MONGODB_URL", help="the old database"
    )
    sub.add_argument("--database", metavar="NAME", help="when the URL names none")
    sub.add_argument("--dry-run", action="store_true", help="write nothing; report all the same")
    sub.add_argument(
        "--timezone",
        default="UTC",
        metavar="ZONE",
        help="IANA time zone to evaluate the imported schedules in (UTC)",
    )
    sub.add_argument("--config", type=Path, help="TOML file naming the store (every key optional)")
    sub.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the report as one JSON document",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if hasattr(args, "handler"):
        return run(args)
    if args.command == IMPORT_LEGACY:
        if any(hasattr(args, option) for option in ("url", "token", "timeout")):
            parser.error(f"--url, --token and --timeout are not options of {IMPORT_LEGACY}")
        return _import_legacy(args)
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


def _import_legacy(args: argparse.Namespace) -> int:
    """Exit status: 0 when the import ran (refusals included), 1 when the
    old database or the store cannot be read, 2 for a usage error."""
    from cronsvc.cron import load_timezone
    from cronsvc.errors import (
        InvalidLegacySource,
        InvalidTimezone,
        LegacySourceUnreadable,
        StoreUnavailable,
    )

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"cronsvc: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        load_timezone(args.timezone)
    except InvalidTimezone as exc:
        print(f"cronsvc: --timezone: {exc}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(_run_import(config, args))
    except (InvalidLegacySource, ConfigError) as exc:
        print(f"cronsvc: {exc}", file=sys.stderr)
        return 2
    except (LegacySourceUnreadable, StoreUnavailable) as exc:
        print(f"cronsvc: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if getattr(args, "json", False):
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        for line in report.lines():
            print(line)
    return 0


async def _run_import(config: Config, args: argparse.Namespace) -> Report:
    from datetime import UTC, datetime, timedelta

    from cronsvc.clock import to_ms
    from cronsvc.legacy import Settings, import_legacy, mongo_source
    from cronsvc.netguard import TargetPolicy
    from cronsvc.store import open_store

    settings = Settings(
        now=to_ms(datetime.now(UTC)),
        timezone=args.timezone,
        min_interval_s=config.scheduler.min_interval_s,
        default_timeout_s=config.webhook.timeout_s,
        max_response_bytes=config.webhook.max_response_bytes,
        retention=timedelta(days=config.retention.execution_logs_days),
        target_policy=TargetPolicy.from_settings(
            allow_private=config.webhook.allow_private_targets,
            allowed_cidrs=config.webhook.allowed_cidrs,
        ),
    )
    on_terminal = sys.stderr.isatty()

    def progress(report: Report) -> None:
        imported = report.logs.values()
        print(
            f"\rreading: {sum(report.jobs.values())} jobs, {sum(imported)} logs",
            end="",
            file=sys.stderr,
            flush=True,
        )

    async with mongo_source(args.source, args.database) as documents:
        store = await open_store(
            config.store.url, retention_days=config.retention.execution_logs_days
        )
        try:
            return await import_legacy(
                documents,
                store,
                settings,
                max_jobs=config.limits.max_jobs,
                dry_run=args.dry_run,
                progress=progress if on_terminal else None,
            )
        finally:
            await store.aclose()
            if on_terminal:
                print(file=sys.stderr)


def _printable(config: Config) -> dict[str, object]:
    """The resolved configuration, API tokens masked: their count shows, never
    their text."""
    printable = config.model_dump()
    printable["server"]["api_tokens"] = ["<redacted>"] * len(config.server.api_tokens)
    return printable
