"""Facilities with their status, and one facility's detail (read by regulators: logged)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from hub.api.common import (
    AfterId,
    FacilityId,
    Limit,
    log_regulator_read,
    page,
    visible_facility,
)
from hub.api.deps import HubDep, Reader, connection
from hub.api.errors import ERROR_RESPONSES, not_found
from hub.api.models import FacilityDetail, FacilityList
from hub.storage import api_queries
from hub.storage.status import facility_statuses, zone_status
from hub.wire import FacilityKind

# Every route here may answer the shared errors; a route adds its own words for a 400.
router = APIRouter(tags=["facilities"], responses=ERROR_RESPONSES)


@router.get(
    "/facilities",
    response_model=FacilityList,
    summary="Facilities in your scope, with their status",
    description="Every facility you see (admin: all; regulator: the district's; manager "
    "and staff: their own), by id, each with its FacilityStatus now.",
)
async def list_facilities(
    hub: HubDep,
    principal: Reader,
    district: Annotated[str | None, Query(max_length=128)] = None,
    kind: FacilityKind | None = None,
    limit: Limit = 100,
    after: AfterId = None,
) -> dict[str, Any]:
    """Facilities in scope."""
    if district is not None and principal.role == "regulator" and district != principal.district:
        raise not_found(f"district {district!r}")
    async with connection(hub) as conn:
        rows = await api_queries.list_facilities(
            conn,
            principal.scope_params(),
            district=district,
            kind=kind,
            after=after,
            limit=limit,
        )
        statuses = await facility_statuses(conn, [row["id"] for row in rows[:limit]])
    return page(
        rows,
        limit,
        "text",
        lambda row: row["id"],
        lambda row: {**row, "status": statuses[row["id"]]},
    )


@router.get(
    "/facilities/{facility_id}",
    response_model=FacilityDetail,
    summary="One facility, its zones and devices",
    description="The facility with its status, each zone's people against capacity and "
    "staff ratio, and its devices by type. A regulator's read is written to access_log "
    "(SPEC §7, PIPL).",
)
async def get_facility(
    facility_id: FacilityId, hub: HubDep, principal: Reader, request: Request
) -> dict[str, Any]:
    """One facility in detail."""
    async with connection(hub) as conn:
        row = await visible_facility(conn, principal, facility_id)
        statuses = await facility_statuses(conn, [row["id"]])
        zones = await zone_status(conn, [row["id"]])
        by_type = await api_queries.devices_by_type(conn, row["id"])
        await log_regulator_read(conn, principal, request, row["id"])
    return {
        **row,
        "status": statuses[row["id"]],
        "zones": zones.get(row["id"], []),
        "devices_by_type": by_type,
    }
