"""For admins: the access log, every read of a facility's detail by a regulator (SPEC §7)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from hub.api.common import BeforeNumber, Limit, page
from hub.api.deps import HubDep, connection, require
from hub.api.errors import ERROR_RESPONSES
from hub.api.models import ID, AccessLogList
from hub.auth import USERNAME, Principal
from hub.storage import accounts

router = APIRouter(tags=["audit"], responses=ERROR_RESPONSES)

Admin = Annotated[Principal, Depends(require("audit"))]


def _entry_json(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "id": str(row["id"])}


@router.get(
    "/access-log",
    response_model=AccessLogList,
    summary="Regulators' reads of facility detail",
    description="Who read which facility's detail (the facility, one of its devices or its "
    "readings), with which route and when; newest first. Filter by facility and by user. "
    "Written in the same transaction as each read (PIPL).",
)
async def list_access_log(
    hub: HubDep,
    principal: Admin,
    facility: Annotated[str | None, Query(pattern=ID, description="one facility's reads")] = None,
    user: Annotated[
        str | None, Query(pattern=USERNAME.pattern, description="one account's reads")
    ] = None,
    limit: Limit = 100,
    before: BeforeNumber = None,
) -> dict[str, Any]:
    """The access log."""
    del principal
    async with connection(hub) as conn:
        rows = await accounts.select_access_log(
            conn, facility_id=facility, username=user, before=before, limit=limit
        )
    return page(rows, limit, "int", lambda row: int(row["id"]), _entry_json)
