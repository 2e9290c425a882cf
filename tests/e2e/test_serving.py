"""How the hub serves the built dashboards, and what it says when they are not built."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, expect

from hub.runtime import Hub
from tests.e2e.conftest import PHONE, SCREEN, Site, sign_in
from tests.e2e.page_watch import policy_refusals
from tests.fix_api import asgi_on

pytestmark = [pytest.mark.mqtt, pytest.mark.db]


def _client(hub: Hub, dist: Path | None) -> httpx.AsyncClient:
    settings = hub.settings.model_copy(update={"dashboard_dir": dist})
    served = dataclasses.replace(hub, settings=settings)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=asgi_on(served)), base_url="http://hub.test"
    )


async def test_pages_and_assets_are_served_from_the_build(
    running_hub: Hub, dashboards_built: Path
) -> None:
    """/ and /console/ are the built pages, never cached stale; assets are immutable."""
    async with _client(running_hub, dashboards_built) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert 'id="app"' in page.text
        assert page.headers["cache-control"] == "no-cache"
        assert "script-src 'self'" in page.headers["content-security-policy"]
        console = await client.get("/console/")
        assert console.status_code == 200
        assert "值班台" in console.text
        redirect = await client.get("/console")
        assert redirect.status_code == 308
        assert redirect.headers["location"] == "/console/"
        script = next(p.name for p in (dashboards_built / "assets").glob("*.js"))
        asset = await client.get(f"/assets/{script}")
        assert asset.status_code == 200
        assert "immutable" in asset.headers["cache-control"]
        assert (await client.get("/assets/../index.html")).status_code == 404
        assert (await client.get("/assets/%2e%2e/%2e%2e/pyproject.toml")).status_code == 404
        assert (await client.get("/assets/missing.js")).status_code == 404


async def test_without_a_build_the_screen_tells_the_operator_to_run_make_setup(
    running_hub: Hub, tmp_path: Path
) -> None:
    """An empty dashboard dir: 503 with a sentence saying what to do; the API still works."""
    async with _client(running_hub, tmp_path) as client:
        for path in ("/", "/console/"):
            response = await client.get(path)
            assert response.status_code == 503
            assert "make setup" in response.text
        config = await client.get("/api/v1/config")
        assert config.status_code == 200


SAME_EVERYWHERE = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


async def test_every_answer_carries_the_security_headers(
    running_hub: Hub, dashboards_built: Path
) -> None:
    """Pages, assets, API answers, errors, docs and health: never framed, never sniffed,
    no referrer; pages load only from the hub, and nothing else may load anything."""
    async with _client(running_hub, dashboards_built) as client:
        script = next(p.name for p in (dashboards_built / "assets").glob("*.js"))
        answers = {
            "/": await client.get("/"),
            "/console/": await client.get("/console/"),
            "/console": await client.get("/console"),
            "asset": await client.get(f"/assets/{script}"),
            "missing asset": await client.get("/assets/missing.js"),
            "config": await client.get("/api/v1/config"),
            "401": await client.get("/api/v1/facilities"),
            "422": await client.post("/api/v1/auth/login", content=b"{"),
            "405": await client.delete("/api/v1/config"),
            "404": await client.get("/no/such/page"),
            "openapi": await client.get("/api/v1/openapi.json"),
            "docs": await client.get("/api/v1/docs"),
            "healthz": await client.get("/healthz"),
            "metrics": await client.get("/metrics"),
        }
    for name, response in answers.items():
        for header, value in SAME_EVERYWHERE.items():
            assert response.headers.get(header) == value, (name, header, response.headers)
        policy = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy, name
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, name
        assert len(response.headers.get_list("content-security-policy")) == 1, name
    for page in ("/", "/console/"):
        policy = answers[page].headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src 'self';" in policy
        assert "img-src 'self' data:;" in policy, "no tile server configured: no other origin"
        assert "http:" not in policy and "https:" not in policy and "ws:" not in policy
    for name in ("config", "401", "openapi", "metrics", "asset"):
        assert answers[name].headers["content-security-policy"].startswith("default-src 'none'")
    docs = answers["docs"]
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert "'sha256-" in docs.headers["content-security-policy"]


async def test_a_configured_tile_server_is_the_one_other_origin_of_the_pages(
    running_hub: Hub, dashboards_built: Path
) -> None:
    """With CAREHUB_MAP_TILE_URL set, its origin (and only it) may serve the pages images."""
    tiles = "https://{s}.tiles.example.org/{z}/{x}/{y}.png"
    settings = running_hub.settings.model_copy(
        update={"dashboard_dir": dashboards_built, "tile_url": tiles}
    )
    served = dataclasses.replace(running_hub, settings=settings)
    transport = httpx.ASGITransport(app=asgi_on(served))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
        policy = (await client.get("/")).headers["content-security-policy"]
    assert "img-src 'self' data: https://*.tiles.example.org;" in policy
    assert policy.count("tiles.example.org") == 1


@pytest.mark.browser
async def test_both_pages_run_under_their_policy_without_a_single_refusal(
    site: Site, browser: Browser
) -> None:
    """The regulator's screen and the staff console sign in, go live and switch language
    under the strict page policy, and Chromium refuses nothing they load or do."""
    for url, username, viewport in (
        (f"{site.base}/", "regulator", SCREEN),
        (f"{site.base}/console/", "nurse", PHONE),
    ):
        page = await browser.new_page(viewport=viewport)
        refused = policy_refusals(page)
        await sign_in(page, url, username)
        await page.get_by_test_id("lang-toggle").click()
        await expect(page.locator("html")).to_have_attribute("lang", "en")
        await page.wait_for_timeout(500)
        assert refused == [], (url, refused)
        await page.close()
