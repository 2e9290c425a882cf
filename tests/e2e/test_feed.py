"""The regulator's live feed in headless Chromium, driven over MQTT: a call no one takes
over turns overdue and is highlighted until someone does, and a facility's flood of
alerts collapses into one line that expands to every alert behind it.

The hub runs in the test's event loop with a clock the test moves (as in
tests/integration/test_alerts.py), so three minutes of escalation take no time."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from hub.auth import add_user
from hub.clock import ManualClock
from hub.settings import Settings
from tests.e2e.conftest import DISTRICT, PASSWORD, SCREEN, Site, screenshot, sign_in
from tests.fix_api import asgi_on
from tests.fix_hub import (
    FACILITY,
    clocked_hub,
    connect_db,
    fake_device,
    register_buttons,
    wait_for,
)
from tests.fix_live import serve_running

pytestmark = [pytest.mark.browser, pytest.mark.mqtt, pytest.mark.db, pytest.mark.slow]

# More than the flood threshold (10 in 10 minutes, SPEC §4) of one facility's quiet alerts.
FLOOD_DEVICES = 13


@pytest.fixture
async def clocked_site(migrated: Settings, clock: ManualClock) -> AsyncIterator[Site]:
    """The hub on the test's clock, serving the dashboards, with a regulator and a nurse."""
    async with clocked_hub(migrated, clock) as hub, serve_running(hub, asgi_on(hub)) as server:
        await add_user(hub.pool, "regulator", "regulator", PASSWORD, district=DISTRICT)
        await add_user(hub.pool, "nurse", "staff", PASSWORD, facility_id=FACILITY)
        yield Site(hub, f"http://127.0.0.1:{server.port}")


async def _post_as(site: Site, username: str, path: str, body: dict[str, object]) -> None:
    async with httpx.AsyncClient(base_url=site.base, timeout=10) as client:
        login = await client.post(
            "/api/v1/auth/login", json={"username": username, "password": PASSWORD}
        )
        login.raise_for_status()
        headers = {"Authorization": f"Bearer {login.json()['token']}"}
        answer = await client.post(f"/api/v1{path}", json=body, headers=headers)
        assert answer.status_code == 200, answer.text


async def _open_alert_id(page: Page, kind_text: str) -> str:
    row = page.get_by_test_id("feed-alert").filter(has_text=kind_text)
    await expect(row).to_have_count(1, timeout=5000)
    alert_id = await row.get_attribute("data-alert-id")
    assert alert_id
    return alert_id


async def test_an_overdue_call_is_highlighted_until_it_is_taken_over(
    clocked_site: Site, clock: ManualClock, browser: Browser
) -> None:
    """A press: waiting, then at 180 s overdue (row and map dot), then taken over."""
    site = clocked_site
    page = await browser.new_page(viewport=SCREEN)
    await sign_in(page, f"{site.base}/", "regulator")
    async with fake_device(site.hub.settings, "eb-1") as button:
        await button.send("event", button.message(event="pressed", button="red"))
        alert_id = await _open_alert_id(page, "紧急呼叫")
    row = page.locator(f'[data-testid="feed-alert"][data-alert-id="{alert_id}"]')
    await expect(row).to_have_attribute("data-state", "active")
    # Within the minute: waiting, not highlighted.
    await expect(row).to_have_attribute("data-overdue", "false")
    await expect(row).not_to_have_class(re.compile(r"\boverdue\b"))
    await expect(row.get_by_test_id("feed-state")).to_have_text("待接管")

    # 61 s: the manager is told again; still not overdue for the regulator.
    clock.advance(61)
    await site.hub.timers.sweep()
    await asyncio.sleep(0.5)
    await expect(row).to_have_attribute("data-overdue", "false")

    # 181 s: overdue, highlighted in the feed and on the map.
    clock.advance(120)
    await site.hub.timers.sweep()
    await expect(row).to_have_attribute("data-overdue", "true", timeout=5000)
    await expect(row).to_have_class(re.compile(r"\boverdue\b"))
    await expect(row.get_by_test_id("feed-state")).to_have_text("超时 · 待接管")
    background = await row.evaluate("el => getComputedStyle(el).animationName")
    assert background == "pulse", background
    dot = page.locator(f'[data-testid="map-facility"][data-facility-id="{FACILITY}"]')
    await expect(dot).to_have_attribute("data-state", "overdue", timeout=5000)

    # Taken over: the row stays (open) but is no longer highlighted, and says by whom.
    await _post_as(site, "nurse", f"/alerts/{alert_id}/ack", {})
    await expect(row).to_have_attribute("data-state", "acknowledged", timeout=5000)
    await expect(row).not_to_have_class(re.compile(r"\boverdue\b"))
    await expect(row.get_by_test_id("feed-state")).to_have_text("已接管 · nurse")


async def test_a_flood_collapses_to_one_line_that_expands_to_every_alert(
    clocked_site: Site, browser: Browser
) -> None:
    """13 low batteries at one facility: one line with the count; a press there still has
    its own row; the line expands to all 13 and collapses again."""
    site = clocked_site
    settings = site.hub.settings
    ids = [f"eb-flood-{n:02d}" for n in range(1, FLOOD_DEVICES + 1)]
    async with await connect_db(settings) as db:
        await register_buttons(db, ids)
        # As an import does: the running hub reloads its device cache.
        await db.execute("SELECT pg_notify('carehub_registry', 'devices')")
    page = await browser.new_page(viewport=SCREEN)
    await sign_in(page, f"{site.base}/", "regulator")

    for device_id in ids:
        async with fake_device(settings, device_id) as device:
            await device.send("telemetry", device.message(battery=8, rssi=-70))

    async def batteries_stored() -> bool:
        async with await connect_db(settings) as db:
            cur = await db.execute(
                "SELECT count(DISTINCT device_id) FROM readings WHERE device_id = ANY(%s)",
                (ids,),
            )
            row = await cur.fetchone()
            return row is not None and row[0] == len(ids)

    # The hub's own sweep (once a second) raises the low batteries.
    await wait_for(batteries_stored, timeout=10)

    group = page.get_by_test_id("feed-group")
    await expect(group).to_have_count(1, timeout=10_000)
    await expect(group).to_have_attribute("data-facility-id", FACILITY)
    await expect(group).to_have_attribute("data-count", str(FLOOD_DEVICES), timeout=10_000)
    await expect(group.get_by_test_id("feed-group-text")).to_have_text(
        f"阳光托育养老中心：{FLOOD_DEVICES} 条告警（电量低 {FLOOD_DEVICES}）"
    )
    # No low-battery row of its own: the flood is one line.
    await expect(page.get_by_test_id("feed-alert").filter(has_text="电量低")).to_have_count(0)

    # A call at the flooded facility is never folded away.
    async with fake_device(settings, "eb-1") as button:
        await button.send("event", button.message(event="pressed", button="pull_cord"))
        await _open_alert_id(page, "紧急呼叫")

    # Expand: every alert behind the line, one line each; collapse again.
    toggle = group.get_by_test_id("feed-group-toggle")
    await expect(toggle).to_have_text("展开")
    members = group.get_by_test_id("feed-group-member")
    await expect(members).to_have_count(0)
    await toggle.click()
    await expect(toggle).to_have_attribute("aria-expanded", "true")
    await expect(toggle).to_have_text("收起")
    await expect(members).to_have_count(FLOOD_DEVICES, timeout=5000)
    kinds = await members.evaluate_all("els => els.map(e => e.dataset.kind)")
    assert kinds == ["low_battery"] * FLOOD_DEVICES, kinds
    await expect(members.first).to_contain_text("电量低")
    await expect(members.first).to_contain_text("101 室")
    await screenshot(page, "regulator-flood.png")
    await toggle.click()
    await expect(toggle).to_have_attribute("aria-expanded", "false")
    await expect(members).to_have_count(0)
    await expect(group.get_by_test_id("feed-group-members")).to_be_hidden()

    # One battery recharged: its alert resolves by itself, and the expanded line has one
    # fewer (a resolved alert is never listed).
    async with fake_device(settings, ids[0]) as device:
        device.seq = 100
        await device.send("telemetry", device.message(battery=96, rssi=-60))
    await toggle.click()
    await expect(members).to_have_count(FLOOD_DEVICES - 1, timeout=10_000)
