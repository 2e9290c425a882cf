"""Frozen domain values that flow between the hub's stages; no I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

Channel = Literal["event", "telemetry", "status"]

REASON_CODES = (
    "not_json",
    "not_object",
    "too_large",
    "bad_topic",
    "unknown_device",
    "wrong_facility",
    "bad_field",
    "bad_time",
    "unknown_event",
)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the registry says about one device."""

    id: str
    facility_id: str
    type: str
    zone_id: str | None
    heartbeat_s: int


@dataclass(frozen=True, slots=True)
class Reading:
    """One telemetry message: periodic state, and the device's heartbeat."""

    device_id: str
    facility_id: str
    zone_id: str | None
    seq: int
    ts: datetime
    received_at: datetime
    battery: float | None
    presence: bool | None
    count: int | None
    staff: int | None
    rssi: float | None
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    """One discrete event (a fall, a button press, ...)."""

    device_id: str
    facility_id: str
    zone_id: str | None
    device_type: str
    seq: int
    ts: datetime
    received_at: datetime
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
