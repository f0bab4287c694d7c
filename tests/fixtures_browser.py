"""A real headless Chromium, driven by Playwright for Python, for the dashboard tests.

The browser is the system's (Debian's `chromium` package, or the binary named
by `CRONSVC_TEST_CHROMIUM`): Playwright never downloads one. Without a
Chromium or without Playwright, the tests that use `browser` are skipped and
the skip says which is missing. Each test gets a fresh profile directory and
Chromium's background traffic turned off, so it opens no connection beyond
the loopback server under test.

Screenshots are written to `ARTIFACTS`; the run's summary names the directory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext

CHROMIUM_ENV = "CRONSVC_TEST_CHROMIUM"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"
VIEWPORT = {"width": 1280, "height": 860}
WAIT_MS = 10_000
"""Playwright's bound on every action and navigation."""

written: list[Path] = []


def find_chromium() -> tuple[str | None, str]:
    """The Chromium to drive, or None and the reason there is none."""
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        if os.access(configured, os.X_OK):
            return configured, ""
        return None, f"{CHROMIUM_ENV}={configured} is not an executable file"
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found, ""
    return None, (
        f"no Chromium at /usr/bin/chromium or on PATH (install Debian's chromium "
        f"package, or set {CHROMIUM_ENV})"
    )


def artifact(name: str) -> Path:
    """Where a screenshot called `name` goes; remembered for the summary."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    written.append(path)
    return path


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """A Chromium profile of its own for one test; skips without Chromium or Playwright."""
    executable, reason = find_chromium()
    if executable is None:
        pytest.skip(f"dashboard browser tests need Chromium: {reason}")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("dashboard browser tests need Playwright for Python (pip install playwright)")
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,  # type: ignore[arg-type]
            timeout=30_000,
        )
        context.set_default_timeout(WAIT_MS)
        context.set_default_navigation_timeout(WAIT_MS)
        try:
            yield context
        finally:
            await context.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if written:
        terminalreporter.write_line(f"dashboard screenshots ({len(written)}): {ARTIFACTS}")
