"""Fixtures for the browser tests: headless Chromium (Debian's, at /usr/bin/chromium), the
hub serving the built dashboards on a free port, and accounts to sign in with."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, ViewportSize, async_playwright

from hub.api.dashboards import REPO_DIST
from hub.auth import add_user
from hub.runtime import Hub
from hub.settings import Settings
from tests.fix_hub import FACILITY
from tests.fix_live import serve_hub

CHROMIUM = Path(os.environ.get("CAREHUB_TEST_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PASSWORD = "e2e password 7"  # noqa: S105 - the browser tests' accounts
DISTRICT = "鹿城区"
# Viewports: a laptop for the regulator's screen, a phone for the staff console.
SCREEN: ViewportSize = {"width": 1600, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def dashboards_built() -> Path:
    """The built pages; `make setup` (or `npm ci && npm run build` in dashboards/) makes them."""
    if not (REPO_DIST / "index.html").is_file() or not (REPO_DIST / "console/index.html").is_file():
        pytest.fail(f"{REPO_DIST} is not built: run `make setup` (npm ci + npm run build)")
    if not CHROMIUM.is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    return REPO_DIST


@pytest.fixture
async def browser(dashboards_built: Path) -> AsyncIterator[Browser]:
    """Headless Chromium; audio may start without a tap, as a phone's would after one."""
    del dashboards_built
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--autoplay-policy=no-user-gesture-required", "--lang=zh-CN"],
        )
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Site:
    """The hub under test, serving HTTP on a port of its own."""

    hub: Hub
    base: str


@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[Site]:
    """create_app(settings), lifespan and all, under uvicorn on a free port."""
    async with serve_hub(settings) as server:
        # The tests' fake devices publish at once: the hub has to be subscribed first.
        await server.hub.wait_connected(15)
        yield Site(server.hub, f"http://127.0.0.1:{server.port}")


@pytest.fixture
async def site(migrated: Settings) -> AsyncIterator[Site]:
    """The hub on the test broker and database (tests.fix_hub's site), with a regulator of
    its district and a staff member of its first facility."""
    async with serve(migrated) as running:
        await add_accounts(running)
        yield running


async def add_accounts(running: Site) -> None:
    """A regulator of the test district and a staff member of its first facility."""
    await add_user(
        running.hub.pool,
        "regulator",
        "regulator",
        PASSWORD,
        district=DISTRICT,
        display_name="鹿城区 监管员",
    )
    await add_user(
        running.hub.pool,
        "nurse",
        "staff",
        PASSWORD,
        facility_id=FACILITY,
        display_name="王护理员",
    )


async def sign_in(page: Page, url: str, username: str, password: str = PASSWORD) -> None:
    """Open `url`, sign in through the form and wait for the first snapshot on screen."""
    await page.goto(url)
    await page.get_by_test_id("login-username").fill(username)
    await page.get_by_test_id("login-password").fill(password)
    await page.get_by_test_id("login-submit").click()
    await page.wait_for_selector("body[data-live=true]", timeout=15_000)


async def screenshot(page: Page, name: str) -> Path:
    """Save a screenshot for the README (docs/screenshots), as a person would see the page."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    await page.screenshot(path=str(path))
    return path
