"""Alerts in scope, one alert with its trail, and the actions staff take on them."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel

from hub.api.common import BeforeTime, FacilityFilter, From, Limit, To, facility_scope, page
from hub.api.deps import HubDep, Reader, connection, require
from hub.api.errors import ERROR_RESPONSES, error_responses, not_found
from hub.api.models import (
    AlertDetail,
    AlertList,
    AlertStateFilter,
    CommentIn,
    NoteIn,
    ResolveIn,
    SnoozeIn,
)
from hub.auth import Action, Principal
from hub.errors import ApiError
from hub.models import Alert as AlertValue
from hub.storage import api_queries
from hub.wire import Alert, Priority, alert_json

if TYPE_CHECKING:
    from hub.runtime import Hub

# Every route here may answer the shared errors; a route adds its own words for a 400.
router = APIRouter(tags=["alerts"], responses=ERROR_RESPONSES)

AlertId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the alert's id")]
_ACTION_RESPONSES = error_responses(
    "the action's input is not acceptable", conflict="the alert's state does not allow it"
)


@router.get(
    "/alerts",
    response_model=AlertList,
    summary="Alerts in your scope",
    description="Newest first. state=open means not resolved; from/to bound raised_at.",
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
    before: BeforeTime = None,
) -> dict[str, Any]:
    """Alerts in scope."""
    async with facility_scope(hub, principal, facility) as conn:
        alerts = await api_queries.list_alerts(
            conn,
            principal.scope_params(),
            state=state,
            kind=kind,
            priority=priority,
            facility_id=facility,
            start=start,
            end=end,
            before=before,
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
)
async def get_alert(alert_id: AlertId, hub: HubDep, principal: Reader) -> dict[str, Any]:
    """One alert."""
    await _check_scope(hub, principal, alert_id)
    alert = await hub.alerts.get(alert_id)
    async with connection(hub) as conn:
        audit = await api_queries.alert_audit(conn, alert_id)
    return {**alert_json(alert), "audit": audit}


AlertApply = Callable[["Hub", Principal, int, Any], Awaitable[AlertValue]]


def _alert_action(
    verb: Action,
    body_model: type[BaseModel],
    apply: AlertApply,
    *,
    name: str,
    summary: str,
    description: str,
    optional_body: bool = False,
) -> None:
    """One POST /alerts/{alert_id}/{verb} route: scope check, `apply`, the alert after it.

    The endpoint's signature is built here, so FastAPI reads the body model and the role
    dependency of each action the same way as for a hand-written route.
    """

    async def act(alert_id: int, hub: Hub, principal: Principal, body: Any) -> dict[str, Any]:
        await _check_scope(hub, principal, alert_id)
        return alert_json(await apply(hub, principal, alert_id, body))

    parameter = inspect.Parameter
    act.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            parameter("alert_id", parameter.POSITIONAL_OR_KEYWORD, annotation=AlertId),
            parameter("hub", parameter.POSITIONAL_OR_KEYWORD, annotation=HubDep),
            parameter(
                "principal",
                parameter.POSITIONAL_OR_KEYWORD,
                annotation=Annotated[Principal, Depends(require(verb))],
            ),
            parameter(
                "body",
                parameter.POSITIONAL_OR_KEYWORD,
                annotation=body_model | None if optional_body else body_model,
                default=None if optional_body else parameter.empty,
            ),
        ],
        return_annotation=dict[str, Any],
    )
    act.__doc__ = summary
    router.add_api_route(
        f"/alerts/{{alert_id}}/{verb}",
        act,
        methods=["POST"],
        name=name,
        response_model=Alert,
        summary=summary,
        description=description,
        responses=_ACTION_RESPONSES,
    )


async def _acknowledge(
    hub: Hub, principal: Principal, alert_id: int, body: NoteIn | None
) -> AlertValue:
    note = body.note if body is not None else ""
    return (await hub.alerts.acknowledge(alert_id, principal.username, note)).alert


async def _attend(hub: Hub, principal: Principal, alert_id: int, body: NoteIn | None) -> AlertValue:
    note = body.note if body is not None else ""
    return (await hub.alerts.attend(alert_id, principal.username, note)).alert


async def _resolve(hub: Hub, principal: Principal, alert_id: int, body: ResolveIn) -> AlertValue:
    change = await hub.alerts.resolve(alert_id, principal.username, body.disposition, body.note)
    return change.alert


async def _comment(hub: Hub, principal: Principal, alert_id: int, body: CommentIn) -> AlertValue:
    return (await hub.alerts.comment(alert_id, principal.username, body.note)).alert


async def _snooze(hub: Hub, principal: Principal, alert_id: int, body: SnoozeIn) -> AlertValue:
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
    return await hub.alerts.get(alert_id)


_alert_action(
    "ack",
    NoteIn,
    _acknowledge,
    optional_body=True,
    name="ack_alert",
    summary="Acknowledge (take over) an alert",
    description="active -> acknowledged, by you. 409 when someone already took it over.",
)
_alert_action(
    "attend",
    NoteIn,
    _attend,
    optional_body=True,
    name="attend_alert",
    summary="Mark an alert attended (someone is on site)",
    description="active or acknowledged -> attended, by you.",
)
_alert_action(
    "resolve",
    ResolveIn,
    _resolve,
    name="resolve_alert",
    summary="Resolve an alert with a disposition",
    description="-> resolved, with real, false_alarm, test or other, and a note. "
    "409 when it is already resolved.",
)
_alert_action(
    "comment",
    CommentIn,
    _comment,
    name="comment_alert",
    summary="Comment on an alert",
    description="Add a note to the alert's trail; its state does not change.",
)
_alert_action(
    "snooze",
    SnoozeIn,
    _snooze,
    name="snooze_alert",
    summary="Snooze the alert's zone",
    description="Shelve the alerts of this alert's zone for `minutes` (at most 7 days), "
    "with a reason; SOS calls are never shelved. 400 for an alert without a zone.",
)
