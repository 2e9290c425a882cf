"""Alerts in scope, one alert with its trail, and the actions staff take on them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from hub.api.common import Cursor, FacilityFilter, From, Limit, To, page, visible_facility
from hub.api.deps import HubDep, Reader, connection, require
from hub.api.errors import ERROR_RESPONSES, ApiError, ErrorBody, not_found
from hub.api.models import (
    AlertDetail,
    AlertList,
    AlertStateFilter,
    CommentIn,
    NoteIn,
    ResolveIn,
    SnoozeIn,
)
from hub.api.pagination import decode_cursor
from hub.auth import Principal
from hub.models import AlertChange
from hub.storage import api_queries
from hub.wire import Alert, Priority, alert_json

if TYPE_CHECKING:
    from hub.runtime import Hub

router = APIRouter(tags=["alerts"])

AlertId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the alert's id")]
_ACTION_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    400: {"model": ErrorBody, "description": "the action's input is not acceptable"},
    409: {"model": ErrorBody, "description": "the alert's state does not allow it"},
}


@router.get(
    "/alerts",
    response_model=AlertList,
    summary="Alerts in your scope",
    description="Newest first. state=open means not resolved; from/to bound raised_at.",
    responses=ERROR_RESPONSES,
)
async def list_alerts(
    hub: HubDep,
    principal: Reader,
    state: AlertStateFilter | None = None,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    priority: Priority | None = None,
    facility: FacilityFilter = None,
    start: From = None,
    end: To = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Alerts in scope."""
    before = decode_cursor("time_id", cursor) if cursor is not None else None
    async with connection(hub) as conn:
        if facility is not None:
            await visible_facility(conn, principal, facility)
        alerts = await api_queries.list_alerts(
            conn,
            principal.scope_params(),
            state=state,
            kind=kind,
            priority=priority,
            facility_id=facility,
            start=start,
            end=end,
            before=before if isinstance(before, tuple) else None,
            limit=limit,
        )
    return page(alerts, limit, "time_id", lambda a: (a.raised_at, a.id), alert_json)


async def _check_scope(hub: Hub, principal: Principal, alert_id: int) -> None:
    async with connection(hub) as conn:
        where = await api_queries.alert_facility(conn, alert_id)
    if where is None or not principal.sees_facility(*where):
        raise not_found(f"alert {alert_id}")


@router.get(
    "/alerts/{alert_id}",
    response_model=AlertDetail,
    summary="One alert and its trail",
    description="The alert with every change made to it: who, when, from and to what.",
    responses=ERROR_RESPONSES,
)
async def get_alert(alert_id: AlertId, hub: HubDep, principal: Reader) -> dict[str, Any]:
    """One alert."""
    await _check_scope(hub, principal, alert_id)
    alert = await hub.alerts.get(alert_id)
    async with connection(hub) as conn:
        audit = await api_queries.alert_audit(conn, alert_id)
    return {**alert_json(alert), "audit": audit}


async def _act(
    hub: Hub,
    principal: Principal,
    alert_id: int,
    action: Callable[[], Awaitable[AlertChange]],
) -> dict[str, Any]:
    await _check_scope(hub, principal, alert_id)
    change = await action()
    return alert_json(change.alert)


@router.post(
    "/alerts/{alert_id}/ack",
    response_model=Alert,
    summary="Acknowledge (take over) an alert",
    description="active -> acknowledged, by you. 409 when someone already took it over.",
    responses=_ACTION_RESPONSES,
)
async def ack_alert(
    alert_id: AlertId,
    hub: HubDep,
    principal: Annotated[Principal, Depends(require("ack"))],
    body: NoteIn | None = None,
) -> dict[str, Any]:
    """Acknowledge."""
    note = body.note if body is not None else ""
    return await _act(
        hub, principal, alert_id, lambda: hub.alerts.acknowledge(alert_id, principal.username, note)
    )


@router.post(
    "/alerts/{alert_id}/attend",
    response_model=Alert,
    summary="Mark an alert attended (someone is on site)",
    description="active or acknowledged -> attended, by you.",
    responses=_ACTION_RESPONSES,
)
async def attend_alert(
    alert_id: AlertId,
    hub: HubDep,
    principal: Annotated[Principal, Depends(require("attend"))],
    body: NoteIn | None = None,
) -> dict[str, Any]:
    """Attend."""
    note = body.note if body is not None else ""
    return await _act(
        hub, principal, alert_id, lambda: hub.alerts.attend(alert_id, principal.username, note)
    )


@router.post(
    "/alerts/{alert_id}/resolve",
    response_model=Alert,
    summary="Resolve an alert with a disposition",
    description="-> resolved, with real, false_alarm, test or other, and a note. "
    "409 when it is already resolved.",
    responses=_ACTION_RESPONSES,
)
async def resolve_alert(
    alert_id: AlertId,
    body: ResolveIn,
    hub: HubDep,
    principal: Annotated[Principal, Depends(require("resolve"))],
) -> dict[str, Any]:
    """Resolve."""
    return await _act(
        hub,
        principal,
        alert_id,
        lambda: hub.alerts.resolve(alert_id, principal.username, body.disposition, body.note),
    )


@router.post(
    "/alerts/{alert_id}/comment",
    response_model=Alert,
    summary="Comment on an alert",
    description="Add a note to the alert's trail; its state does not change.",
    responses=_ACTION_RESPONSES,
)
async def comment_alert(
    alert_id: AlertId,
    body: CommentIn,
    hub: HubDep,
    principal: Annotated[Principal, Depends(require("comment"))],
) -> dict[str, Any]:
    """Comment."""
    return await _act(
        hub,
        principal,
        alert_id,
        lambda: hub.alerts.comment(alert_id, principal.username, body.note),
    )


@router.post(
    "/alerts/{alert_id}/snooze",
    response_model=Alert,
    summary="Snooze the alert's zone",
    description="Shelve the alerts of this alert's zone for `minutes` (at most 7 days), "
    "with a reason; SOS calls are never shelved. 400 for an alert without a zone.",
    responses=_ACTION_RESPONSES,
)
async def snooze_alert(
    alert_id: AlertId,
    body: SnoozeIn,
    hub: HubDep,
    principal: Annotated[Principal, Depends(require("snooze"))],
) -> dict[str, Any]:
    """Snooze."""
    await _check_scope(hub, principal, alert_id)
    alert = await hub.alerts.get(alert_id)
    if alert.zone_id is None:
        raise ApiError(400, f"alert {alert_id} is not about a zone; there is nothing to snooze")
    now = hub.clock.now()
    await hub.alerts.snooze(
        alert.facility_id,
        alert.zone_id,
        until=now + timedelta(minutes=body.minutes),
        reason=body.reason,
        actor=principal.username,
        now=now,
    )
    return alert_json(await hub.alerts.get(alert_id))
