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
from hub.models import AlertChange, AlertState, Disposition, Priority, StaffDisposition

__all__ = [
    "Alert",
    "AlertState",
    "Device",
    "DeviceType",
    "Disposition",
    "Facility",
    "FacilityKind",
    "FacilityStatus",
    "OpenAlerts",
    "Priority",
    "StaffDisposition",
    "alert_json",
    "change_json",
    "device_json",
]

FacilityKind = Literal["elderly", "childcare", "integrated"]
DeviceType = Literal["fall_sensor", "emergency_button", "occupancy_counter"]


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
    state: AlertState
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


# The Alert's fields that are the domain value's own; `id` and `overdue` are written apart.
_ALERT_VALUE_FIELDS = tuple(name for name in Alert.model_fields if name not in ("id", "overdue"))


def alert_json(alert: AlertValue) -> dict[str, Any]:
    """An `Alert`: ids as strings, times as RFC 3339, in the model's field order."""
    values: dict[str, Any] = {"id": str(alert.id)}
    for name in _ALERT_VALUE_FIELDS:
        value = getattr(alert, name)
        values[name] = value.isoformat() if isinstance(value, datetime) else value
    values["overdue"] = alert.overdue_at is not None
    return {name: values[name] for name in Alert.model_fields}


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
