"""Alert rules (SPEC §4): plain data from the device catalogue plus small pure functions.

Event rules run on each decoded message, before any batch is written: `decide_event`
turns a fall or a press into a decision at once. State rules (offline, battery, capacity,
staff ratio) run on snapshots of the database in the timer leader: `offline_devices`,
`battery_states`, `capacity_breaches` and `ratio_breaches` say what holds now; the timer
keeps, in the database, since when it has held.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NotRequired, TypedDict, Unpack

from devices import ALERT_KINDS, CLASS_LIMITS, RULE_PARAMS
from hub.errors import RuleError
from hub.models import AlertDecision, DeviceInfo, Event
from hub.settings import Settings

# A kind a shelved (snoozed) zone still raises loudly: a person pressed for help.
NEVER_SHELVED = frozenset({"sos"})


@dataclass(frozen=True, slots=True)
class Override:
    """Parameters of one kind overridden for a facility (zone_id '') or one of its zones."""

    facility_id: str
    zone_id: str
    kind: str
    params: Mapping[str, float]


class RuleParams:
    """Every kind's parameters: catalogue defaults, then the facility's, then the zone's."""

    def __init__(self, overrides: Iterable[Override] = ()) -> None:
        self._overrides: dict[tuple[str, str, str], Mapping[str, float]] = {
            (o.facility_id, o.zone_id, o.kind): o.params for o in overrides
        }

    def values_in_force(self, kind: str, name: str) -> list[float]:
        """Every value parameter `name` of `kind` takes anywhere: default and overrides."""
        values = [RULE_PARAMS[kind].defaults[name]]
        values += [p[name] for (_, _, k), p in self._overrides.items() if k == kind and name in p]
        return values

    def get(self, kind: str, facility_id: str, zone_id: str | None = None) -> dict[str, float]:
        """The parameters of `kind` in force at this facility and zone."""
        params = dict(RULE_PARAMS[kind].defaults)
        params.update(self._overrides.get((facility_id, "", kind), {}))
        if zone_id:
            params.update(self._overrides.get((facility_id, zone_id, kind), {}))
        return params


def validate_override(
    facility_id: str, zone_id: str, kind: str, params: Mapping[str, Any]
) -> Override:
    """Check one override against the catalogue; RuleError names the field that is wrong."""
    where = f"facility {facility_id}" + (f" zone {zone_id}" if zone_id else "")
    spec = RULE_PARAMS.get(kind)
    if spec is None:
        known = ", ".join(RULE_PARAMS)
        raise RuleError(f"{where}: unknown alert kind {kind!r} (known: {known})")
    if not params:
        raise RuleError(f"{where}: {kind}: no parameters given")
    checked: dict[str, float] = {}
    for name, value in params.items():
        param = spec.param(name)
        if param is None:
            known = ", ".join(p.name for p in spec.params) or "none"
            raise RuleError(f"{where}: {kind}.{name}: unknown parameter (known: {known})")
        problem = param.check(value)
        if problem is not None:
            raise RuleError(f"{where}: {kind}.{name}: {problem}, not {value!r}")
        checked[name] = float(value)
    if kind == "low_battery":
        merged = {**spec.defaults, **checked}
        if merged["clear_percent"] <= merged["threshold_percent"]:
            raise RuleError(f"{where}: low_battery.clear_percent: must be above threshold_percent")
    if kind == "escalation":
        merged = {**spec.defaults, **checked}
        if merged["overdue_after_s"] <= merged["renotify_after_s"]:
            raise RuleError(f"{where}: escalation.overdue_after_s: must be above renotify_after_s")
    return Override(facility_id, zone_id, kind, checked)


def parse_overrides_toml(text: str) -> list[Override]:
    """Overrides from a TOML file; RuleError names the first wrong table or field.

    [facilities.f-sun.fall]
    min_confidence = 0.7
    [facilities.f-sun.zones.room-101.long_lie]
    limit_min = 5
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"not valid TOML: {exc}") from exc
    unknown = set(document) - {"facilities"}
    if unknown:
        raise RuleError(f"unknown top-level table {sorted(unknown)[0]!r}; expected [facilities.*]")
    overrides: list[Override] = []
    for facility_id, tables in _tables(document.get("facilities", {}), "facilities"):
        for key, value in tables.items():
            if key == "zones":
                for zone_id, kinds in _tables(value, f"facilities.{facility_id}.zones"):
                    for kind, params in _tables(kinds, f"facilities.{facility_id}.zones.{zone_id}"):
                        overrides.append(validate_override(facility_id, zone_id, kind, params))
            elif isinstance(value, dict):
                overrides.append(validate_override(facility_id, "", key, value))
            else:
                raise RuleError(
                    f"facilities.{facility_id}.{key}: expected a table of parameters"
                    f" like [facilities.{facility_id}.fall]"
                )
    return overrides


def _tables(value: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(value, dict):
        raise RuleError(f"{where}: expected a table")
    found: list[tuple[str, dict[str, Any]]] = []
    for key, inner in value.items():
        if not isinstance(inner, dict):
            raise RuleError(f"{where}.{key}: expected a table")
        found.append((str(key), inner))
    return found


@dataclass(frozen=True, slots=True)
class Clear:
    """The device says the condition of an open alert of `kind` ended.

    `order` is the clearing message's (ts, seq): a clear only ends what the device said
    before it, whichever hub commits first.
    """

    kind: str
    device_id: str
    at: datetime
    order: tuple[datetime, int] | None = None


@dataclass(frozen=True, slots=True)
class ScheduledTestCall:
    """A scheduled test press: recorded and answered on `ack`, no alarm to staff."""

    device_id: str
    facility_id: str
    seq: int


class DecisionFields(TypedDict):
    """The fields of an AlertDecision that its rule gives: what it is about, where, and when."""

    facility_id: str
    zone_id: str | None
    device_id: str | None
    subject: str
    at: datetime
    seq: NotRequired[int | None]
    detail: NotRequired[dict[str, Any] | None]
    ts: NotRequired[datetime | None]


def decision(kind: str, **fields: Unpack[DecisionFields]) -> AlertDecision:
    """An AlertDecision of `kind`, with the kind's priority and latching from the catalogue."""
    spec = ALERT_KINDS[kind]
    return AlertDecision(kind=kind, priority=spec.priority, latched=spec.latched, **fields)


def decide_event(  # noqa: PLR0911 - one return per event of the catalogue
    event: Event, params: RuleParams
) -> AlertDecision | Clear | ScheduledTestCall | None:
    """What one device event means for alerts (the fast path: no I/O, no waiting)."""
    body = event.payload
    at = event.received_at

    def raise_(kind: str, detail: dict[str, Any]) -> AlertDecision:
        return decision(
            kind,
            facility_id=event.facility_id,
            zone_id=event.zone_id,
            device_id=event.device_id,
            subject=event.device_id,
            at=at,
            seq=event.seq,
            ts=event.ts,
            detail=detail,
        )

    if event.device_type == "emergency_button":
        if event.event == "pressed":
            if body.get("test") is True:
                return ScheduledTestCall(event.device_id, event.facility_id, event.seq)
            return raise_("sos", {"button": body.get("button")})
        if event.event == "cancelled":
            return Clear("sos", event.device_id, at, event.order)
    elif event.device_type == "fall_sensor":
        if event.event == "fall_detected":
            confidence = float(body["confidence"])
            threshold = params.get("fall", event.facility_id, event.zone_id)["min_confidence"]
            if confidence < threshold:
                return None
            return raise_("fall", {"confidence": confidence, "posture": body.get("posture")})
        if event.event == "fall_cleared":
            return Clear("fall", event.device_id, at, event.order)
        if event.event == "dwell":
            seconds = int(body["seconds"])
            if seconds < params.get("dwell", event.facility_id, event.zone_id)["min_seconds"]:
                return None
            return raise_("dwell", {"seconds": seconds})
    return None


@dataclass(frozen=True, slots=True)
class DeviceSnapshot:
    """A device and its latest state, as the timer leader reads it."""

    device: DeviceInfo
    registered_at: datetime
    last_seen: datetime | None
    online: bool | None
    battery: float | None
    count: int | None
    staff: int | None


def is_offline(snapshot: DeviceSnapshot, params: RuleParams, now: datetime) -> bool:
    """Nothing heard for heartbeat_factor x heartbeat_s, or the device's will said offline."""
    if snapshot.online is False:
        return True
    device = snapshot.device
    factor = params.get("device_offline", device.facility_id, device.zone_id)["heartbeat_factor"]
    silent_since = snapshot.last_seen or snapshot.registered_at
    return now - silent_since > timedelta(seconds=factor * device.heartbeat_s)


def battery_verdict(snapshot: DeviceSnapshot, params: RuleParams) -> bool | None:
    """True: low; False: fine again (above the clear level); None: in between, or unknown."""
    if snapshot.battery is None:
        return None
    device = snapshot.device
    limits = params.get("low_battery", device.facility_id, device.zone_id)
    if snapshot.battery <= limits["threshold_percent"]:
        return True
    if snapshot.battery > limits["clear_percent"]:
        return False
    return None


@dataclass(frozen=True, slots=True)
class ZoneSnapshot:
    """A zone of a facility with its licensed capacity and the counters' latest counts."""

    facility_id: str
    zone_id: str
    capacity: int | None
    class_type: str | None
    count: int | None
    staff: int | None


@dataclass(frozen=True, slots=True)
class Condition:
    """A state rule's condition that holds now, about `subject`."""

    kind: str
    subject: str
    facility_id: str
    zone_id: str | None
    detail: dict[str, Any]


def zone_subject(facility_id: str, zone_id: str) -> str:
    """The subject of a zone's own alerts."""
    return f"zone:{facility_id}/{zone_id}"


def facility_subject(facility_id: str) -> str:
    """The subject of a facility's own alerts."""
    return f"facility:{facility_id}"


def _zone_condition(kind: str, zone: ZoneSnapshot, detail: dict[str, Any]) -> Condition:
    """A condition of `kind` about the zone itself."""
    return Condition(
        kind, zone_subject(zone.facility_id, zone.zone_id), zone.facility_id, zone.zone_id, detail
    )


def capacity_breaches(
    zones: Iterable[ZoneSnapshot], facility_capacity: Mapping[str, int]
) -> list[Condition]:
    """Zones, and facilities, with more people counted than their licensed capacity."""
    found: list[Condition] = []
    present: dict[str, int] = {}
    for zone in zones:
        if zone.count is None:
            continue
        present[zone.facility_id] = present.get(zone.facility_id, 0) + zone.count
        if zone.capacity is not None and zone.count > zone.capacity:
            detail = {"count": zone.count, "capacity": zone.capacity}
            found.append(_zone_condition("over_capacity", zone, detail))
    for facility_id, count in present.items():
        capacity = facility_capacity.get(facility_id, 0)
        if capacity > 0 and count > capacity:
            found.append(
                Condition(
                    "over_capacity",
                    facility_subject(facility_id),
                    facility_id,
                    None,
                    {"count": count, "capacity": capacity},
                )
            )
    return found


def ratio_breaches(zones: Iterable[ZoneSnapshot]) -> list[Condition]:
    """Childcare classes with more children per staff member than their class allows."""
    found: list[Condition] = []
    for zone in zones:
        limits = CLASS_LIMITS.get(zone.class_type or "")
        if limits is None or zone.count is None:
            continue
        staff = zone.staff or 0
        children = max(zone.count - staff, 0)
        per_staff = limits[1]
        if children > 0 and children > staff * per_staff:
            detail = {"children": children, "staff": staff, "ratio": f"1:{per_staff}"}
            found.append(_zone_condition("staff_ratio", zone, detail))
    return found


@dataclass(frozen=True, slots=True)
class FloodRule:
    """SPEC §4 floods: more than `threshold` new alerts within `window_s` at one facility.

    The live feed and the notifications both ask it, so the screen and the phone group
    the same alerts. High alerts (a fall, a press) are never grouped: each is heard alone.
    """

    threshold: int
    window_s: int

    @classmethod
    def of(cls, settings: Settings) -> FloodRule:
        """The flood rule of these settings (CAREHUB_FLOOD_THRESHOLD, CAREHUB_FLOOD_WINDOW_S)."""
        return cls(settings.flood_threshold, settings.flood_window_s)

    @property
    def window(self) -> timedelta:
        """The window over which a facility's new alerts are counted."""
        return timedelta(seconds=self.window_s)

    def groups(self, priority: str, raised_in_window: int) -> bool:
        """Whether an alert of `priority` joins its facility's flood summary."""
        return priority != "high" and raised_in_window > self.threshold
