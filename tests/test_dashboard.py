"""The dashboard: its files are served from the installed package, and the page,
driven in a real headless Chromium against a running cronsvc and a real
webhook receiver on 127.0.0.1, does what a person does with it."""

from __future__ import annotations

import asyncio
import re
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cronsvc.api.dashboard import ASSETS, DIRECTORY, PACKAGE, PUBLIC_ROUTES
from cronsvc.config import Config
from cronsvc.service import build_app
from tests.fakes import Receiver
from tests.fixtures_browser import VIEWPORT, artifact
from tests.helpers_api import Client

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Locator, Page

ROOT = Path(__file__).resolve().parent.parent
YEARLY = "0 0 1 1 *"  # never fires during a test
FIRE_WAIT_MS = 20_000
"""A per-second job has fired and its run shows within this."""
README_SCREENSHOT = "11-ledger-gap.png"
"""The README's docs/dashboard.png is a copy of this screenshot: a job's page
with its runs and a tick ledger that has a gap, a failure and a manual run."""


# -- served from the package ---------------------------------------------------


def test_every_dashboard_file_ships_as_package_data() -> None:
    folder = resources.files(PACKAGE).joinpath(*DIRECTORY)
    assert {entry.name for entry in folder.iterdir()} == set(ASSETS)
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["cronsvc"]
    for name in ASSETS:
        assert folder.joinpath(name).is_file()
        path = "/".join(("api", *DIRECTORY, name))
        assert any(fnmatch(path, pattern) for pattern in patterns), path


def test_the_readme_screenshot_is_the_browser_tests_and_small() -> None:
    """Retaken with the ledger test; see README_SCREENSHOT."""
    image = ROOT / "docs" / "dashboard.png"
    assert "](docs/dashboard.png)" in (ROOT / "README.md").read_text()
    header = image.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(header[16:20], "big") == VIEWPORT["width"]
    assert image.stat().st_size < 300_000


async def test_page_and_assets_have_their_types_and_revalidate_by_etag(client: Client) -> None:
    page = await client.get("/")
    assert page.status == 200
    assert page.content_type == "text/html"
    assert page.charset == "utf-8"
    assert page.headers["Cache-Control"] == "no-cache"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert 'src="/dashboard/app.js"' in await page.text()
    for name, content_type in ASSETS.items():
        if name == "index.html":
            continue
        response = await client.get(f"/dashboard/{name}")
        assert response.status == 200, name
        assert response.content_type == content_type, name
        etag = response.headers["ETag"]
        again = await client.get(f"/dashboard/{name}", headers={"If-None-Match": etag})
        assert again.status == 304, name
        assert await again.read() == b""
    head = await client.head("/")
    assert head.status == 200


async def test_only_the_listed_assets_are_served(client: Client) -> None:
    for path in (
        "/dashboard/nothing.js",
        "/dashboard/index.html",
        "/dashboard/..%2fdashboard.py",
        "/dashboard/",
    ):
        response = await client.get(path)
        assert response.status == 404, path
        assert response.content_type == "application/problem+json"


async def test_public_routes_are_the_dashboards_own(client: Client) -> None:
    served = {
        route.resource.canonical
        for route in client.app.router.routes()
        if route.resource is not None and route.handler.__module__ == "cronsvc.api.dashboard"
    }
    assert served == PUBLIC_ROUTES


# -- in a browser --------------------------------------------------------------


@dataclass
class Screen:
    """One browser tab on the dashboard, recording what must not happen: a
    script error, a console error other than an HTTP error answer, or a
    request to any host but the service under test."""

    page: Page
    base: str
    problems: list[str] = field(default_factory=list)

    def watch(self) -> None:
        self.page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        self.page.on("console", self._console)
        self.page.on("request", self._request)

    def _console(self, message: Any) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.problems.append(f"console: {message.text}")

    def _request(self, request: Any) -> None:
        url: str = request.url
        if not (url.startswith(self.base) or url.startswith("data:")):
            self.problems.append(f"fetched {url}")

    async def open(self, fragment: str = "") -> None:
        await self.page.goto(f"{self.base}/{fragment}")

    async def shot(self, name: str) -> None:
        await self.page.screenshot(path=artifact(name), full_page=True)

    def row(self, table: str, text: str) -> Locator:
        return self.page.locator(f"{table} tbody tr", has_text=text)

    def clean(self) -> None:
        assert self.problems == []


async def tab(browser: BrowserContext, base: str) -> Screen:
    page = browser.pages[0] if browser.pages else await browser.new_page()
    screen = Screen(page, base)
    screen.watch()
    return screen


@pytest.fixture
async def screen(browser: BrowserContext, client: Client) -> Screen:
    return await tab(browser, str(client.make_url("")).rstrip("/"))


def expect(target: Any) -> Any:
    from playwright.async_api import expect as playwright_expect

    return playwright_expect(target)


async def create_job(client: Client, **fields: Any) -> dict[str, Any]:
    body = {"cronExpression": YEARLY, "webhookUrl": "https://example.org/hook", **fields}
    response = await client.post("/api/cron", json=body)
    assert response.status == 201, await response.text()
    job: dict[str, Any] = await response.json()
    return job


async def no_more_requests(receiver: Receiver, after: int, quiet_s: float) -> None:
    await asyncio.sleep(quiet_s)
    assert len(receiver.requests) <= after


@pytest.mark.timeout(120)
async def test_create_a_job_see_it_fire_pause_it_and_read_its_history(
    client: Client, receiver: Receiver, screen: Screen
) -> None:
    receiver.reply = '{"pong": "from the receiver"}'
    page = screen.page
    await screen.open()
    await expect(page.locator("#jobs-table")).to_contain_text("No jobs yet")

    await page.get_by_role("link", name="New job").click()
    await page.get_by_label("Name", exact=True).fill("heartbeat")
    await page.get_by_label("Cron expression").fill("*/1 * * * * *")
    await expect(page.locator("#preview li.instant")).to_have_count(5)
    await expect(page.locator("#expression-words")).to_have_text("every second")
    await page.get_by_label("Webhook URL").fill(receiver.url)
    await page.get_by_label("Tags").fill("demo, heartbeat")
    await screen.shot("01-create-form.png")
    await page.get_by_role("button", name="Create job").click()

    await expect(page.locator(".job-head h1")).to_contain_text("heartbeat")
    job_id = page.url.rsplit("/", 1)[1]
    assert re.fullmatch(r"[0-9a-f]{24}", job_id)
    success = screen.row("#history-table", "SUCCESS")
    await expect(success.first).to_be_visible(timeout=FIRE_WAIT_MS)
    assert (await receiver.wait_for(1))[0].json()["jobId"] == job_id
    await expect(page.locator("#job-chart svg.chart polyline.series-duration")).to_have_count(1)
    await expect(page.locator("#job-chart svg.chart polyline.series-lag")).to_have_count(1)
    # At least three: the history refreshes every 3 s, so its count may step past exactly 3.
    await expect(success.nth(2)).to_be_visible(timeout=FIRE_WAIT_MS)
    await screen.shot("02-job-firing.png")

    await success.first.click()
    dialog = page.locator("#execution-dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog.locator("#response-body")).to_have_text('{"pong": "from the receiver"}')
    await expect(dialog).to_contain_text("200")
    assert not re.search(r"\b(null|undefined)\b", await dialog.inner_text())
    await screen.shot("03-response-body.png")
    await dialog.get_by_role("button", name="Close").click()
    await expect(dialog).to_be_hidden()

    await page.get_by_role("link", name="Jobs", exact=True).click()
    toggle = page.get_by_role("switch", name="Active: heartbeat")
    await expect(toggle).to_be_checked()
    await toggle.click()
    await expect(toggle).not_to_be_checked()
    await expect(screen.row("#jobs-table", "heartbeat")).to_contain_text("paused")
    job = await (await client.get(f"/api/cron/{job_id}")).json()
    assert job["isActive"] is False
    # A run already under way may still land; nothing is started after that.
    await asyncio.sleep(1.5)
    await no_more_requests(receiver, len(receiver.requests), quiet_s=2.5)
    await screen.shot("04-paused-in-list.png")

    await page.get_by_role("link", name="heartbeat").click()
    await expect(page.locator("#job-state")).to_have_text("paused")
    await expect(page.locator("#job-chart svg.chart")).to_be_visible()
    await screen.shot("05-job-history.png")
    await page.get_by_label("Show runs with status").select_option("SUCCESS")
    rows = page.locator("#history-table tbody tr")
    await expect(rows.first).to_contain_text("SUCCESS")
    logs = await (await client.get(f"/api/execution-logs/job/{job_id}?status=SUCCESS")).json()
    await expect(rows).to_have_count(len(logs))
    screen.clean()


async def test_live_preview_marks_dst_changes_and_shows_the_apis_field_errors(
    client: Client, screen: Screen
) -> None:
    page = screen.page
    await screen.open("#/jobs/new")
    expression = page.get_by_label("Cron expression")
    await expression.fill("0 12 1 1,4,7,10 *")
    await page.get_by_label("Time zone").fill("Europe/Berlin")
    await expect(page.locator("#expression-words")).to_have_text(
        "on the 1st of January, April, July and October at 12:00"
    )
    instants = page.locator("#preview li.instant")
    await expect(instants).to_have_count(5)
    await expect(instants.first).to_contain_text("12:00:00")
    # Five quarters span a year: the offset changes at least twice (CET <-> CEST).
    assert await page.locator("#preview li.instant.dst").count() >= 2
    await expect(page.locator("#preview .dst-badge").first).to_contain_text("DST")
    await screen.shot("06-preview-dst.png")

    await expression.fill("61 * * * *")
    answer = await client.post("/api/schedule/preview", json={"cronExpression": "61 * * * *"})
    message = next(e["message"] for e in (await answer.json())["errors"])
    error = page.locator("#f-expression-error")
    await expect(error).to_have_text(message)
    await expect(expression).to_have_attribute("aria-invalid", "true")
    await expect(instants).to_have_count(0)
    await screen.shot("07-field-error.png")

    await expression.fill("*/5 * * * *")
    await expect(error).to_be_hidden()
    await expect(instants).to_have_count(5)

    await page.get_by_label("Time zone").fill("Mars/Olympus")
    await expect(page.locator("#f-timezone-error")).to_be_visible()

    await page.get_by_label("Name", exact=True).fill("x")
    await page.get_by_role("button", name="Create job").click()
    await expect(page.locator("#f-url-error")).to_have_text("is required")
    await expect(page.locator("#f-timezone-error")).to_be_visible()
    assert await (await client.get("/api/cron")).json() == []
    screen.clean()


async def test_jobs_table_searches_filters_by_tag_and_follows_pages(
    client: Client, screen: Screen
) -> None:
    for n in range(25):
        await create_job(client, name=f"job-{n:02d}", tags=["even"] if n % 2 == 0 else [])
    paused = await create_job(client, name="other", tags=["even"], timezone="Asia/Tokyo")
    await client.post(f"/api/cron/{paused['id']}/pause")
    page = screen.page
    rows = page.locator("#jobs-table tbody tr")
    await screen.open()
    await expect(rows).to_have_count(20)
    await expect(page.locator("#page-number")).to_have_text("Page 1")
    await expect(rows.first).to_contain_text("every year on 1 January at 00:00")
    await expect(rows.nth(1)).to_contain_text(re.compile(r"in \d+ (days|h)"))
    await screen.shot("08-jobs-table.png")

    await page.locator("#page-next").click()
    await expect(page.locator("#page-number")).to_have_text("Page 2")
    await expect(rows).to_have_count(6)
    await expect(page.locator("#page-next")).to_be_disabled()
    await page.locator("#page-previous").click()
    await expect(rows).to_have_count(20)

    await page.get_by_label("Search jobs by name").fill("job-1")
    await expect(rows).to_have_count(10)  # job-10 to job-19: a prefix, so not job-01
    await page.get_by_label("Search jobs by name").fill("")
    await expect(rows).to_have_count(20)
    await screen.row("#jobs-table", "other").get_by_role("button", name="even").click()
    await expect(page.get_by_label("Filter by tag")).to_have_value("even")
    await expect(rows).to_have_count(14)
    await page.get_by_label("Filter by state").select_option("false")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("other")
    await expect(rows.first).to_contain_text("Asia/Tokyo")
    await expect(page.get_by_role("switch", name="Active: other")).not_to_be_checked()
    screen.clean()


@pytest.mark.timeout(90)
async def test_edit_run_now_and_delete_after_confirming(
    client: Client, receiver: Receiver, screen: Screen
) -> None:
    job = await create_job(client, name="nightly", webhookUrl=receiver.url)
    page = screen.page
    await screen.open(f"#/jobs/{job['id']}")
    await expect(page.locator("#history-table")).to_contain_text("No runs yet")

    await page.locator("#job-edit").click()
    await expect(page.get_by_label("Name", exact=True)).to_have_value("nightly")
    await page.get_by_label("Cron expression").fill("0 6 * * 1-5")
    await page.get_by_label("Time zone").fill("America/New_York")
    await expect(page.locator("#preview li.instant")).to_have_count(5)
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#job-facts")).to_contain_text("on weekdays at 06:00")
    await expect(page.locator("#job-facts")).to_contain_text("America/New_York")
    stored = await (await client.get(f"/api/cron/{job['id']}")).json()
    assert (stored["cronExpression"], stored["timezone"], stored["version"]) == (
        "0 6 * * 1-5",
        "America/New_York",
        2,
    )

    await page.get_by_role("button", name="Run now").click()
    manual = screen.row("#history-table", "manual")
    await expect(manual).to_contain_text("SUCCESS", timeout=FIRE_WAIT_MS)
    assert len(await receiver.wait_for(1)) == 1

    await page.get_by_role("button", name="Delete").click()
    confirm = page.locator("#confirm-dialog")
    await expect(confirm).to_contain_text("Delete nightly?")
    await confirm.get_by_role("button", name="Cancel").click()
    await expect(confirm).to_be_hidden()
    assert (await client.get(f"/api/cron/{job['id']}")).status == 200

    await page.get_by_role("button", name="Delete").click()
    await confirm.get_by_role("button", name="Delete").click()
    await expect(page.locator("#jobs-table")).to_contain_text("No jobs yet")
    assert (await client.get(f"/api/cron/{job['id']}")).status == 404
    screen.clean()


async def test_previewing_an_edit_shows_the_moved_fires_and_saves_nothing_until_save(
    client: Client, screen: Screen
) -> None:
    job = await create_job(client, name="monthly", cronExpression="0 12 1 * *")
    page = screen.page
    await screen.open(f"#/jobs/{job['id']}/edit")
    await page.get_by_label("Cron expression").fill("0 15 1 * *")
    await page.get_by_label("Time zone").fill("Europe/Berlin")
    await page.get_by_role("button", name="Preview changes").click()
    panel = page.locator("#dry-run")
    await expect(panel.locator("#dry-run-changes li")).to_have_count(2)
    await expect(panel.locator("#dry-run-changes")).to_contain_text("cronExpression")
    await expect(panel.locator("#dry-run-changes")).to_contain_text("Europe/Berlin")
    await expect(panel.locator("#dry-run-fires tbody tr")).to_have_count(10)
    # 15:00 in Berlin is 14:00 or 13:00 UTC, never 12:00: every fire moves.
    await expect(panel.locator(".fire-moved")).to_have_count(20)
    assert await panel.locator(".fire-new, .fire-gone").count() == 0
    # Berlin's offset never holds for more than seven months: ten monthly fires cross a change.
    assert await panel.locator("td.fire.dst").count() >= 1
    await expect(panel.locator("td.fire.dst .dst-badge").first).to_have_text("DST")
    await expect(panel.locator("#dry-run-summary")).to_contain_text("10 moved, 0 new, 0 gone")
    await screen.shot("12-dry-run.png")
    stored = await (await client.get(f"/api/cron/{job['id']}")).json()
    assert stored == job

    await page.get_by_label("Cron expression").fill("0 16 1 * *")
    await expect(panel).to_be_hidden()  # a preview of other values than the form's is dropped
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#job-facts")).to_contain_text("Europe/Berlin")
    stored = await (await client.get(f"/api/cron/{job['id']}")).json()
    assert (stored["cronExpression"], stored["version"]) == ("0 16 1 * *", 2)
    screen.clean()


async def test_a_refused_preview_shows_the_field_error_and_saves_nothing(
    client: Client, screen: Screen
) -> None:
    job = await create_job(client, name="monthly")
    page = screen.page
    await screen.open(f"#/jobs/{job['id']}/edit")
    await expect(page.get_by_label("Name", exact=True)).to_have_value("monthly")
    await page.get_by_label("Webhook URL").fill("ftp://example.org/")
    await page.get_by_role("button", name="Preview changes").click()
    await expect(page.locator("#f-url-error")).to_be_visible()
    await expect(page.locator("#dry-run")).to_be_hidden()
    assert await (await client.get(f"/api/cron/{job['id']}")).json() == job
    screen.clean()


async def test_editing_keeps_a_replace_policy_and_a_target_pause_says_why(
    client: Client, receiver: Receiver, screen: Screen
) -> None:
    job = await create_job(
        client, name="replacing", webhookUrl=receiver.url, concurrencyPolicy="replace"
    )
    page = screen.page
    await screen.open(f"#/jobs/{job['id']}")
    await expect(page.locator("#job-facts")).to_contain_text("cancel the running one")
    await page.locator("#job-edit").click()
    await expect(page.locator("#f-concurrency")).to_have_value("replace")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#job-facts")).to_contain_text("(version 2)")
    stored = await (await client.get(f"/api/cron/{job['id']}")).json()
    assert stored["concurrencyPolicy"] == "replace"

    receiver.status = 410  # the target is gone: the job pauses itself
    await page.get_by_role("button", name="Run now").click()
    await expect(page.locator("#job-paused-reason")).to_contain_text(
        "410 Gone", timeout=FIRE_WAIT_MS
    )
    await screen.shot("13-paused-by-target.png")
    screen.clean()


@pytest.mark.timeout(120)
async def test_the_job_view_shows_the_jobs_alert_state(
    make_client: Any, config: Config, start_receiver: Any, browser: BrowserContext
) -> None:
    target: Receiver = await start_receiver()
    alerts: Receiver = await start_receiver()
    client = await make_client(alerts=config.alerts.model_copy(update={"url": alerts.url}))
    screen = await tab(browser, str(client.make_url("")).rstrip("/"))
    job = await create_job(client, name="alerting", webhookUrl=target.url)
    page = screen.page
    await screen.open(f"#/jobs/{job['id']}")
    await expect(page.locator("#job-alert-state")).to_contain_text("not alerting")

    target.status = 500
    await page.get_by_role("button", name="Run now").click()
    await alerts.wait_for(1, within_s=FIRE_WAIT_MS / 1000)
    await page.locator("#history").get_by_role("button", name="Refresh").click()
    await expect(page.locator("#job-alert-state")).to_contain_text(
        "alerting: 1 failed run in a row", timeout=FIRE_WAIT_MS
    )
    screen.clean()


async def settled_runs(client: Client, job_id: str, within_s: float = 10.0) -> list[dict[str, Any]]:
    """The job's execution records, oldest tick first, once none is RUNNING
    (results are written behind)."""
    async with asyncio.timeout(within_s):
        while True:
            response = await client.get(f"/api/execution-logs/job/{job_id}?limit=500")
            runs: list[dict[str, Any]] = await response.json()
            if all(run["status"] != "RUNNING" for run in runs):
                return sorted(runs, key=lambda run: str(run["scheduledAt"]))
            await asyncio.sleep(0.2)


def minutes(instant: datetime) -> str:
    """`instant` as a datetime-local input takes it (UTC wall time, to the minute)."""
    return instant.strftime("%Y-%m-%dT%H:%M")


@pytest.mark.timeout(120)
async def test_ledger_lists_the_owed_ticks_and_shows_a_deleted_records_tick_as_a_gap(
    client: Client, receiver: Receiver, screen: Screen
) -> None:
    receiver.reply = '{"pong": "ledger"}'

    async def fail_the_third() -> None:
        receiver.status = 500 if len(receiver.requests) == 3 else 200

    receiver.before_reply = fail_the_third
    job = await create_job(
        client, name="ledgered", cronExpression="*/1 * * * * *", webhookUrl=receiver.url
    )
    await receiver.wait_for(5, within_s=FIRE_WAIT_MS / 1000)
    assert (await client.post(f"/api/cron/{job['id']}/pause")).status == 200
    assert (await client.post(f"/api/cron/{job['id']}/trigger")).status == 202
    runs = await settled_runs(client, job["id"])
    manual = next(run for run in runs if run["trigger"] == "manual")
    failed = next(run for run in runs if run["status"] == "FAILURE")
    fine = [run for run in runs if run["status"] == "SUCCESS" and run["trigger"] != "manual"]
    gone, kept = fine[1], fine[2]  # a tick in the middle loses its record
    assert (await client.delete(f"/api/execution-logs/{gone['id']}")).status == 200
    # Paused: the ledger holds still, and the page must show what the API answers.
    ledger = await (await client.get(f"/api/cron/{job['id']}/ledger")).json()
    summary = ledger["summary"]
    entry = next(e for e in ledger["entries"] if e["scheduledAt"] == gone["scheduledAt"])
    assert entry["kind"] == "gap"
    successes, failures = summary["byStatus"]["SUCCESS"], summary["byStatus"]["FAILURE"]
    assert successes >= 2
    assert failures == 1
    assert summary["manual"] == 1

    page = screen.page
    await screen.open(f"#/jobs/{job['id']}")
    last_15_min = page.get_by_role("button", name="Last 15 min")
    await last_15_min.click()
    await expect(last_15_min).to_have_attribute("aria-pressed", "true")
    entries = page.locator("#ledger-table tbody tr.ledger-entry")
    await expect(entries).to_have_count(len(ledger["entries"]))
    hole = page.locator(f'#ledger-table tr[data-scheduled-at="{gone["scheduledAt"]}"]')
    await expect(hole).to_have_attribute("data-kind", "gap")
    await expect(hole).to_have_class(re.compile(r"\bkind-gap\b"))
    await expect(hole.locator(".kind-badge")).to_have_text("gap")
    await expect(hole).to_contain_text("no record")
    await expect(page.locator("#ledger-table tr.kind-gap")).to_have_count(summary["gaps"])
    await expect(page.locator("#ledger-strip .cell-gap")).to_have_count(summary["gaps"])
    ticks_owed = page.locator('#ledger-summary [data-count="ticks"]')
    await expect(ticks_owed).to_have_text(f"{summary['ticks']} ticks owed")
    gaps = f"{summary['gaps']} gap{'' if summary['gaps'] == 1 else 's'}"
    await expect(page.locator('#ledger-summary [data-count="gaps"]')).to_have_text(gaps)
    await expect(page.locator('#ledger-summary [data-count="SUCCESS"]')).to_have_text(
        f"SUCCESS {successes}"
    )
    settled = page.locator('#ledger-table tr[data-kind="tick"][data-status="SUCCESS"]')
    await expect(settled).to_have_count(successes)
    failure = page.locator(f'#ledger-table tr[data-execution-id="{failed["id"]}"]')
    await expect(failure).to_have_attribute("data-status", "FAILURE")
    await expect(failure).to_have_class(re.compile(r"\balarming\b"))
    await expect(failure).to_contain_text("FAILURE")
    await expect(page.locator('#ledger-summary [data-count="FAILURE"]')).to_have_text("FAILURE 1")
    by_hand = page.locator(f'#ledger-table tr[data-execution-id="{manual["id"]}"]')
    await expect(by_hand).to_have_attribute("data-kind", "manual")
    await expect(by_hand.locator(".kind-badge")).to_have_text("manual run")
    await expect(page.locator('#ledger-summary [data-count="manual"]')).to_have_text("1 manual run")
    await expect(page.locator("#ledger-incomplete")).to_be_hidden()
    await screen.shot(README_SCREENSHOT)

    await page.locator(f'#ledger-table tr[data-execution-id="{kept["id"]}"]').click()
    dialog = page.locator("#execution-dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog.locator("#response-body")).to_have_text('{"pong": "ledger"}')
    await expect(dialog).to_contain_text(kept["id"])
    await dialog.get_by_role("button", name="Close").click()
    await expect(dialog).to_be_hidden()

    await page.get_by_role("button", name="Custom…").click()
    since = page.get_by_label("Since (UTC)")
    await expect(since).to_have_value(re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}"))
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    too_early = now - timedelta(days=40)
    await since.fill(minutes(too_early))
    await page.get_by_label("Until (UTC)").fill(minutes(now))
    await page.get_by_role("button", name="Show", exact=True).click()
    range_ = {"since": too_early.isoformat(), "until": now.isoformat()}
    refused = await client.get(f"/api/cron/{job['id']}/ledger", params=range_)
    assert refused.status == 400
    error = (await refused.json())["errors"][0]
    shown = page.locator("#ledger-error")
    await expect(shown).to_contain_text(f"{error['field']}: {error['message']}")
    await expect(shown).to_contain_text("Narrow the range")
    await expect(page.locator("#ledger-table")).to_be_hidden()
    await screen.shot("12-ledger-range-too-wide.png")

    await last_15_min.click()
    await expect(shown).to_be_empty()
    await expect(entries).to_have_count(len(ledger["entries"]))
    screen.clean()


async def test_ledger_notes_when_the_kept_schedule_history_starts_inside_the_range(
    client: Client, screen: Screen
) -> None:
    job = await create_job(client, name="fickle")
    for _ in range(51):  # 102 revisions: the oldest are trimmed (100 kept)
        assert (await client.post(f"/api/cron/{job['id']}/pause")).status == 200
        assert (await client.post(f"/api/cron/{job['id']}/resume")).status == 200
    ledger = await (await client.get(f"/api/cron/{job['id']}/ledger")).json()
    assert ledger["complete"] is False

    page = screen.page
    await screen.open(f"#/jobs/{job['id']}")
    note = page.locator("#ledger-incomplete")
    await expect(note).to_be_visible()
    await expect(note).to_contain_text("Incomplete")
    known_from = ledger["knownFrom"]  # 2026-01-01T00:00:00.000Z, shown in the job's zone (UTC)
    await expect(note).to_contain_text(f"{known_from[:10]} {known_from[11:19]} +00:00")
    await expect(page.locator("#ledger-table")).to_contain_text("Nothing owed")
    screen.clean()


async def test_cluster_view_shows_the_instance_as_leader(client: Client, screen: Screen) -> None:
    page = screen.page
    await screen.open("#/cluster")
    rows = page.locator("#cluster-table tbody tr")
    await expect(rows).to_have_count(1)
    await expect(page.locator("#cluster-table .badge.leader")).to_have_count(1)
    cluster = await (await client.get("/api/cluster")).json()
    await expect(page.locator("#cluster-leader")).to_contain_text(cluster["leader"])
    await expect(rows.first).to_contain_text(cluster["instances"][0]["host"])
    await screen.shot("09-cluster.png")
    screen.clean()


DESCRIBED = {
    "* * * * *": "every minute",
    "*/5 * * * *": "every 5 minutes",
    "*/1 * * * * *": "every second",
    "*/10 * * * * *": "every 10 seconds",
    "0 */5 * * * *": "every 5 minutes",
    "15 * * * *": "every hour at minute 15",
    "0 */2 * * *": "every 2 hours, on the hour",
    "30 2 * * *": "every day at 02:30",
    "30 0 9 * * *": "every day at 09:00:30",
    "0 9,17 * * *": "every day at 09:00 and 17:00",
    "0 9 * * 1-5": "on weekdays at 09:00",
    "0 9 * * MON-FRI": "on weekdays at 09:00",
    "*/15 * * * 1-5": "every 15 minutes on weekdays",
    "0 9-17 * * 1-5": "every hour from 09:00 to 17:00 on weekdays",
    "0 8 * * 1": "every Monday at 08:00",
    "0 8 * * 7": "every Sunday at 08:00",
    "0 9 * * mon,wed,fri": "every Monday, Wednesday and Friday at 09:00",
    "0 10 * * 0,6": "every Saturday and Sunday at 10:00",
    "0 0 1 * *": "on the 1st of every month at 00:00",
    "0 6 22 * *": "on the 22nd of every month at 06:00",
    "0 0 1 1 *": "every year on 1 January at 00:00",
    "@yearly": "every year on 1 January at 00:00",
    "@monthly": "on the 1st of every month at 00:00",
    "@weekly": "every Sunday at 00:00",
    "@daily": "every day at 00:00",
    "@midnight": "every day at 00:00",
    "@hourly": "every hour, on the hour",
    # Shapes without a phrase fall back to the expression alone.
    "0 0 13 * 5": None,
    "0 12 1 */3 *": None,
    "0 0 L * *": None,
    "5 4 * * sun#2": None,
    "not cron": None,
}


async def test_schedules_are_put_in_words_or_left_as_written(screen: Screen) -> None:
    await screen.open()
    described = await screen.page.evaluate(
        """async (expressions) => {
            const { describe } = await import("/dashboard/describe.js");
            return expressions.map((expression) => describe(expression));
        }""",
        list(DESCRIBED),
    )
    assert dict(zip(DESCRIBED, described, strict=True)) == DESCRIBED
    screen.clean()


WALL_TIMES = [
    ("2026-03-01T09:00", "UTC", "2026-03-01T09:00:00.000Z"),
    ("2026-01-15T12:30:15", "Europe/Berlin", "2026-01-15T11:30:15.000Z"),
    ("2026-07-15T12:30", "Europe/Berlin", "2026-07-15T10:30:00.000Z"),
    ("2026-07-15T12:00", "Asia/Kathmandu", "2026-07-15T06:15:00.000Z"),
    ("2026-07-15T12:00", "America/St_Johns", "2026-07-15T14:30:00.000Z"),
    # Skipped by a change to summer time: read with the offset before it (03:30 after).
    ("2026-03-29T02:30", "Europe/Berlin", "2026-03-29T01:30:00.000Z"),
    ("2026-03-08T02:30", "America/New_York", "2026-03-08T07:30:00.000Z"),
    # Repeated by a change back: the earlier of its two instants.
    ("2026-10-25T02:30", "Europe/Berlin", "2026-10-25T00:30:00.000Z"),
    ("2026-11-01T01:30", "America/New_York", "2026-11-01T05:30:00.000Z"),
    ("2026-07-15 12:00", "UTC", None),
    ("2026-07-15T12:00", "Mars/Olympus", None),
]


async def test_custom_ledger_ranges_read_wall_times_in_the_jobs_zone(screen: Screen) -> None:
    await screen.open()
    read = await screen.page.evaluate(
        """async (cases) => {
            const { fromWallTime, wallTime } = await import("/dashboard/format.js");
            return cases.map(([wall, zone]) => {
                const instant = fromWallTime(wall, zone);
                return [instant, instant && wallTime(instant, zone)];
            });
        }""",
        [[wall, zone] for wall, zone, _ in WALL_TIMES],
    )
    assert [instant for instant, _ in read] == [expected for _, _, expected in WALL_TIMES]
    cases = zip(WALL_TIMES, read, strict=True)
    back = {(wall, zone): wall_again for (wall, zone, _), (_, wall_again) in cases}
    assert back["2026-01-15T12:30:15", "Europe/Berlin"] == "2026-01-15T12:30:15"
    assert back["2026-07-15T12:00", "America/St_Johns"] == "2026-07-15T12:00:00"
    assert back["2026-10-25T02:30", "Europe/Berlin"] == "2026-10-25T02:30:00"
    assert back["2026-03-29T02:30", "Europe/Berlin"] == "2026-03-29T03:30:00"
    screen.clean()


TOKEN = "dashboard-test-token"


@pytest.fixture
async def guarded(config: Config) -> AsyncIterator[tuple[Client, list[str | None]]]:
    """cronsvc with an API token configured (its own access check, which lets
    the dashboard's static files through). Records the Authorization header
    of each API call, whatever the check then answers."""
    seen: list[str | None] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        resource = request.match_info.route.resource
        if resource is None or resource.canonical not in PUBLIC_ROUTES:
            seen.append(request.headers.get("Authorization"))
        response: web.StreamResponse = await handler(request)
        return response

    tokens = config.server.model_copy(update={"api_tokens": [TOKEN]})
    app = build_app(config.model_copy(update={"server": tokens}))
    app.middlewares.insert(0, record)  # outermost: sees refused calls too
    async with TestClient(TestServer(app, host="127.0.0.1")) as guarded_client:
        yield guarded_client, seen


async def test_the_dashboard_asks_for_a_token_and_keeps_it_for_the_tab(
    guarded: tuple[Client, list[str | None]], browser: BrowserContext
) -> None:
    guarded_client, seen = guarded
    screen = await tab(browser, str(guarded_client.make_url("")).rstrip("/"))
    page = screen.page
    await screen.open()
    dialog = page.locator("#token-dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text("needs an API token")
    await screen.shot("10-token-prompt.png")
    await page.get_by_label("Token", exact=True).fill("wrong")
    await dialog.get_by_role("button", name="Use token").click()
    await expect(dialog).to_contain_text("refused this token")
    await page.get_by_label("Token", exact=True).fill(TOKEN)
    await dialog.get_by_role("button", name="Use token").click()
    await expect(dialog).to_be_hidden()
    await expect(page.locator("#jobs-table")).to_contain_text("No jobs yet")
    assert await page.evaluate("sessionStorage.getItem('cronsvc.apiToken')") == TOKEN
    assert await page.evaluate("localStorage.length") == 0
    assert seen[-1] == f"Bearer {TOKEN}"

    await page.reload()
    await expect(page.locator("#jobs-table")).to_contain_text("No jobs yet")
    await expect(dialog).to_be_hidden()
    assert seen[-1] == f"Bearer {TOKEN}"

    other = await browser.new_page()
    await other.goto(f"{screen.base}/#/cluster")
    await expect(other.locator("#token-dialog")).to_be_visible()
    await other.close()
    screen.clean()


async def test_create_a_job_with_alerts_through_the_form_and_see_its_policy(
    client: Client, screen: Screen
) -> None:
    page = screen.page
    await screen.open("#/jobs/new")
    await page.get_by_label("Name", exact=True).fill("alerting")
    await page.get_by_label("Cron expression").fill(YEARLY)
    await page.get_by_label("Webhook URL").fill("https://example.org/hook")
    await expect(page.get_by_label("Alert URL")).to_be_hidden()  # the default, until asked
    await page.get_by_label("Alerts", exact=True).select_option("own")
    await page.get_by_label("Alert URL").fill("https://alerts.example.org/hook")
    await page.get_by_label("Alert after failed runs").fill("3")
    await page.get_by_label("Alert on recovery").uncheck()
    await page.get_by_label("Alert format").select_option("slack")
    secret = "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
    await page.get_by_label("Alert secret").fill(secret)
    await screen.shot("14-create-with-alerts.png")
    await page.get_by_role("button", name="Create job").click()

    facts = page.locator("#job-alerts")
    await expect(facts).to_contain_text("slack alert to https://alerts.example.org/hook")
    await expect(facts).to_contain_text("3 runs in a row")
    await expect(facts).to_contain_text("signed with its own secret")
    await expect(page.locator("#job-alert-state")).to_contain_text("not alerting")
    assert secret.removeprefix("whsec_") not in await page.content()
    job_id = page.url.rsplit("/", 1)[1]
    stored = await (await client.get(f"/api/cron/{job_id}")).json()
    assert stored["alerts"] == {
        "enabled": True,
        "url": "https://alerts.example.org/hook",
        "after": 3,
        "onRecovery": False,
        "format": "slack",
        "hasSecret": True,
    }

    # Edited and saved without touching the secret: kept; then turned off.
    await page.locator("#job-edit").click()
    await expect(page.get_by_label("Alert URL")).to_have_value("https://alerts.example.org/hook")
    await page.get_by_label("Alert after failed runs").fill("5")
    await page.get_by_role("button", name="Save").click()
    await expect(facts).to_contain_text("5 runs in a row")
    await expect(facts).to_contain_text("signed with its own secret")
    await page.locator("#job-edit").click()
    await page.get_by_label("Alerts", exact=True).select_option("off")
    await page.get_by_role("button", name="Save").click()
    await expect(facts).to_have_text("off for this job")
    stored = await (await client.get(f"/api/cron/{job_id}")).json()
    assert stored["alerts"]["enabled"] is False
    screen.clean()


async def test_an_alert_url_the_api_refuses_is_shown_at_its_field(
    client: Client, screen: Screen
) -> None:
    job = await create_job(client, name="refused")
    page = screen.page
    await screen.open(f"#/jobs/{job['id']}/edit")
    await expect(page.get_by_label("Name", exact=True)).to_have_value("refused")
    await page.get_by_label("Alerts", exact=True).select_option("own")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#f-alerts-url-error")).to_contain_text("is required")
    assert await (await client.get(f"/api/cron/{job['id']}")).json() == job
    screen.clean()
