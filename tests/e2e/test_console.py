"""The staff console in headless Chromium: a fall over MQTT reaches the phone, is taken
over there, the device hears it, and the regulator's screen shows who took it."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from hub.settings import Settings
from tests.e2e.conftest import PHONE, SCREEN, Site, add_accounts, screenshot, serve, sign_in
from tests.e2e.page_watch import PageWatch
from tests.fix_hub import FACILITY, connect_db, fake_device, wait_for
from tests.postgres_proxy import PostgresProxy

pytestmark = [pytest.mark.browser, pytest.mark.mqtt, pytest.mark.db, pytest.mark.slow]


async def test_a_fall_reaches_the_console_within_a_second_and_is_taken_over(
    site: Site, browser: Browser
) -> None:
    """Fall on MQTT -> console card in < 1 s with a tone -> take over -> device `ack`
    says acknowledged -> the regulator's feed shows it taken over -> resolve."""
    console = await browser.new_page(viewport=PHONE)
    watch = await PageWatch.on(console)
    await sign_in(console, f"{site.base}/console/", "nurse")
    await expect(console.get_by_test_id("console-empty")).to_be_visible()
    await expect(console.get_by_test_id("connection-status")).to_have_text("实时")

    regulator = await browser.new_page(viewport=SCREEN)
    await sign_in(regulator, f"{site.base}/", "regulator")

    async with fake_device(site.hub.settings, "fs-1") as sensor:
        await sensor.send(
            "event",
            sensor.message(
                event="fall_detected", confidence=0.92, zone="room-101", posture="lying"
            ),
        )
        sent = time.monotonic()
        card = console.get_by_test_id("console-alert")
        await card.wait_for(state="visible", timeout=1000)
        arrived = time.monotonic() - sent
        assert arrived < 1.0, f"the fall took {arrived:.2f} s to reach the console"
        await expect(card).to_have_count(1)
        await expect(card.get_by_test_id("console-kind")).to_have_text("跌倒")
        await expect(card).to_have_attribute("data-state", "active")
        assert await watch.notes_played() >= 1, "no alert tone was played"
        alert_id = await card.get_attribute("data-alert-id")
        assert alert_id

        # The regulator's feed has it too, waiting.
        row = regulator.locator(f'[data-testid="feed-alert"][data-alert-id="{alert_id}"]')
        await expect(row).to_have_attribute("data-state", "active", timeout=3000)
        await screenshot(console, "console.png")

        await card.get_by_test_id("console-ack").click()
        await expect(card).to_have_attribute("data-state", "acknowledged", timeout=3000)
        await expect(card.get_by_test_id("console-taken-by")).to_have_text("你 已接管")

        def device_heard_acknowledged() -> bool:
            return any(
                ack["alert_id"] == alert_id and ack["state"] == "acknowledged"
                for ack in sensor.acks
            )

        await wait_for(device_heard_acknowledged, timeout=5)

        await expect(row).to_have_attribute("data-state", "acknowledged", timeout=3000)
        await expect(row.get_by_test_id("feed-state")).to_have_text("已接管 · nurse")

        await card.get_by_test_id("console-attend").click()
        await expect(card).to_have_attribute("data-state", "attended", timeout=3000)
        await card.get_by_test_id("console-resolve").click()
        await card.get_by_test_id("console-resolve-false_alarm").click()
        await expect(console.get_by_test_id("console-alert")).to_have_count(0, timeout=3000)
        await expect(console.get_by_test_id("console-empty")).to_be_visible()
        await expect(row).to_have_count(0, timeout=3000)

        def device_heard_resolved() -> bool:
            return any(
                ack["alert_id"] == alert_id and ack["state"] == "resolved" for ack in sensor.acks
            )

        await wait_for(device_heard_resolved, timeout=5)

    async with await connect_db(site.hub.settings) as conn:
        cur = await conn.execute(
            "SELECT state, acknowledged_by, attended_by, disposition FROM alerts WHERE id = %s",
            (int(alert_id),),
        )
        assert await cur.fetchone() == ("resolved", "nurse", "nurse", "false_alarm")


async def test_the_console_says_when_it_is_disconnected_and_catches_up_on_reconnect(
    site: Site, browser: Browser
) -> None:
    """Dropped socket -> the console says it is reconnecting -> reconnect with `since` ->
    the alert raised meanwhile is on the console."""
    console = await browser.new_page(viewport=PHONE)
    watch = await PageWatch.on(console)
    await sign_in(console, f"{site.base}/console/", "nurse")
    # Cut the page off the network: its websocket closes and reconnects fail.
    await console.context.set_offline(True)
    await watch.drop_live_socket()
    status = console.get_by_test_id("connection-status")
    await expect(status).to_have_text("连接已断开，正在重连…", timeout=60_000)
    await expect(status).to_have_attribute("data-state", "lost")

    async with fake_device(site.hub.settings, "eb-1") as button:
        await button.send("event", button.message(event="pressed", button="red"))
        await console.context.set_offline(False)
        await expect(status).to_have_text("实时", timeout=15_000)
        card = console.get_by_test_id("console-alert")
        await expect(card).to_have_count(1, timeout=5000)
        await expect(card.get_by_test_id("console-kind")).to_have_text("紧急呼叫")

    url = watch.live_url
    assert "since=" in url, f"the reconnect did not resume from a change id: {url}"


async def test_a_call_during_a_database_outage_rings_the_console_and_reaches_the_screen(
    migrated: Settings, proxy: PostgresProxy, browser: Browser, tmp_path: Path
) -> None:
    """Database cut -> the console's link drops and comes back partial -> a press reaches
    the console (card and tone) and the regulator's feed as not yet stored -> database back
    -> the console resumes, the stored alert takes its place and can be taken over, without
    a second tone (SPEC §8)."""
    settings = proxy.settings_through(migrated, tmp_path / "spool")
    async with serve(settings) as site, fake_device(settings, "eb-1") as button:
        await add_accounts(site)
        console = await browser.new_page(viewport=PHONE)
        watch = await PageWatch.on(console)
        await sign_in(console, f"{site.base}/console/", "nurse")
        regulator = await browser.new_page(viewport=SCREEN)
        await sign_in(regulator, f"{site.base}/", "regulator")

        dot = regulator.locator(f'[data-testid="map-facility"][data-facility-id="{FACILITY}"]')
        await expect(dot).to_have_attribute("data-state", re.compile(r"^(ok|offline)$"))
        proxy.sever()
        await button.send("telemetry", button.message(battery=80))
        await wait_for(lambda: not site.hub.metrics.database_up, timeout=30)
        # The phone's link drops meanwhile (a tab asleep): it comes back on its token's
        # word, saying the database is away, and still rings for the next call.
        await watch.drop_live_socket()
        status = console.get_by_test_id("connection-status")
        await expect(status).to_have_attribute("data-state", "partial", timeout=15_000)
        await expect(status).to_have_text("数据库暂不可用 · 新呼叫仍会送达")
        before = await watch.notes_played()

        await button.send("event", button.message(event="pressed", button="red"))
        card = console.get_by_test_id("console-provisional")
        await expect(card).to_have_count(1, timeout=5000)
        await expect(card.get_by_test_id("console-kind")).to_have_text("紧急呼叫")
        await expect(card.get_by_test_id("console-provisional-status")).to_contain_text(
            "数据库暂不可用"
        )
        # No id yet, so nothing to take over: the card says to go instead.
        await expect(card.get_by_test_id("console-ack")).to_have_count(0)
        await expect(console.get_by_test_id("console-empty")).to_be_hidden()
        assert await watch.notes_played() > before, "the provisional call played no tone"
        row = regulator.get_by_test_id("feed-provisional")
        await expect(row).to_have_count(1, timeout=5000)
        await expect(row.get_by_test_id("feed-state")).to_have_text("未入库 · 数据库暂不可用")
        # The facility's status comes from the database, which cannot say so yet: the map
        # marks the call itself, as an alert with a dashed ring.
        await expect(dot).to_have_attribute("data-unstored", "", timeout=5000)
        await expect(dot).to_have_attribute("data-state", "alert")
        await screenshot(console, "console-provisional.png")

        rung = await watch.notes_played()
        proxy.restore()
        stored = console.get_by_test_id("console-alert")
        await expect(stored).to_have_count(1, timeout=60_000)
        await expect(card).to_have_count(0)
        await expect(stored.get_by_test_id("console-kind")).to_have_text("紧急呼叫")
        await expect(stored.get_by_test_id("console-ack")).to_be_visible()
        assert await watch.notes_played() == rung, "the stored call rang a second time"
        await expect(row).to_have_count(0, timeout=5000)
        await expect(status).to_have_attribute("data-state", "live", timeout=15_000)
        await expect(dot).not_to_have_attribute("data-unstored", "", timeout=5000)
        await expect(dot).to_have_attribute("data-state", "alert", timeout=15_000)
        alert_id = await stored.get_attribute("data-alert-id")
        feed_row = regulator.locator(f'[data-testid="feed-alert"][data-alert-id="{alert_id}"]')
        await expect(feed_row).to_have_attribute("data-state", "active", timeout=5000)

        await stored.get_by_test_id("console-ack").click()
        await expect(stored).to_have_attribute("data-state", "acknowledged", timeout=5000)
