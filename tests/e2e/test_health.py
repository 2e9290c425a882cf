"""An admin's screen says when the broker dropped messages meant for the hub."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from hub.auth import add_user
from tests.e2e.conftest import PASSWORD, SCREEN, Site, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.mqtt, pytest.mark.db]


async def test_an_admin_sees_the_broker_drops_and_a_regulator_does_not(
    site: Site, browser: Browser
) -> None:
    """The banner follows /readyz: hidden while nothing is lost, the count once it is."""
    await add_user(site.hub.pool, "ops", "admin", PASSWORD)
    page = await browser.new_page(viewport=SCREEN)
    await sign_in(page, f"{site.base}/", "ops")
    banner = page.get_by_test_id("hub-health")
    await expect(banner).to_be_attached()
    await expect(banner).to_be_hidden()

    # What the hub's $SYS watcher counts when Mosquitto drops messages for it
    # (tests/integration/test_broker_drops.py drives that on a real broker).
    site.hub.metrics.broker_dropped_seen = 37
    await page.reload()
    await page.wait_for_selector("body[data-live=true]", timeout=15_000)
    await expect(banner).to_be_visible(timeout=15_000)
    await expect(banner.locator("[data-problem=broker-dropped]")).to_contain_text("37 条")
    await page.get_by_test_id("lang-toggle").click()
    await expect(banner.locator("[data-problem=broker-dropped]")).to_contain_text(
        "dropped 37 messages"
    )

    other = await browser.new_page(viewport=SCREEN)
    await sign_in(other, f"{site.base}/", "regulator")
    await expect(other.get_by_test_id("page-title")).to_be_visible()
    await expect(other.get_by_test_id("hub-health")).to_have_count(0)
