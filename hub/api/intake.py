"""For admins: devices heard but not registered, and messages the hub refused."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from hub.api.common import AfterId, BeforeNumber, Limit, page
from hub.api.deps import HubDep, connection, require
from hub.api.errors import ERROR_RESPONSES
from hub.api.models import DeadLetterList, PendingList
from hub.auth import Principal
from hub.storage import api_queries

# Every route here may answer the shared errors; a route adds its own words for a 400.
router = APIRouter(tags=["registry"], responses=ERROR_RESPONSES)

Admin = Annotated[Principal, Depends(require("registry"))]


@router.get(
    "/pending-devices",
    response_model=PendingList,
    summary="Devices heard but not registered",
    description="Register one with `carehub devices register`.",
)
async def list_pending(
    hub: HubDep, principal: Admin, limit: Limit = 100, after: AfterId = None
) -> dict[str, Any]:
    """Pending devices."""
    del principal
    async with connection(hub) as conn:
        rows = await api_queries.list_pending(conn, after=after, limit=limit)
    return page(rows, limit, "text", lambda row: row["device_id"], dict)


def _dead_letter_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "id": str(row["id"]),
        "payload": bytes(row["payload"]).decode("utf-8", "replace"),
    }


@router.get(
    "/dead-letters",
    response_model=DeadLetterList,
    summary="Refused messages",
    description="Every message the hub refused, newest first, with its reason code "
    "(SPEC §3); filter by device and reason.",
)
async def list_dead_letters(
    hub: HubDep,
    principal: Admin,
    device: Annotated[str | None, Query(max_length=64)] = None,
    reason: Annotated[str | None, Query(max_length=32)] = None,
    limit: Limit = 100,
    before: BeforeNumber = None,
) -> dict[str, Any]:
    """Dead letters."""
    del principal
    async with connection(hub) as conn:
        rows = await api_queries.list_dead_letters(
            conn,
            device_id=device,
            reason=reason,
            before=before,
            limit=limit,
        )
    return page(rows, limit, "int", lambda row: int(row["id"]), _dead_letter_json)
