"""The wire shapes of SPEC §6: Alert, Device and Facility, as REST, live and webhooks carry them.

Each shape is defined once, here: the pydantic model documents it in the OpenAPI document,
and the `*_json` function beside it writes it. The REST routes, the live websocket and the
webhook notices all call these, so the screen, the phone and an integrator see one object.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from hub.models import Alert as AlertValue
from hub.models import AlertChange

Priority = Literal["high", "medium", "low"]
FacilityKind = Literal["elderly", "childcare", "integrated"]
DeviceType = Literal["fall_sensor", "emergency_button", "occupancy_counter"]
Disposition = Literal["real", "false_alarm", "test", "other"]


class OpenAlerts(BaseModel):
    """Open alerts by priority (shelved ones not counted)."""

    high: int
    medium: int
    low: int


class FacilityStatus(BaseModel):
    """A facility's state for the screen; overdue > alert > offline > ok."""

    state: Literal["ok", "alert", "overdue", "offline"]
    open_alerts: OpenAlerts
    overdue: int
    devices_total: int
    devices_online: int
    present: int
    staff: int


class Facility(BaseModel):
    """A registered facility (SPEC §5) and its status now."""

    id: str
    name: str
    kind: FacilityKind
    district: str
    address: str
    latitude: float | None
    longitude: float | None
    registration_no: str
    beds: int
    childcare_places: int
    status: FacilityStatus


class Device(BaseModel):
    """A registered device and its latest state."""

    id: str
    facility_id: str
    zone_id: str | None
    type: DeviceType
    vendor: str
    model: str
    heartbeat_s: int
    online: bool
    battery: float | None
    last_seen: datetime | None
    presence: bool | None
    count: int | None
    staff: int | None


class Alert(BaseModel):
    """An alert (SPEC §4, §6), as alert_json writes it."""

    id: str
    facility_id: str
    zone_id: str | None
    device_id: str | None
    kind: str
    priority: Priority
    state: Literal["active", "acknowledged", "attended", "resolved"]
    count: int
    latched: bool
    raised_at: datetime
    last_raised_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    attended_at: datetime | None
    attended_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    disposition: Disposition | None
    note: str
    cleared_at: datetime | None
    renotified_at: datetime | None
    overdue_at: datetime | None
    overdue: bool
    shelved: bool
    detail: dict[str, Any]


_DEVICE_FIELDS = tuple(Device.model_fields)


def device_json(row: dict[str, Any]) -> dict[str, Any]:
    """A `Device` from a row of the device select (hub/storage/api_queries.py)."""
    device = {name: row[name] for name in _DEVICE_FIELDS}
    last_seen: datetime | None = device["last_seen"]
    device["last_seen"] = None if last_seen is None else last_seen.isoformat()
    device["online"] = bool(device["online"])
    return device


def alert_json(alert: AlertValue) -> dict[str, Any]:
    """An `Alert`: ids as strings, times as RFC 3339."""

    def when(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": str(alert.id),
        "facility_id": alert.facility_id,
        "zone_id": alert.zone_id,
        "device_id": alert.device_id,
        "kind": alert.kind,
        "priority": alert.priority,
        "state": alert.state,
        "count": alert.count,
        "latched": alert.latched,
        "raised_at": when(alert.raised_at),
        "last_raised_at": when(alert.last_raised_at),
        "acknowledged_at": when(alert.acknowledged_at),
        "acknowledged_by": alert.acknowledged_by,
        "attended_at": when(alert.attended_at),
        "attended_by": alert.attended_by,
        "resolved_at": when(alert.resolved_at),
        "resolved_by": alert.resolved_by,
        "disposition": alert.disposition,
        "note": alert.note,
        "cleared_at": when(alert.cleared_at),
        "renotified_at": when(alert.renotified_at),
        "overdue_at": when(alert.overdue_at),
        "overdue": alert.overdue_at is not None,
        "shelved": alert.shelved,
        "detail": alert.detail,
    }


def change_json(change: AlertChange) -> dict[str, Any]:
    """An alert change as the live feed and webhooks carry it: the action and the `Alert`."""
    return {
        "type": "alert",
        "action": change.action,
        "previous": change.previous,
        "actor": change.actor,
        "at": change.at.isoformat(),
        "note": change.note,
        "alert": alert_json(change.alert),
    }
