"""Frozen domain values that flow between the hub's stages; no I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

Channel = Literal["event", "telemetry", "status"]


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the registry says about one device."""

    id: str
    facility_id: str
    type: str
    zone_id: str | None
    heartbeat_s: int


@dataclass(frozen=True, slots=True)
class DeviceMessage:
    """What every reading and event carries: its device and where it stands, seq and times."""

    device_id: str
    facility_id: str
    zone_id: str | None
    seq: int
    ts: datetime
    received_at: datetime

    @property
    def order(self) -> tuple[datetime, int]:
        """Where the message stands among its device's: (ts, seq), never its arrival.

        Behind a shared subscription two hubs commit one device's messages in any order.
        The device's clock comes first, so a device that restarts its counter still moves
        on; seq orders the messages sent within one tick of that clock.
        """
        return (self.ts, self.seq)


@dataclass(frozen=True, slots=True)
class Reading(DeviceMessage):
    """One telemetry message: periodic state, and the device's heartbeat."""

    battery: float | None
    presence: bool | None
    count: int | None
    staff: int | None
    rssi: float | None
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event(DeviceMessage):
    """One discrete event (a fall, a button press, ...)."""

    device_type: str
    event: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A device said it is online, or its last will said it is not."""

    device_id: str
    facility_id: str
    online: bool
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message the hub refused, with the reason code vendors see on `rejected`."""

    topic: str
    reason: str
    detail: str
    received_at: datetime
    payload: bytes
    facility_id: str | None
    device_id: str | None
    # An unknown device that used a well-formed topic goes on the pending list.
    pending: bool = False


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message as it came off the broker, and what is needed to ack it later."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    generation: int
    received_at: datetime


Decoded = Reading | Event | StatusChange | Rejection


AlertState = Literal["active", "acknowledged", "attended", "resolved"]
# `self_resolved`: a non-latched alert whose condition ended (a battery recharged, a
# device heard again) closed by the system; no one judged it, so it is never a false alarm.
Disposition = Literal["real", "false_alarm", "test", "other", "self_resolved"]
StaffDisposition = Literal["real", "false_alarm", "test", "other"]
Priority = Literal["high", "medium", "low"]
# What happened to an alert: each change (the live feed, webhooks, the audit chain) says one.
AlertAction = Literal[
    "raise",
    "repeat",
    "acknowledge",
    "attend",
    "resolve",
    "clear",
    "renotify",
    "overdue",
    "comment",
    "snooze",
]
ALERT_STATES: tuple[AlertState, ...] = ("active", "acknowledged", "attended", "resolved")
# What a person may resolve an alert with (the staff console's buttons).
DISPOSITIONS: tuple[StaffDisposition, ...] = ("real", "false_alarm", "test", "other")
SELF_RESOLVED: Disposition = "self_resolved"


@dataclass(frozen=True, slots=True)
class AlertDecision:
    """What a rule concluded: raise (or repeat) an alert of `kind` about `subject`."""

    kind: str
    priority: Priority
    latched: bool
    facility_id: str
    zone_id: str | None
    device_id: str | None
    subject: str
    at: datetime
    seq: int | None = None
    detail: dict[str, Any] | None = None
    # The device time of the message `seq`: with it, (ts, seq) orders the device's messages
    # (DeviceMessage.order), so a late copy from another hub is weighed by when it was sent.
    ts: datetime | None = None

    @property
    def order(self) -> tuple[datetime, int] | None:
        """(ts, seq) of the device message that decided it; None for a timer's decision."""
        return None if self.ts is None or self.seq is None else (self.ts, self.seq)


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert as the database holds it (SPEC §4, §6)."""

    id: int
    facility_id: str
    zone_id: str | None
    device_id: str | None
    subject: str
    kind: str
    priority: Priority
    latched: bool
    state: AlertState
    count: int
    seq: int | None
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
    shelved: bool
    detail: dict[str, Any]

    @property
    def open(self) -> bool:
        """Not yet resolved."""
        return self.state != "resolved"


@dataclass(frozen=True, slots=True)
class AuditStep:
    """One change in an alert's trail (SPEC §7): who did what, when, between which states."""

    # The audit chain stores and hashes it (hub/alerts/audit.py); GET /alerts/{id} returns
    # the alert's steps in this shape, so the two cannot drift apart.

    at: datetime
    actor: str
    action: str
    from_state: str | None
    to_state: str | None
    note: str


@dataclass(frozen=True, slots=True)
class AlertChange:
    """One change of one alert, as the live feed, the device and notifications see it;
    `previous` is the state before (None when raised)."""

    alert: Alert
    action: AlertAction
    previous: AlertState | None
    actor: str
    at: datetime
    note: str = ""
