"""The built dashboards (dashboards/dist): the regulator screen at `/`, the staff console at
`/console/`, their hashed assets under `/assets/`. The pages are ordinary API clients."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

import hub
from hub.api.deps import HubDep
from hub.api.security import page_policy
from hub.settings import Settings

router = APIRouter(tags=["dashboards"], include_in_schema=False)

# Where `npm run build` puts the pages in a checkout: dashboards/dist beside the package.
REPO_DIST = Path(hub.__file__).resolve().parent.parent / "dashboards" / "dist"
# Asset names carry a content hash, so a browser may keep them for good; the pages
# themselves are looked at again on every load, so a new build shows at once.
ASSET_CACHE = "public, max-age=31536000, immutable"
PAGE_CACHE = "no-cache"
NOT_BUILT = (
    "The carehub dashboards are not built. Run `make setup` in the carehub checkout "
    "(it runs `npm ci` and `npm run build` in dashboards/), or set CAREHUB_DASHBOARD_DIR "
    "to a built dashboards/dist, then reload this page."
)


def dashboard_dir(settings: Settings) -> Path:
    """The folder the pages are served from."""
    return settings.dashboard_dir if settings.dashboard_dir is not None else REPO_DIST


def _page(settings: Settings, relative: str) -> Response:
    page = dashboard_dir(settings) / relative
    if not page.is_file():
        body = f"<!doctype html><meta charset=utf-8><title>carehub</title><p>{NOT_BUILT}</p>"
        return HTMLResponse(body, status_code=503, headers={"Retry-After": "60"})
    return FileResponse(
        page,
        media_type="text/html; charset=utf-8",
        headers={
            "Cache-Control": PAGE_CACHE,
            # Own origin only, and the map tile server when one is configured.
            "Content-Security-Policy": page_policy(settings.tile_url),
        },
    )


@router.get("/")
async def regulator_screen(hub: HubDep) -> Response:
    """The regulator's screen (监管一屏掌控)."""
    return _page(hub.settings, "index.html")


@router.get("/console")
async def console_redirect() -> Response:
    """The console lives at /console/ (its relative links need the slash)."""
    return RedirectResponse("/console/", status_code=308)


@router.get("/console/")
async def staff_console(hub: HubDep) -> Response:
    """The staff console (phone-sized)."""
    return _page(hub.settings, "console/index.html")


@router.get("/assets/{name:path}")
async def asset(name: str, hub: HubDep) -> Response:
    """A built script, stylesheet or image; only files inside dist/assets are served."""
    assets = (dashboard_dir(hub.settings) / "assets").resolve()
    path = (assets / name).resolve()
    if not path.is_relative_to(assets) or not path.is_file():
        raise HTTPException(status_code=404, detail=f"no dashboard asset {name!r}")
    return FileResponse(path, headers={"Cache-Control": ASSET_CACHE})
