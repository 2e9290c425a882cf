"""Devices with their latest state, and a device's telemetry history in buckets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request

from hub.api.common import (
    AfterId,
    DeviceId,
    FacilityFilter,
    From,
    Limit,
    To,
    facility_scope,
    log_regulator_read,
    page,
    period,
    visible_device,
)
from hub.api.deps import HubDep, Reader, connection
from hub.api.errors import ERROR_RESPONSES, error_responses
from hub.api.models import Bucket, DeviceList, Readings
from hub.auth import Principal
from hub.errors import ApiError
from hub.storage import api_queries
from hub.storage.api_queries import BUCKET_SECONDS
from hub.wire import Device, DeviceType, device_json

# Every route here may answer the shared errors; a route adds its own words for a 400.
router = APIRouter(tags=["devices"], responses=ERROR_RESPONSES)

MAX_POINTS = 100_000
DEFAULT_HISTORY = timedelta(hours=24)


@router.get(
    "/devices",
    response_model=DeviceList,
    summary="Devices in your scope",
    description="Registered devices with their latest state, by id; filter by facility, "
    "type, and whether they are online (heard within two heartbeats).",
)
async def list_devices(
    hub: HubDep,
    principal: Reader,
    facility: FacilityFilter = None,
    type: DeviceType | None = None,
    online: bool | None = None,
    limit: Limit = 100,
    after: AfterId = None,
) -> dict[str, Any]:
    """Devices in scope."""
    async with facility_scope(hub, principal, facility) as conn:
        rows = await api_queries.list_devices(
            conn,
            principal.scope_params(),
            facility_id=facility,
            device_type=type,
            online=online,
            after=after,
            limit=limit,
        )
    return page(rows, limit, "text", lambda row: row["id"], device_json)


async def _visible_device(
    hub: Any, principal: Principal, device_id: str, request: Request
) -> dict[str, Any]:
    """The device, when the caller sees its facility; a regulator's read is logged."""
    async with connection(hub) as conn:
        row = await visible_device(conn, principal, device_id)
        await log_regulator_read(conn, principal, request, row["facility_id"])
    return row


@router.get(
    "/devices/{device_id}",
    response_model=Device,
    summary="One device",
    description="A device and its latest state. A regulator's read is written to "
    "access_log (SPEC §7, PIPL).",
)
async def get_device(
    device_id: DeviceId, hub: HubDep, principal: Reader, request: Request
) -> dict[str, Any]:
    """One device."""
    return device_json(await _visible_device(hub, principal, device_id, request))


@router.get(
    "/devices/{device_id}/readings",
    response_model=Readings,
    summary="A device's telemetry history",
    description="Telemetry per bucket (1m, 5m, 1h, 1d; aligned to UTC) in [from, to); "
    "from/to default to the last 24 hours. At most 100,000 points. 5 minutes of an "
    "occupancy counter read the occupancy_5m aggregate (staff_avg and n are null there). "
    "A regulator's read is written to access_log (SPEC §7, PIPL).",
    responses=error_responses("from not before to, or too many buckets"),
)
async def get_readings(
    device_id: DeviceId,
    hub: HubDep,
    principal: Reader,
    start: From = None,
    end: To = None,
    bucket: Bucket = "5m",
    *,
    request: Request,
) -> dict[str, Any]:
    """A device's history."""
    device = await _visible_device(hub, principal, device_id, request)
    start, end = period(
        start, end, now=datetime.now(UTC), default=DEFAULT_HISTORY, words="24 hours"
    )
    points = (end - start).total_seconds() / BUCKET_SECONDS[bucket]
    if points > MAX_POINTS:
        raise ApiError(
            400,
            f"{points:.0f} buckets of {bucket} asked; at most {MAX_POINTS:,}: "
            "choose a shorter period or a larger bucket",
            "query.bucket",
        )
    async with connection(hub) as conn:
        rows = await api_queries.device_readings(
            conn,
            device_id=device["id"],
            device_type=device["type"],
            start=start,
            end=end,
            bucket=bucket,
        )
    return {"device_id": device["id"], "bucket": bucket, "points": rows}
