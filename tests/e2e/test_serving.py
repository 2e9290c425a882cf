"""How the hub serves the built dashboards, and what it says when they are not built."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx
import pytest

from hub.runtime import Hub
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
