"""structlog set-up: JSON lines for machines, console rendering for people.

Records from the standard library's loggers (aiohttp's server, web, access
and client loggers, asyncio's, and any other, through the root logger) are
rendered by the same processors as cronsvc's own events, so stderr stays one
JSON document per line whoever writes to it. A request aiohttp's parser
refuses (a NUL in a header, a request line over its limit) is the client's
doing: it becomes one `bad_request` warning naming the error, not an error
with a traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import TextIO

import structlog
from aiohttp.http_exceptions import HttpProcessingError

from cronsvc.config import LoggingConfig

_MAX_ERROR_CHARS = 300
"""A refused request's error quotes the client's bytes: keep the line short."""


def configure_logging(config: LoggingConfig) -> None:
    level = logging.getLevelNamesMapping()[config.level.upper()]
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer()
        if config.format == "console"
        else structlog.processors.JSONRenderer()
    )
    shared: Sequence[structlog.typing.Processor] = (
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Other libraries' loggers are quieter than ours: warnings and worse,
    # unless ours are set quieter still.
    threshold = max(level, logging.WARNING)
    handler = _StdlibHandler(sys.stderr)
    handler.addFilter(_ClientErrors(threshold))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                *shared,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(allow=_ClientErrors.FIELDS),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
    logging.captureWarnings(True)  # Python's warnings, as `py.warnings` records


class _StdlibHandler(logging.StreamHandler[TextIO]):
    """The handler `configure_logging` installs (and replaces when called again)."""


class _ClientErrors(logging.Filter):
    """Turns aiohttp's "Error handling request" for a request its parser
    refused into a `bad_request` warning with the error's message and no
    traceback, then lets through what reaches `threshold`."""

    FIELDS = ("status", "error", "remote")

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self.threshold = threshold

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500:
            args = record.args if isinstance(record.args, tuple) else ()
            record.__dict__.update(
                status=exc.code,
                error=_one_line(exc.message or type(exc).__name__),
                remote=str(args[0]) if len(args) == 1 else None,
            )
            record.msg, record.args = "bad_request", ()
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return record.levelno >= self.threshold


def _one_line(message: str) -> str:
    """aiohttp's parser errors span lines, the last a caret under the bad byte."""
    parts = [line.strip() for line in message.splitlines()]
    text = " ".join(part for part in parts if part and part != "^")
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"
