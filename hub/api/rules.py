"""A facility's alert rule parameters: defaults, overrides, and what is in force."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

from devices import RULE_PARAMS
from hub.api.common import Configurer, FacilityId, facility_scope
from hub.api.deps import HubDep
from hub.api.errors import ERROR_RESPONSES, error_responses
from hub.api.models import RuleOverrideIn, Rules
from hub.auth import Principal
from hub.errors import ApiError, RuleError
from hub.rules import validate_override
from hub.storage import api_queries
from hub.storage.rules import load_rule_params, save_overrides

if TYPE_CHECKING:
    from hub.runtime import Hub

# Every route here may answer the shared errors; a route adds its own words for a 400.
router = APIRouter(tags=["rules"], responses=ERROR_RESPONSES)

# RuleError messages name "kind.param:" or "unknown alert kind".
_PARAM_IN_MESSAGE = re.compile(r": [a-z_]+\.([A-Za-z0-9_]+): ")


async def _rules(hub: Hub, principal: Principal, facility_id: str) -> dict[str, Any]:
    async with facility_scope(hub, principal, facility_id) as conn:
        overrides = await api_queries.rule_overrides(conn, facility_id)
        params = await load_rule_params(conn)
    return {
        "facility_id": facility_id,
        "defaults": {kind: dict(spec.defaults) for kind, spec in RULE_PARAMS.items()},
        "overrides": [{**row, "zone_id": row["zone_id"] or None} for row in overrides],
        "in_force": {kind: params.get(kind, facility_id) for kind in RULE_PARAMS},
    }


@router.get(
    "/facilities/{facility_id}/rules",
    response_model=Rules,
    summary="A facility's rule parameters",
    description="Catalogue defaults, the facility's stored overrides (facility-wide and "
    "per zone), and the facility-wide values in force.",
)
async def get_rules(facility_id: FacilityId, hub: HubDep, principal: Configurer) -> dict[str, Any]:
    """Rules of a facility."""
    return await _rules(hub, principal, facility_id)


@router.put(
    "/facilities/{facility_id}/rules",
    response_model=Rules,
    summary="Override rule parameters",
    description="Set some parameters of one alert kind for the facility or one zone; "
    "merged into what the kind already has. A bad value is a 400 naming the field. "
    "Running hubs apply it within 30 s.",
    responses=error_responses("a bad override"),
)
async def put_rules(
    facility_id: FacilityId, body: RuleOverrideIn, hub: HubDep, principal: Configurer
) -> dict[str, Any]:
    """Store an override."""
    async with facility_scope(hub, principal, facility_id) as conn:
        try:
            override = validate_override(facility_id, body.zone_id or "", body.kind, body.params)
            await save_overrides(conn, [override], principal.username)
        except RuleError as exc:
            message = str(exc)
            found = _PARAM_IN_MESSAGE.search(message)
            if found:
                field = f"body.params.{found.group(1)}"
            elif "zone" in message and "no such zone" in message:
                field = "body.zone_id"
            elif "unknown alert kind" in message:
                field = "body.kind"
            else:
                field = "body.params"
            raise ApiError(400, message, field) from None
    return await _rules(hub, principal, facility_id)
