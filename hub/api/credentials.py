"""A device's MQTT credentials (issue, rotate, revoke) and its placement in a zone.

For an admin, and for the manager of the device's facility (SPEC §7): the password is in
the answer once and never again.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response

from hub.api.common import AfterId, DeviceId, Limit, page, visible_device
from hub.api.deps import HubDep, connection, require
from hub.api.errors import ERROR_RESPONSES, error_responses
from hub.api.models import Credentials, CredentialsIn, PlaceIn, UnplacedList
from hub.auth import Principal
from hub.credentials import issue, revoke
from hub.errors import ApiError, RegistryError
from hub.storage import registry
from hub.wire import Device, device_json

router = APIRouter(tags=["devices"], responses=ERROR_RESPONSES)

DeviceManager = Annotated[Principal, Depends(require("devices"))]


@contextlib.asynccontextmanager
async def _device_connection(
    hub: HubDep, principal: Principal, device_id: str
) -> AsyncIterator[Any]:
    """A connection, once the device is found in the caller's scope."""
    async with connection(hub) as conn:
        await visible_device(conn, principal, device_id)
        yield conn


def _actor(principal: Principal) -> str:
    return f"api:{principal.username}"


@router.post(
    "/devices/{device_id}/credentials",
    response_model=Credentials,
    status_code=201,
    summary="Issue or rotate a device's MQTT credentials",
    description="The device's username and client id are its id; the password is in this "
    "answer only. A device that has credentials gets 409 unless `rotate` is true; after a "
    "rotation the old password stops working and a device connected with it is "
    "disconnected.",
    responses=error_responses("a bad body", "the device already has credentials"),
)
async def post_credentials(
    device_id: DeviceId, body: CredentialsIn, hub: HubDep, principal: DeviceManager
) -> dict[str, str]:
    """Issue credentials."""
    async with _device_connection(hub, principal, device_id) as conn:
        issued = await issue(
            conn, device_id, _actor(principal), rotate=body.rotate, brokers=hub.brokers
        )
    return issued.as_json()


@router.delete(
    "/devices/{device_id}/credentials",
    status_code=204,
    response_class=Response,
    summary="Revoke a device's MQTT credentials",
    description="The device is disconnected and cannot connect again until it is issued new "
    "credentials. 404 when it has none in force.",
)
async def delete_credentials(
    device_id: DeviceId, hub: HubDep, principal: DeviceManager
) -> Response:
    """Revoke credentials."""
    async with _device_connection(hub, principal, device_id) as conn:
        await revoke(conn, device_id, _actor(principal), brokers=hub.brokers)
    return Response(status_code=204)


@router.post(
    "/devices/{device_id}/place",
    response_model=Device,
    summary="Place a device in a zone",
    description="Put a device (for example one waiting in /devices-unplaced) in a zone of "
    "its facility; 404 names a zone the facility does not have.",
)
async def place_device(
    device_id: DeviceId, body: PlaceIn, hub: HubDep, principal: DeviceManager
) -> dict[str, Any]:
    """Place a device."""
    async with _device_connection(hub, principal, device_id) as conn:
        try:
            await registry.place_device(conn, device_id, body.zone_id)
        except RegistryError as exc:
            raise ApiError(404, str(exc), "body.zone_id") from exc
        row = await visible_device(conn, principal, device_id)
    return device_json(row)


@router.get(
    "/devices-unplaced",
    response_model=UnplacedList,
    summary="Devices waiting to be placed",
    description="Devices with credentials in force but no zone yet, most recently heard "
    "first; a manager sees their own facility's.",
)
async def list_unplaced(
    hub: HubDep, principal: DeviceManager, limit: Limit = 100, after: AfterId = None
) -> dict[str, Any]:
    """Unplaced devices."""
    async with connection(hub) as conn:
        rows = await registry.list_unplaced(
            conn, None if principal.sees_all else principal.facility_id
        )
    waiting = [row for row in rows if after is None or row.device_id > after]
    return page(waiting[: limit + 1], limit, "text", lambda row: row.device_id, asdict)
