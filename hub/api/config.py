"""What a dashboard needs before anyone signs in: the map and the language."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from hub.api.deps import HubDep, connection
from hub.api.models import PublicConfig
from hub.storage import api_queries

router = APIRouter(tags=["config"])

# Ouhai district, Wenzhou (the 育养宝 model), until a facility with a position is registered.
DEFAULT_CENTER = (27.9955, 120.6372)


@router.get(
    "/config",
    response_model=PublicConfig,
    summary="Dashboard configuration (no token needed)",
    description="The map tile URL (CAREHUB_TILE_URL; null: the dashboards' own), the "
    "map's centre (the middle of the registered facilities) and the default language.",
)
async def get_config(hub: HubDep) -> dict[str, Any]:
    """Public configuration."""
    async with connection(hub) as conn:
        center = await api_queries.map_center(conn)
    return {
        "tile_url": hub.settings.tile_url,
        "map_center": center or DEFAULT_CENTER,
        "default_language": "zh-CN",
    }
