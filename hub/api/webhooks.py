"""A facility's webhooks: where its staff notifications go (hub/notify/)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from hub.api.common import Configurer, FacilityId, facility_scope
from hub.api.deps import HubDep
from hub.api.errors import ERROR_RESPONSES, error_responses, not_found
from hub.api.models import Webhook, WebhookIn, WebhookList
from hub.notify import add_webhook, redact_url
from hub.storage import api_queries

# Every route here may answer the shared errors; a route adds its own words for a 400.
router = APIRouter(tags=["webhooks"], responses=ERROR_RESPONSES)


def _webhook_json(row: dict[str, Any]) -> dict[str, Any]:
    # A robot's key or token is in its URL: shown redacted, like `carehub webhooks list`.
    return {**row, "id": str(row["id"]), "url": redact_url(row["url"])}


@router.get(
    "/facilities/{facility_id}/webhooks",
    response_model=WebhookList,
    summary="A facility's webhooks",
    description="Each webhook (URL redacted, secret never shown) and how its endpoint is doing.",
)
async def list_webhooks(
    facility_id: FacilityId, hub: HubDep, principal: Configurer
) -> dict[str, Any]:
    """Webhooks of a facility."""
    async with facility_scope(hub, principal, facility_id) as conn:
        rows = await api_queries.list_webhooks(conn, facility_id)
    return {"items": [_webhook_json(row) for row in rows], "next": None}


@router.post(
    "/facilities/{facility_id}/webhooks",
    response_model=Webhook,
    status_code=201,
    summary="Add a webhook",
    description="Send the facility's alert notices to a URL as json, 企业微信 (wecom) or "
    "钉钉 (dingtalk); 400 says what is wrong with the URL, format or secret.",
    responses=error_responses("a bad webhook"),
)
async def post_webhook(
    facility_id: FacilityId, body: WebhookIn, hub: HubDep, principal: Configurer
) -> dict[str, Any]:
    """Add a webhook."""
    async with facility_scope(hub, principal, facility_id) as conn:
        webhook_id = await add_webhook(conn, facility_id, body.url, body.format, body.secret)
        rows = await api_queries.list_webhooks(conn, facility_id)
    return next(_webhook_json(row) for row in rows if row["id"] == webhook_id)


@router.delete(
    "/facilities/{facility_id}/webhooks/{webhook_id}",
    status_code=204,
    response_class=Response,
    summary="Remove a webhook",
    description="Delete the webhook and the notices still queued for it.",
)
async def delete_webhook(
    facility_id: FacilityId,
    webhook_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    hub: HubDep,
    principal: Configurer,
) -> Response:
    """Remove a webhook."""
    async with facility_scope(hub, principal, facility_id) as conn:
        if not await api_queries.delete_webhook(conn, facility_id, webhook_id):
            raise not_found(f"webhook {webhook_id} at facility {facility_id!r}")
    return Response(status_code=204)
