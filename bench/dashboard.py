"""`carehub bench dashboard`: how long the regulator's screen takes to load and go live.

Seeds N facilities (zones and devices each) in a schema of its own in the configured
database, starts the hub in this process on a free port, and opens the regulator's page in
headless Chromium (Debian's /usr/bin/chromium, driven by Playwright from the `dev` extra).
The figure is milliseconds from the start of navigation until the first snapshot is on
screen (map, KPI band and feed rendered: the page sets `body[data-live]`), read by a
MutationObserver the bench installs before the page loads; the bundle has no bench hook. Each
load uses a fresh browser context, so nothing is cached. The target is 2 s for 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import statistics
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn
from psycopg import sql

from hub.api.dashboards import dashboard_dir
from hub.app import SERVER_OPTIONS, create_app
from hub.auth import add_user
from hub.errors import HubError
from hub.runtime import Hub
from hub.settings import Settings
from hub.storage.migrate import migrate

logger = logging.getLogger(__name__)

TARGET_MS = 2000.0
DISTRICT = "基准区"
# Facilities are spread over a square about 30 km across, around Wenzhou.
CENTER = (27.99, 120.65)
SPREAD_DEG = 0.15
# Each facility: a room, a class and a common area; a fall sensor, a button, a counter.
ZONES = (("room-1", "101 室", "room", 2, None), ("class-1", "托小班", "class", 15, "托小班"))
DEVICES = (("fs", "fall_sensor", "room-1"), ("eb", "emergency_button", "room-1"))
COUNTER = ("oc", "occupancy_counter", "class-1")
STARTUP_S = 60.0
LIVE_TIMEOUT_MS = 30_000
# Debian's Chromium, which `make chromium` installs.
CHROMIUM = Path("/usr/bin/chromium")


def run_dashboard_bench(
    settings: Settings,
    *,
    facilities: int = 500,
    loads: int = 3,
    chromium: Path = CHROMIUM,
    keep: bool = False,
) -> int:
    """Run the bench; prints its figures and PASS or FAIL against the 2 s target."""
    if not 1 <= facilities <= 20_000:
        raise HubError("--facilities must be between 1 and 20000")
    if not (dashboard_dir(settings) / "index.html").is_file():
        raise HubError(
            f"the dashboards are not built in {dashboard_dir(settings)}: run `make setup`"
        )
    if not chromium.is_file():
        raise HubError(f"no Chromium at {chromium}: apt-get install chromium")
    return asyncio.run(_bench(settings, facilities, loads, chromium, keep=keep))


async def _bench(
    settings: Settings, facilities: int, loads: int, chromium: Path, *, keep: bool
) -> int:
    try:
        from playwright.async_api import async_playwright  # noqa: PLC0415
    except ImportError as exc:
        raise HubError(
            "carehub bench dashboard drives Chromium with Playwright: "
            "pip install -e '.[dev]' (never `playwright install`; Debian's chromium is used)"
        ) from exc

    tag = secrets.token_hex(4)
    schema = f"bench_dash_{tag}"
    bench = settings.model_copy(
        update={
            "database_schema": schema,
            "topic_root": f"benchdash{tag}",
            "mqtt_client_id": f"carehub-bench-dash-{tag}",
            "http_port": 0,
        }
    )
    print(
        f"carehub bench dashboard: {facilities} facilities, {loads} cold loads of the "
        f"regulator's screen\n  database schema {schema}, Chromium {chromium}",
        flush=True,
    )
    logging.getLogger("hub.storage.migrate").setLevel(logging.WARNING)
    await migrate(bench)
    password = secrets.token_urlsafe(16)
    try:
        async with await psycopg.AsyncConnection.connect(
            settings.database_url, autocommit=True, options=f"-c search_path={schema},public"
        ) as conn:
            await seed_registry(conn, facilities, DISTRICT)
            await add_user(conn, "bench-regulator", "regulator", password, district=DISTRICT)
        async with _serve(bench) as base, async_playwright() as playwright:
            token = await _login(base, password)
            browser = await playwright.chromium.launch(executable_path=str(chromium))
            try:
                figures = []
                for _ in range(loads):
                    context = await browser.new_context(viewport={"width": 1600, "height": 900})
                    try:
                        figures.append(await _one_load(context, base, token, facilities))
                    finally:
                        await context.close()
            finally:
                await browser.close()
    finally:
        if keep:
            print(f"  kept schema {schema} (--keep)")
        else:
            async with await psycopg.AsyncConnection.connect(
                settings.database_url, autocommit=True
            ) as conn:
                await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
            print(f"  dropped schema {schema}")
    for number, figure in enumerate(figures, 1):
        print(f"  load {number}: live after {figure:.0f} ms")
    worst = max(figures)
    verdict = "PASS" if worst < TARGET_MS else "FAIL"
    print(
        f"regulator screen with {facilities} facilities: live after {worst:.0f} ms "
        f"(worst of {loads}; median {statistics.median(figures):.0f} ms; "
        f"target < {TARGET_MS:.0f} ms): {verdict}",
        flush=True,
    )
    return 0 if verdict == "PASS" else 1


async def seed_registry(conn: psycopg.AsyncConnection[Any], count: int, district: str) -> None:
    """N facilities of `district` on a grid, each with its zones and devices."""
    side = math.ceil(math.sqrt(count))
    facilities, zones, devices = [], [], []
    for index in range(count):
        facility_id = f"bench-{index:05d}"
        row, column = divmod(index, side)
        latitude = CENTER[0] - SPREAD_DEG / 2 + SPREAD_DEG * (row + 0.5) / side
        longitude = CENTER[1] - SPREAD_DEG / 2 + SPREAD_DEG * (column + 0.5) / side
        kind = ("elderly", "childcare", "integrated")[index % 3]
        facilities.append(
            (facility_id, f"基准机构 {index + 1}", kind, district, latitude, longitude, 40, 30)
        )
        zones += [(facility_id, *zone) for zone in ZONES]
        for prefix, device_type, zone_id in (*DEVICES, COUNTER):
            devices.append((f"{facility_id}-{prefix}", facility_id, device_type, zone_id, 300))
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO facilities (id, name, kind, district, latitude, longitude, beds,"
            " childcare_places) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            facilities,
        )
        await cur.executemany(
            "INSERT INTO zones (facility_id, zone_id, name, kind, capacity, class_type)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            zones,
        )
        await cur.executemany(
            "INSERT INTO devices (id, facility_id, type, zone_id, heartbeat_s)"
            " VALUES (%s, %s, %s, %s, %s)",
            devices,
        )


@contextlib.asynccontextmanager
async def _serve(settings: Settings) -> AsyncIterator[str]:
    """The hub with its HTTP server on a free port, until the block ends."""
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=0, log_level="warning", **SERVER_OPTIONS
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(), name="bench-dashboard-http")
    try:
        async with asyncio.timeout(STARTUP_S):
            while not server.started:
                if serving.done():
                    serving.result()
                    raise HubError("the hub stopped before it served")
                await asyncio.sleep(0.05)
            hub: Hub = server.lifespan.state["hub"]
            # The screen's snapshot reads what the status watcher has computed.
            await hub.status.ready.wait()
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait({serving}, timeout=STARTUP_S)


async def _login(base: str, password: str) -> str:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        response = await client.post(
            "/api/v1/auth/login", json={"username": "bench-regulator", "password": password}
        )
        response.raise_for_status()
        token: str = response.json()["token"]
        return token


# Notes when the page first says it is live, from outside the page's own code.
LIVE_OBSERVER = """
new MutationObserver((changes, observer) => {
  if (document.body !== null && document.body.dataset.live === "true") {
    window.__benchLiveAt = performance.now();
    observer.disconnect();
  }
}).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-live"] });
"""


async def _one_load(context: Any, base: str, token: str, facilities: int) -> float:
    """Milliseconds from navigation to the snapshot on screen, signed in already."""
    # Signed in as the page keeps it (sessionStorage), so the figure is the page's own work.
    await context.add_init_script(f"sessionStorage.setItem('carehub.token', {token!r});")
    await context.add_init_script(LIVE_OBSERVER)
    page = await context.new_page()
    await page.goto(f"{base}/")
    # A selector, not wait_for_function: the page's CSP forbids evaluating strings in it.
    await page.wait_for_selector('body[data-live="true"]', timeout=LIVE_TIMEOUT_MS)
    live_at: float = await page.evaluate("window.__benchLiveAt")
    shown = await page.locator('[data-testid="map-facility"]').count()
    if shown != facilities:
        raise HubError(f"the map shows {shown} facilities, not {facilities}")
    return live_at
