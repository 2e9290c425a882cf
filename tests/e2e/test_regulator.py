"""The regulator's screen in headless Chromium, on the whole `carehub demo` stack: the banner
names the dashboards, the map, the KPI band and the drill-down fill with the simulated
district's data, the language switches, the KPIs export as CSV, and 瓯海区's regulator has
a screen of their own."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from simulators import demo_counts
from simulators.behaviour import DAILY_CURVES, daily_fraction, hour_of_day
from tests.child_process import ChildOutput, start_demo
from tests.e2e.conftest import SCREEN, screenshot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.mqtt, pytest.mark.db, pytest.mark.slow]

FACILITIES = 20
# The demo's homes split over its two districts, each with its own regulator.
LUCHENG = demo_counts(FACILITIES)["鹿城区"]
OUHAI = demo_counts(FACILITIES)["瓯海区"]
DEMO_PASSWORD = "carehub-demo"  # noqa: S105 - the demo's published password


@pytest.fixture
def demo() -> Iterator[str]:
    """`carehub demo` on free ports; yields its banner once it is running."""
    folder = Path(tempfile.mkdtemp(prefix="carehub-e2e-demo-"))
    child = start_demo(folder / "demo", "--facilities", str(FACILITIES))
    assert child.stdout is not None
    output = ChildOutput(child.stdout)
    try:
        deadline = time.monotonic() + 120
        while "Press Ctrl-C to stop." not in output.text():
            if child.poll() is not None or time.monotonic() > deadline:
                pytest.fail("carehub demo did not start:\n" + output.text())
            time.sleep(0.1)
        yield output.text()
    finally:
        child.terminate()
        try:
            child.wait(timeout=90)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        child.stdout.close()
        shutil.rmtree(folder, ignore_errors=True)


async def _on_map(page: Page) -> list[str]:
    """The ids of the facilities on the map, alone or in a cluster, sorted."""
    markers = page.get_by_test_id("map-facility")
    await expect(markers.first).to_be_attached()
    on_map: list[str] = await markers.evaluate_all("els => els.map(e => e.dataset.facilityId)")
    clusters = page.get_by_test_id("map-cluster")
    for ids in await clusters.evaluate_all("els => els.map(e => e.dataset.facilityIds)"):
        on_map.extend(ids.split(" "))
    return sorted(on_map)


async def _kpi(page: Page, name: str) -> str:
    return (await page.get_by_test_id(f"kpi-{name}-value").text_content()) or ""


async def test_the_regulator_screen_shows_the_district_live_and_drills_into_a_facility(
    demo: str, browser: Browser, tmp_path: Path
) -> None:
    """Map with every facility of the district, KPI band, feed, drill-down with data,
    language, CSV; the other district's regulator sees theirs."""
    regulator_url = re.search(r"regulator screen\s+(http://\S+/)", demo)
    console_url = re.search(r"staff console\s+(http://\S+/console/)", demo)
    assert regulator_url is not None, demo
    assert console_url is not None, demo
    assert "not built" not in demo, demo

    page = await browser.new_page(viewport=SCREEN, accept_downloads=True)
    # Signed out, the screen asks for a sign-in (in Chinese by default).
    await page.goto(regulator_url.group(1))
    await expect(page.get_by_test_id("login-submit")).to_have_text("登录")
    await sign_in(page, regulator_url.group(1), "regulator", DEMO_PASSWORD)
    await expect(page.get_by_test_id("connection-status")).to_have_text("实时")

    # Every facility of the district on the map, a dot of its own or counted in a cluster
    # where dots would overlap, each coloured by a known state; none of 瓯海区's.
    assert await _on_map(page) == [f"lc-{n:03d}" for n in range(1, LUCHENG + 1)]
    states = await page.locator(
        '[data-testid="map-facility"], [data-testid="map-cluster"]'
    ).evaluate_all("els => els.map(e => e.getAttribute('data-state'))")
    assert set(states) <= {"ok", "alert", "overdue", "offline"}, states

    # The KPI band fills from the snapshot: the simulated devices report within seconds.
    await expect(page.get_by_test_id("kpi-facilities-online-value")).to_have_text(
        re.compile(rf"^\d+ / {LUCHENG}$")
    )
    await expect(page.get_by_test_id("kpi-devices-online-value")).to_have_text(
        re.compile(r"^[1-9]\d* / [1-9]\d*$"), timeout=20_000
    )
    # The counters follow the day (simulators/behaviour.py): at night every class and common
    # area is empty, and 0 present is the truth.
    now = datetime.now(UTC)
    daytime = any(
        daily_fraction(profile, hour_of_day(now)) >= 0.25
        for profile in DAILY_CURVES
        if profile != "room_presence"
    )
    present = r"[1-9]\d*" if daytime else r"\d+"
    await expect(page.get_by_test_id("kpi-present-value")).to_have_text(
        re.compile(rf"^{present} / [1-9]\d*$"), timeout=20_000
    )
    await expect(page.get_by_test_id("kpi-present-detail")).to_contain_text("托位")
    for priority in ("high", "medium", "low"):
        await expect(page.get_by_test_id(f"kpi-open-{priority}")).to_have_attribute(
            "data-count", re.compile(r"^\d+$")
        )
    await expect(page.get_by_test_id("kpi-ack60-value")).not_to_have_text("", timeout=10_000)
    await screenshot(page, "regulator.png")

    # Drill into the first facility (it has occupancy counters), opening its cluster first
    # if it stands in one.
    first = page.locator('[data-testid="map-facility"][data-facility-id="lc-001"]')
    if await first.count() == 0:
        await page.locator('[data-testid="map-cluster"][data-facility-ids~="lc-001"]').click()
    await first.click(force=True)
    drill = page.get_by_test_id("drilldown")
    await expect(drill).to_have_attribute("data-loaded", "true", timeout=10_000)
    await expect(page.get_by_test_id("drill-title")).to_contain_text("养老")
    zones = page.get_by_test_id("drill-zone")
    assert await zones.count() > 0
    counts = await page.get_by_test_id("drill-zone-count").all_text_contents()
    assert any(re.match(r"^\d+ / \d+$", count) for count in counts), counts
    devices = page.get_by_test_id("drill-device")
    assert await devices.count() > 3
    batteries = await devices.evaluate_all("rows => rows.map(r => r.children[3].textContent)")
    assert any(re.match(r"^\d+%$", battery or "") for battery in batteries), batteries
    await expect(page.get_by_test_id("drill-chart")).to_have_attribute(
        "data-points", re.compile(r"^[1-9]\d*$"), timeout=10_000
    )
    await expect(page.get_by_test_id("drill-chart").locator("canvas").first).to_be_visible()
    await screenshot(page, "drilldown.png")

    # One click to English, and the choice outlives a reload.
    title = page.get_by_test_id("page-title")
    await expect(title).to_have_text("一老一小 · 监管一屏掌控")
    await page.get_by_test_id("lang-toggle").click()
    await expect(title).to_have_text("Elderly & childcare · Supervision screen")
    await expect(page.get_by_test_id("kpi-present-detail")).to_contain_text("childcare places")
    await expect(page.get_by_test_id("drill-close")).to_have_text("Close")
    await page.reload()
    await page.wait_for_selector("body[data-live=true]")
    await expect(title).to_have_text("Elderly & childcare · Supervision screen")
    await page.get_by_test_id("lang-toggle").click()
    await expect(title).to_have_text("一老一小 · 监管一屏掌控")

    # The period's KPIs as CSV, through the form.
    async with page.expect_download() as download_info:
        await page.get_by_test_id("export-csv").click()
    download = await download_info.value
    saved = tmp_path / "kpis.csv"
    await download.save_as(saved)
    text = saved.read_text(encoding="utf-8-sig")
    assert text.startswith("figure,value"), text[:200]
    assert "high_alerts," in text

    # The console's URL from the banner serves the console.
    console = await browser.new_page()
    await console.goto(console_url.group(1))
    await expect(console.get_by_test_id("page-title")).to_have_text("一老一小 · 值班台")

    # 瓯海区's regulator, from the banner's logins: their homes and their KPI band.
    assert re.search(r"regulator-oh\s+regulator of 瓯海区", demo), demo
    ouhai = await browser.new_page(viewport=SCREEN)
    await sign_in(ouhai, regulator_url.group(1), "regulator-oh", DEMO_PASSWORD)
    assert await _on_map(ouhai) == [f"oh-{n:03d}" for n in range(1, OUHAI + 1)]
    await expect(ouhai.get_by_test_id("kpi-facilities-online-value")).to_have_text(
        re.compile(rf"^\d+ / {OUHAI}$")
    )
    # Today's share came back for their district (or said there was no call yet today).
    await expect(ouhai.get_by_test_id("kpi-ack60-detail")).to_have_text(
        re.compile(r"条高优先级|今日无高优先级告警"), timeout=10_000
    )
