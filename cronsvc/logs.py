"""structlog set-up: JSON lines for machines, console rendering for people."""

from __future__ import annotations

import logging
import sys

import structlog

from cronsvc.config import LoggingConfig


def configure_logging(config: LoggingConfig) -> None:
    level = logging.getLevelNamesMapping()[config.level.upper()]
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer()
        if config.format == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # aiohttp's access log and other stdlib loggers go to stderr at the same level.
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr, format="%(message)s")
