"""With CAREHUB_MAP_TILE_URL set, the regulator's map shows tiles under the facilities."""

from __future__ import annotations

import base64
import re

import pytest
from playwright.async_api import Browser, Route, expect

from hub.auth import add_user
from hub.settings import Settings
from tests.e2e.conftest import SCREEN, serve, sign_in
from tests.e2e.page_watch import policy_refusals

pytestmark = [pytest.mark.browser, pytest.mark.mqtt, pytest.mark.db]

# A 1x1 PNG: the tile server is played by the test, so nothing leaves the machine.
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYPj/HwADAgH/kKw+8AAAAABJRU5ErkJggg=="
)
TILES = "http://tiles.test/{z}/{x}/{y}.png"


async def test_tiles_are_drawn_under_the_map_when_a_tile_url_is_set(
    migrated: Settings, browser: Browser
) -> None:
    """The page asks the configured tile server for tiles and draws no offline box."""
    requested: list[str] = []

    async def tile(route: Route) -> None:
        requested.append(route.request.url)
        await route.fulfill(status=200, content_type="image/png", body=PIXEL)

    async with serve(migrated.model_copy(update={"tile_url": TILES})) as site:
        await add_user(site.hub.pool, "regulator", "regulator", "tiles pass 1", district="鹿城区")
        page = await browser.new_page(viewport=SCREEN)
        refused = policy_refusals(page)
        await page.route("http://tiles.test/**", tile)
        await sign_in(page, f"{site.base}/", "regulator", "tiles pass 1")
        await expect(page.get_by_test_id("map-facility")).to_have_count(2)
        await expect(page.locator("img.leaflet-tile-loaded").first).to_be_attached(timeout=10_000)
        assert requested, "no tile was requested"
        assert all(url.startswith("http://tiles.test/") for url in requested)
        await expect(page.get_by_test_id("map")).not_to_have_class(re.compile(r"\buntiled\b"))
        # The page policy admits the tile server, and everything else the page needs.
        assert refused == []
