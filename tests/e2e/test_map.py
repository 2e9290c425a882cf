"""The regulator's district map in headless Chromium, offline: the district outlines and
names, every facility's name readable beside its dot at district zoom, clusters at 500
facilities that open up as the map zooms in, and the demo's two districts, each framed
for its own regulator and both for an admin."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from hub.auth import add_user
from hub.settings import Settings
from simulators import District, build_demo_district
from simulators.district import build_district
from tests.e2e.conftest import DISTRICT, PASSWORD, SCREEN, screenshot, serve, sign_in
from tests.e2e.page_watch import policy_refusals
from tests.fix_hub import connect_db

pytestmark = [pytest.mark.browser, pytest.mark.mqtt, pytest.mark.db, pytest.mark.slow]

# tests.fix_hub's site registers two facilities of its own in the district.
SITE_FACILITIES = 2

# Every label and dot on screen, as the person sees them: box, text, whether shown.
SHOWN = """
() => {
  const box = (el) => {
    const r = el.getBoundingClientRect();
    return [r.left, r.top, r.right, r.bottom];
  };
  const names = document.querySelectorAll('[data-testid="map-facility"] .map-label');
  const labels = [...names].map((el) => ({
    id: el.parentElement.dataset.facilityId,
    text: el.textContent,
    shown: getComputedStyle(el).visibility === 'visible',
    box: box(el),
  }));
  const clusters = [...document.querySelectorAll('[data-testid="map-cluster"]')].map((el) => ({
    count: Number(el.dataset.count),
    ids: el.dataset.facilityIds.split(' '),
    box: box(el),
  }));
  return { labels, clusters };
}
"""


async def _register(
    settings: Settings, count: int, district: District | None = None
) -> dict[str, str]:
    """The simulated district's first `count` facilities (or `district`'s), as an import
    would store them."""
    district = district or build_district(count, district=DISTRICT)
    async with await connect_db(settings) as db, db.cursor() as cur:
        await cur.executemany(
            "INSERT INTO facilities (id, name, kind, district, address, latitude, longitude,"
            " registration_no, beds, childcare_places)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    f.id,
                    f.name,
                    f.kind,
                    f.district,
                    f.address,
                    f.latitude,
                    f.longitude,
                    f.registration_no,
                    f.beds or 0,
                    f.childcare_places or 0,
                )
                for f in district.facilities
            ],
        )
    names = {f.id: f.name for f in district.facilities}
    names.update({"f-sun": "阳光托育养老中心", "f-moon": "月亮湾颐养院"})
    return names


def _overlap(a: list[float], b: list[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


async def _shown(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate(SHOWN)
    return result


def _accounted(shown: dict[str, Any]) -> set[str]:
    """Every facility on screen: a dot of its own, or counted in a cluster."""
    ids = {label["id"] for label in shown["labels"]}
    for cluster in shown["clusters"]:
        assert len(cluster["ids"]) == cluster["count"], cluster
        ids.update(cluster["ids"])
    return ids


async def test_the_district_map_draws_outlines_and_names_every_facility(
    migrated: Settings, browser: Browser
) -> None:
    """The demo's 20 facilities: outlines, district names, readable facility names."""
    names = await _register(migrated, 20)
    async with await connect_db(migrated) as db:
        # Registered without coordinates: not on the map, and the map says so.
        await db.execute(
            "INSERT INTO facilities (id, name, kind, district, beds, childcare_places)"
            " VALUES ('lc-nowhere', '未定位托育点', 'childcare', %s, 0, 20)",
            (DISTRICT,),
        )
    async with serve(migrated) as site:
        await add_user(site.hub.pool, "regulator", "regulator", PASSWORD, district=DISTRICT)
        page = await browser.new_page(viewport=SCREEN)
        refused = policy_refusals(page)
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        await sign_in(page, f"{site.base}/", "regulator")

        # The outlines: drawn as paths, the two districts named on the map.
        await expect(
            page.locator(".map path.leaflet-interactive, .map svg path").first
        ).to_be_attached()
        districts = page.get_by_test_id("map-district")
        await expect(districts).to_have_count(2)
        assert sorted(await districts.all_text_contents()) == ["瓯海区", "鹿城区"]
        await expect(page.locator(".leaflet-control-attribution")).to_contain_text("AMap")
        await expect(page.get_by_test_id("map-unplaced")).to_have_text(
            "1 家机构未登记经纬度，不在地图上"
        )

        await page.wait_for_timeout(500)  # the map settles its first layout
        await screenshot(page, "map.png")
        shown = await _shown(page)
        assert _accounted(shown) == set(names), "a facility is missing from the map"
        # At district zoom most facilities stand alone, each with its own name beside it
        # (overlapping dots merge, so some are counted in a cluster instead).
        visible = [label for label in shown["labels"] if label["shown"]]
        assert len(shown["labels"]) >= len(names) // 3, shown
        assert len(visible) >= 0.8 * len(shown["labels"]), shown["labels"]
        for label in shown["labels"]:
            assert label["text"] == names[label["id"]], label
        # No name covers another, nor a cluster: each one reads without hovering.
        for i, one in enumerate(visible):
            for other in visible[i + 1 :]:
                assert not _overlap(one["box"], other["box"]), (one, other)
            for cluster in shown["clusters"]:
                assert not _overlap(one["box"], cluster["box"]), (one, cluster)
        for label in visible:
            await expect(
                page.locator(f'[data-facility-id="{label["id"]}"] .map-label')
            ).to_be_visible()

        # Zoomed in on the city centre, the clusters there come apart into named dots.
        before = {label["id"] for label in visible}
        centre = page.get_by_test_id("map-cluster").first
        await centre.click()
        await page.wait_for_timeout(800)
        zoomed = await _shown(page)
        named = {label["id"] for label in zoomed["labels"] if label["shown"]}
        assert named - before, "zooming in named no facility that was not named before"

        # A facility's name opens its drill-down, as its dot does.
        named_id = visible[0]["id"]
        await page.locator(f'[data-facility-id="{named_id}"] .map-label').click()
        await expect(page.get_by_test_id("drilldown")).to_have_attribute(
            "data-loaded", "true", timeout=10_000
        )
        await expect(page.get_by_test_id("drill-title")).to_contain_text(names[named_id])
        await page.get_by_test_id("drill-close").click()

        # Offline: nothing but the hub's own origin was asked for, and the policy held.
        foreign = [url for url in requests if not url.startswith(site.base)]
        assert foreign == [], foreign
        assert refused == []


async def test_500_facilities_cluster_and_open_up_as_the_map_zooms_in(
    migrated: Settings, browser: Browser
) -> None:
    """500 facilities: numbered clusters hold every one; a click on one zooms into it."""
    names = await _register(migrated, 500)
    async with serve(migrated) as site:
        await add_user(site.hub.pool, "regulator", "regulator", PASSWORD, district=DISTRICT)
        page = await browser.new_page(viewport=SCREEN)
        await sign_in(page, f"{site.base}/", "regulator")
        await page.wait_for_timeout(500)
        shown = await _shown(page)
        assert _accounted(shown) == set(names), "a facility is missing from the map"
        assert len(names) == 500 + SITE_FACILITIES
        clusters = shown["clusters"]
        assert clusters, "500 facilities and not one cluster"
        # Clusters keep the map readable: far fewer marks than facilities.
        assert len(shown["labels"]) + len(clusters) < 200, (len(shown["labels"]), len(clusters))
        for one in clusters:
            assert one["count"] >= 2
        await expect(page.get_by_test_id("map-cluster").first).to_be_visible()
        # Names that are shown never cover each other, clusters included.
        visible = [label for label in shown["labels"] if label["shown"]]
        for label in visible:
            for cluster in clusters:
                assert not _overlap(label["box"], cluster["box"]), (label, cluster)
        await screenshot(page, "map-500.png")

        # A click on the biggest cluster zooms into it: its facilities come apart.
        biggest = max(clusters, key=lambda one: one["count"])
        first_id = biggest["ids"][0]
        selector = f'[data-testid="map-cluster"][data-facility-ids~="{first_id}"]'
        await page.locator(selector).click()
        await page.wait_for_timeout(800)
        after = await _shown(page)
        inside = set(biggest["ids"])
        alone = {label["id"] for label in after["labels"]} & inside
        smaller = [one for one in after["clusters"] if set(one["ids"]) & inside]
        assert alone or len(smaller) > 1, "the cluster did not open up"
        assert all(one["count"] < biggest["count"] for one in smaller), smaller

        # A cluster says what it holds in the page's language, English one click away.
        cluster = page.get_by_test_id("map-cluster").first
        await expect(cluster).to_have_attribute("title", re.compile(r"^\d+ 家机构，点击放大\n"))
        await page.get_by_test_id("lang-toggle").click()
        await expect(cluster).to_have_attribute(
            "title", re.compile(r"^\d+ facilities: click to zoom in\n")
        )


async def test_bad_registry_data_neither_breaks_the_map_nor_runs_as_markup(
    migrated: Settings, browser: Browser
) -> None:
    """A home at 0, 0, one named with markup, one with a very long name: the district stays
    framed, the far one is counted, names stay text and a long one stays within bounds."""
    markup = '<img src=x onerror="document.title=1">阳光<b>托育</b>'
    long_name = "温州市鹿城区" + "很长的名字" * 30
    async with await connect_db(migrated) as db:
        await db.execute(
            "INSERT INTO facilities (id, name, kind, district, latitude, longitude, beds,"
            " childcare_places) VALUES"
            " ('lc-null-island', '零点颐养院', 'elderly', %s, 0, 0, 10, 0),"
            " ('lc-markup', %s, 'childcare', %s, 28.05, 120.60, 0, 20),"
            " ('lc-long', %s, 'childcare', %s, 28.08, 120.52, 0, 20)",
            (DISTRICT, markup, DISTRICT, long_name, DISTRICT),
        )
    async with serve(migrated) as site:
        await add_user(site.hub.pool, "regulator", "regulator", PASSWORD, district=DISTRICT)
        page = await browser.new_page(viewport=SCREEN)
        refused = policy_refusals(page)
        await sign_in(page, f"{site.base}/", "regulator")
        await page.wait_for_timeout(500)
        note = page.get_by_test_id("map-unplaced")
        await expect(note).to_have_text("1 家机构的经纬度远在辖区外，请核对")
        # The district is framed, not the Gulf of Guinea: 鹿城区's name is on screen.
        await expect(
            page.get_by_test_id("map-district").filter(has_text="鹿城区")
        ).to_be_in_viewport()
        # Markup in a name is shown as its text, never run.
        label = page.locator('[data-facility-id="lc-markup"] .map-label')
        await expect(label).to_have_text(markup)
        assert await page.locator(".map img:not(.leaflet-tile)").count() == 0
        assert await page.title() != "1"
        # A very long name is cut with an ellipsis, inside the map.
        long_label = page.locator('[data-facility-id="lc-long"] .map-label')
        width = await long_label.evaluate("el => el.getBoundingClientRect().width")
        assert 0 < width < 400, width
        assert refused == []


async def _on_map(page: Page) -> set[str]:
    """Every facility the map holds, alone or in a cluster."""
    await expect(page.get_by_test_id("map-facility").first).to_be_attached()
    return _accounted(await _shown(page))


async def test_each_regulator_of_the_demo_sees_their_district_and_an_admin_both(
    migrated: Settings, browser: Browser, tmp_path: Path
) -> None:
    """The demo's 12 + 8: 瓯海区's regulator has 瓯海区 framed with its homes only; the
    admin has all of them, and picks the district whose report to download."""
    demo = build_demo_district(20)
    names = await _register(migrated, 20, demo)
    ouhai = {f.id for f in demo.part("瓯海区").facilities}
    lucheng = {f.id for f in demo.part("鹿城区").facilities} | {"f-sun", "f-moon"}
    async with serve(migrated) as site:
        pool = site.hub.pool
        await add_user(pool, "regulator", "regulator", PASSWORD, district="鹿城区")
        await add_user(pool, "regulator-oh", "regulator", PASSWORD, district="瓯海区")
        await add_user(pool, "admin", "admin", PASSWORD)

        page = await browser.new_page(viewport=SCREEN)
        await sign_in(page, f"{site.base}/", "regulator-oh")
        assert await _on_map(page) == ouhai
        await expect(
            page.get_by_test_id("map-district").filter(has_text="瓯海区")
        ).to_be_in_viewport()
        await expect(page.get_by_test_id("kpi-facilities-online-value")).to_have_text(
            re.compile(rf"^\d+ / {len(ouhai)}$")
        )
        # A regulator's exports are their district's: nothing to pick.
        assert await page.get_by_test_id("export-district").count() == 0
        await page.close()

        page = await browser.new_page(viewport=SCREEN)
        await sign_in(page, f"{site.base}/", "regulator")
        assert await _on_map(page) == lucheng
        await page.close()

        page = await browser.new_page(viewport=SCREEN, accept_downloads=True)
        await sign_in(page, f"{site.base}/", "admin")
        assert await _on_map(page) == set(names) == lucheng | ouhai
        await expect(page.get_by_test_id("kpi-facilities-online-value")).to_have_text(
            re.compile(rf"^\d+ / {len(names)}$")
        )
        # Both districts' outlines are in view for the one who sees both.
        for district in ("鹿城区", "瓯海区"):
            await expect(
                page.get_by_test_id("map-district").filter(has_text=district)
            ).to_be_in_viewport()
        picker = page.get_by_test_id("export-district")
        options = await picker.locator("option").all_text_contents()
        assert options == ["鹿城区", "瓯海区"], options  # the one with most homes first
        await picker.select_option("瓯海区")
        async with page.expect_download() as download_info:
            await page.get_by_test_id("report-download").click()
        download = await download_info.value
        pdf = tmp_path / "ouhai.pdf"
        await download.save_as(pdf)
        assert pdf.read_bytes().startswith(b"%PDF-")
        tool = shutil.which("pdftotext")
        if tool is not None:
            done = await asyncio.to_thread(
                subprocess.run, [tool, str(pdf), "-"], capture_output=True, check=True
            )
            text = " ".join(done.stdout.decode().split())
            assert "瓯海区" in text
            assert "鹿城区" not in text
