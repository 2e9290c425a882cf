"""The wire shapes of SPEC §6: Alert, Device and Facility, as REST, live and webhooks carry them.

Each shape is defined once, here: the pydantic model documents it in the OpenAPI document,
and the `*_json` function beside it writes it. The REST routes, the live websocket and the
webhook notices all call these, so the screen, the phone and an integrator see one object.

The live websocket's messages (docs/api.md "Live websocket") are here too: `LiveMessage`
documents them in the same OpenAPI document (the websocket itself has no place in it), and
the `*_message` functions write the ones more than one module sends. The hub builds them as
plain dicts, as fast as it can; the tests hold every message a screen receives against
`LiveMessage`, whose models refuse a field they do not declare.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hub.models import Alert as AlertValue
from hub.models import AlertAction, AlertChange, AlertState, Disposition, Priority, StaffDisposition

__all__ = [
    "Alert",
    "AlertGroupMessage",
    "AlertMessage",
    "AlertProvisionalMessage",
    "AlertState",
    "Device",
    "DeviceStatusMessage",
    "DeviceType",
    "Disposition",
    "Facility",
    "FacilityKind",
    "FacilityStatus",
    "FacilityStatusMessage",
    "LaggingMessage",
    "LiveMessage",
    "OpenAlerts",
    "PingMessage",
    "Priority",
    "ResumedMessage",
    "SnapshotMessage",
    "StaffDisposition",
    "Zone",
    "ZoneCountMessage",
    "alert_json",
    "change_json",
    "device_json",
    "device_status_message",
    "facility_status_message",
    "zone_count_message",
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


class Zone(BaseModel):
    """A room, class or common area; present/staff are null without a current counter."""

    zone_id: str
    name: str
    kind: Literal["room", "class", "common"]
    capacity: int | None
    class_type: str | None
    present: int | None
    staff: int | None
    staff_ratio_limit: int | None = Field(description="children per staff member allowed")
    over_capacity: bool
    ratio_breached: bool


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


# -- the live websocket (docs/api.md "Live websocket") ------------------------------------


class _Message(BaseModel):
    """A live message: exactly the fields it declares, so a test catches one added unseen."""

    model_config = ConfigDict(extra="forbid")


class SnapshotMessage(_Message):
    """Everything in the client's scope now; `change_id` is the newest change it contains."""

    type: Literal["snapshot"]
    change_id: int
    facilities: list[Facility]
    alerts: list[Alert] = Field(description="the open alerts")
    zones: dict[str, list[Zone]] = Field(description="each facility's zones, by facility id")
    devices: list[Device] = Field(
        default_factory=list, description="staff and managers only: their facility's devices"
    )


class ResumedMessage(_Message):
    """`since` was still kept: the missed `alert` messages follow, then the current statuses."""

    type: Literal["resumed"]
    change_id: int
    partial: bool = Field(
        default=False,
        description="true while the database is unreachable: what was stored since `since` "
        "cannot be read, so only what is not stored follows (alert_provisional, statuses); "
        "the hub closes the connection with 1012 once the database is back, and the client "
        "reconnects with the same `since`",
    )


class AlertMessage(_Message):
    """One committed change of an alert: `change_json` and the change's id."""

    type: Literal["alert"]
    change_id: int
    action: AlertAction
    previous: AlertState | None = Field(description="the state before; null when raised")
    actor: str
    at: datetime
    note: str
    alert: Alert


class AlertProvisionalMessage(_Message):
    """An alert decided while the database is unreachable (SPEC §8): it has no id yet, and
    arrives again as an ordinary `alert` raise (or repeat) once it is stored."""

    type: Literal["alert_provisional"]
    facility_id: str
    zone_id: str | None
    device_id: str | None
    kind: str
    priority: Priority
    seq: int | None
    at: datetime
    reason: Literal["database_unavailable"]


class AlertGroupMessage(_Message):
    """A facility's flood of medium and low alerts, as counts per kind (SPEC §4)."""

    type: Literal["alert_group"]
    facility_id: str
    count: int
    kinds: dict[str, int]
    text: str


class FacilityStatusMessage(_Message):
    """A facility's status changed."""

    type: Literal["facility_status"]
    facility_id: str
    status: FacilityStatus


class DeviceStatusMessage(_Message):
    """A device went online or offline, or its battery moved (staff and managers only)."""

    type: Literal["device_status"]
    device: Device


class ZoneCountMessage(_Message):
    """The people counted in a zone changed."""

    type: Literal["zone_count"]
    facility_id: str
    zone_id: str
    present: int | None
    staff: int | None


class PingMessage(_Message):
    """Sent every 20 s, so idle proxies keep the connection; clients may ignore it."""

    type: Literal["ping"]
    at: datetime


class LaggingMessage(_Message):
    """The client fell behind and is closed (code 4008); it reconnects with `since`."""

    type: Literal["lagging"]
    message: str


LiveMessage = Annotated[
    SnapshotMessage
    | ResumedMessage
    | AlertMessage
    | AlertProvisionalMessage
    | AlertGroupMessage
    | FacilityStatusMessage
    | DeviceStatusMessage
    | ZoneCountMessage
    | PingMessage
    | LaggingMessage,
    Field(discriminator="type"),
]


def facility_status_message(facility_id: str, status: dict[str, Any]) -> dict[str, Any]:
    """A `FacilityStatusMessage`."""
    return {"type": "facility_status", "facility_id": facility_id, "status": status}


def zone_count_message(facility_id: str, zone: dict[str, Any]) -> dict[str, Any]:
    """A `ZoneCountMessage` from a zone of the zone status query."""
    return {
        "type": "zone_count",
        "facility_id": facility_id,
        "zone_id": zone["zone_id"],
        "present": zone["present"],
        "staff": zone["staff"],
    }


def device_status_message(device: dict[str, Any]) -> dict[str, Any]:
    """A `DeviceStatusMessage` from a `Device`."""
    return {"type": "device_status", "device": device}
