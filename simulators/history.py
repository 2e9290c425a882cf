"""A district's past month as the hub would have stored it; pure, no I/O.

Readings, device events and the alerts they raised, each alert with its whole lifecycle
(raised, escalated, taken over, attended, resolved with a disposition) as the audit trail
records it. The devices behave as the live simulators do (simulators/behaviour.py) and
the staff answer as the live responders do (simulators/response.py), so the month before
the demo started reads like the minutes after. The hub writes it (hub/cli/demo_history.py).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, NamedTuple

from devices import ALERT_KINDS, CLASS_LIMITS
from devices.registry_files import Zone
from simulators.behaviour import (
    CANCEL_SHARE,
    DWELL_MEAN_S,
    FALL_MEAN_S,
    PRESS_MEAN_S,
    SHANGHAI,
    BatteryBehaviour,
    Behaviour,
    CounterBehaviour,
    daily_fraction,
    hour_of_day,
    make_behaviour,
    occupancy_profile,
)
from simulators.device import seq_at
from simulators.district import Device, District
from simulators.response import ANSWER_LONGEST_S, duty_username, plan_response
from simulators.scenarios import flood_facilities

# Readings are kept at a coarser step than the live heartbeats: a month at heartbeat rate
# is five million rows for twenty facilities, too slow to write on a laptop's first start.
# One counter reading per quarter hour keeps the daily occupancy curve (its points are a
# quarter hour apart: drop-off, meals, pick-up); batteries and presence move slowly
# enough for one an hour.
READING_STEP_S: Final[dict[str, float]] = {
    "occupancy_counter": 900.0,
    "fall_sensor": 3600.0,
    "emergency_button": 3600.0,
}
# Messages reach the hub a little after the device stamped them.
RECEIVE_DELAY_S: Final = (0.03, 0.4)
# The timer leader sweeps every second or so: escalation and conditions land just after.
SWEEP_JITTER_S: Final = 2.0
RENOTIFY_AFTER_S: Final = 60.0
OVERDUE_AFTER_S: Final = 180.0
LONG_LIE_AFTER_S: Final = 600.0
FALL_THRESHOLD: Final = 0.6
# A button gets its monthly test call from most facilities; the rest show on the
# regulator's list of buttons with no test call in 30 days.
TEST_CALL_SHARE: Final = 0.85
# A facility loses power or its network now and then: every device goes offline at once,
# which is the flood the screen groups (SPEC §4). Three a month in twenty facilities.
FLOODS_PER_FACILITY_MONTH: Final = 0.15
# The month is built and written this many facilities at a time, so a district of 999
# facilities needs no more memory than one of ten (about 200,000 readings a batch).
BATCH_FACILITIES: Final = 10
FLOOD_MINUTES: Final = (15.0, 60.0)
# Dining rooms and halls overfill now and then (a festival, a visit), and a class is
# left short of staff for a while; each raises its medium alert.
SURGE_MEAN_DAYS: Final = 12.0
SURGE_MINUTES: Final = (6.0, 25.0)
RATIO_MEAN_DAYS: Final = 9.0
RATIO_MINUTES: Final = (6.0, 20.0)
OVER_CAPACITY_HOLD_S: Final = 120.0
STAFF_RATIO_HOLD_S: Final = 300.0
# A flat battery is replaced within hours to a few days.
BATTERY_LOW: Final = 15
BATTERY_REPLACED_AFTER_S: Final = (4 * 3600.0, 3 * 86400.0)
# No alert is raised in the last hour before `end`, so every answer (at most
# ANSWER_LONGEST_S) is over and none is left open when the live hub starts.
QUIET_BEFORE_END_S: Final = 3600.0


# The disposition the hub gives a non-latched alert whose condition ended (hub/models.py):
# no one judged it, so it counts in no false-alarm share.
SELF_RESOLVED: Final = "self_resolved"


class Reading(NamedTuple):
    """One telemetry row, in the column order of the readings table (payload last)."""

    ts: datetime
    device_id: str
    seq: int
    facility_id: str
    zone_id: str | None
    received_at: datetime
    battery: float | None
    presence: bool | None
    head_count: int | None  # the `count` column (a tuple has its own count)
    staff: int | None
    rssi: float | None
    payload: dict[str, Any]


class Event(NamedTuple):
    """One device event row, in the column order of the events table (payload last)."""

    ts: datetime
    device_id: str
    seq: int
    facility_id: str
    zone_id: str | None
    event: str
    received_at: datetime
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Step:
    """One change of an alert, as its audit row says it."""

    at: datetime
    actor: str
    action: str
    from_state: str | None
    to_state: str
    note: str = ""


@dataclass(slots=True)
class Alert:
    """One alert of the past month with its lifecycle; every one ends resolved."""

    facility_id: str
    zone_id: str | None
    device_id: str | None
    subject: str
    kind: str
    seq: int | None
    raised_at: datetime
    detail: dict[str, Any]
    steps: list[Step] = field(default_factory=list)
    count: int = 1
    # The device time of the message that raised it (with `seq`, its order at the device).
    seq_ts: datetime | None = None
    last_raised_at: datetime | None = None
    cleared_at: datetime | None = None
    # How it ended: staff's judgement, or SELF_RESOLVED when its condition ended.
    disposition: str = SELF_RESOLVED

    @property
    def priority(self) -> str:
        """The kind's priority (SPEC §4)."""
        return ALERT_KINDS[self.kind].priority

    @property
    def latched(self) -> bool:
        """Whether the kind stays open when the device clears it."""
        return ALERT_KINDS[self.kind].latched

    def first(self, action: str) -> Step | None:
        """The first step of `action`, if the alert took it."""
        return next((step for step in self.steps if step.action == action), None)

    @property
    def resolved(self) -> Step:
        """The step that closed it."""
        step = self.first("resolve")
        if step is None:
            raise ValueError(f"{self.kind} alert of {self.subject} was never resolved")
        return step


@dataclass(frozen=True, slots=True)
class History:
    """What the hub would hold for a district over [start, end)."""

    start: datetime
    end: datetime
    readings: list[Reading]
    events: list[Event]
    alerts: list[Alert]


def _device_alert(
    device: Device, kind: str, at: datetime, detail: dict[str, Any], seq: int | None = None
) -> Alert:
    """A new alert about one device."""
    return Alert(device.facility_id, device.zone_id, device.id, device.id, kind, seq, at, detail)


def _between(rng: random.Random, bounds: tuple[float, float]) -> float:
    return rng.uniform(*bounds)


def _poisson_times(
    rng: random.Random, mean_s: float, start: datetime, end: datetime
) -> Iterator[datetime]:
    """Random moments in [start, end), `mean_s` apart on average."""
    at = start + timedelta(seconds=rng.expovariate(1 / mean_s))
    while at < end:
        yield at
        at += timedelta(seconds=rng.expovariate(1 / mean_s))


class _Month:
    """Builds one district's month; holds the rng, the outages and what was produced."""

    def __init__(self, district: District, start: datetime, end: datetime, seed: int) -> None:
        self.district = district
        self.start = start.astimezone(SHANGHAI)
        self.end = end.astimezone(SHANGHAI)
        first = district.facilities[0].id if district.facilities else ""
        self.rng = random.Random(f"carehub-history:{district.name}:{seed}:{first}")
        self.seed = seed
        self.zones: dict[str, Zone] = {zone.zone_id: zone for zone in district.zones}
        self.readings: list[Reading] = []
        self.events: list[Event] = []
        self.alerts: list[Alert] = []
        # The last moment alerts may still be open: none is left for the live hub.
        self.last_alert = self.end - timedelta(seconds=QUIET_BEFORE_END_S)
        if QUIET_BEFORE_END_S <= ANSWER_LONGEST_S:
            raise ValueError("the quiet hour must outlast the longest answer")
        # facility -> (from, to) when its devices were all offline
        self.outages: dict[str, list[tuple[datetime, datetime]]] = {}
        # zone -> (from, seconds, people over capacity) for its counters
        self.surges: dict[str, list[tuple[datetime, float, int]]] = {}
        # The latest alert of each (subject, kind): a trigger while it is open repeats on it.
        self.latest: dict[tuple[str, str], Alert] = {}

    # -- the stream ----------------------------------------------------------------------

    def _received(self, ts: datetime) -> datetime:
        low, high = RECEIVE_DELAY_S
        return ts + timedelta(seconds=low + (high - low) * self.rng.random())

    def _event(self, device: Device, ts: datetime, body: dict[str, Any]) -> Event:
        seq = seq_at(ts)
        event = Event(
            ts,
            device.id,
            seq,
            device.facility_id,
            device.zone_id,
            str(body["event"]),
            self._received(ts),
            {"ts": ts.isoformat(timespec="milliseconds"), "seq": seq, **body},
        )
        self.events.append(event)
        return event

    def _offline(self, facility_id: str, at: datetime) -> bool:
        spans = self.outages.get(facility_id)
        return bool(spans) and any(begin <= at < until for begin, until in spans or ())

    def _readings(self, device: Device, behaviour: Behaviour) -> None:
        step = READING_STEP_S[device.type]
        rng = random.Random(f"carehub-history-readings:{self.seed}:{device.id}")
        at = self.start + timedelta(seconds=rng.uniform(0, step))
        low_alert: Alert | None = None
        replace_at: datetime | None = None
        while at < self.end:
            if self._offline(device.facility_id, at):
                at += timedelta(seconds=step)
                continue
            if replace_at is not None and at >= replace_at and low_alert is not None:
                if isinstance(behaviour, BatteryBehaviour):
                    behaviour.replace_battery(at)
                self._resolve_by_condition(low_alert, at)
                low_alert, replace_at = None, None
            body = behaviour.telemetry(at)
            battery = body.get("battery")
            if (
                battery is not None
                and battery <= BATTERY_LOW
                and low_alert is None
                and at < self.last_alert - timedelta(seconds=BATTERY_REPLACED_AFTER_S[1])
            ):
                low_alert = self._device_alert(device, "low_battery", at, {"battery": battery})
                replace_at = at + timedelta(seconds=_between(self.rng, BATTERY_REPLACED_AFTER_S))
            seq = seq_at(at)
            self.readings.append(
                Reading(
                    at,
                    device.id,
                    seq,
                    device.facility_id,
                    device.zone_id,
                    self._received(at),
                    battery,
                    body.get("presence"),
                    body.get("count"),
                    body.get("staff"),
                    body.get("rssi"),
                    {"ts": at.isoformat(timespec="milliseconds"), "seq": seq, **body},
                )
            )
            at += timedelta(seconds=step)

    # -- alerts and the staff's answers ---------------------------------------------------

    def _open(self, alert: Alert) -> Alert:
        """Record a newly raised alert (its raise step first)."""
        alert.steps.append(Step(alert.raised_at, "system", "raise", None, "active"))
        alert.last_raised_at = alert.raised_at
        self.alerts.append(alert)
        self.latest[(alert.subject, alert.kind)] = alert
        return alert

    def _device_alert(
        self, device: Device, kind: str, at: datetime, detail: dict[str, Any]
    ) -> Alert:
        alert = self._open(_device_alert(device, kind, at, detail))
        self._staff_look(alert)
        return alert

    def _escalate(self, alert: Alert, acknowledged: datetime | None) -> None:
        """The timer leader's steps on an alert still active at 60 s (and, if high, 180 s)."""
        raised = alert.raised_at
        for action, after, applies in (
            ("renotify", RENOTIFY_AFTER_S, alert.priority in ("high", "medium")),
            ("overdue", OVERDUE_AFTER_S, alert.priority == "high"),
        ):
            at = raised + timedelta(seconds=after + self.rng.uniform(0, SWEEP_JITTER_S))
            if applies and (acknowledged is None or acknowledged > at):
                alert.steps.append(
                    Step(at, "system", action, "active", "active", "not acknowledged in time")
                )

    def _staff_look(self, alert: Alert) -> None:
        """A medium or low alert: maybe someone takes it over before its condition ends."""
        plan = plan_response(alert.kind, self.rng)
        actor = duty_username(alert.facility_id)
        if plan.ack_after_s is not None:
            at = alert.raised_at + timedelta(seconds=plan.ack_after_s)
            alert.steps.append(Step(at, actor, "acknowledge", "active", "acknowledged"))

    def _resolve_by_condition(self, alert: Alert, at: datetime) -> None:
        """The condition ended: the alert resolves by itself, and steps after it never were."""
        alert.steps = [step for step in alert.steps if step.at < at]
        ack = alert.first("acknowledge")
        self._escalate(alert, ack.at if ack else None)
        alert.steps.sort(key=lambda step: step.at)
        state = alert.steps[-1].to_state
        alert.steps.append(Step(at, "system", "resolve", state, "resolved", "condition ended"))
        alert.disposition = SELF_RESOLVED

    def _answer(
        self, alert: Alert, *, cleared_at: datetime | None = None, cancelled: bool = False
    ) -> None:
        """A high alert: staff take it over, go there and close it with a disposition."""
        plan = plan_response(alert.kind, self.rng, cancelled=cancelled)
        if plan.ack_after_s is None or plan.attend_after_s is None or plan.resolve_after_s is None:
            raise ValueError(f"staff leave no {alert.kind} alert unanswered")
        actor = duty_username(alert.facility_id)
        raised = alert.raised_at
        ack = raised + timedelta(seconds=plan.ack_after_s)
        attend = raised + timedelta(seconds=plan.attend_after_s)
        resolve = raised + timedelta(seconds=plan.resolve_after_s)
        self._escalate(alert, ack)
        alert.disposition = plan.disposition or "real"
        alert.steps += [
            Step(ack, actor, "acknowledge", "active", "acknowledged"),
            Step(attend, actor, "attend", "acknowledged", "attended"),
            Step(resolve, actor, "resolve", "attended", "resolved", plan.note),
        ]
        alert.steps.sort(key=lambda step: step.at)
        if cleared_at is not None and cleared_at < resolve:
            self._clear(alert, cleared_at)
        if alert.kind == "fall" and plan.attend_after_s > LONG_LIE_AFTER_S:
            self._long_lie(alert, ack, attend, resolve)

    def _clear(self, alert: Alert, at: datetime) -> None:
        """The device said the condition ended: a latched alert stays as it is."""
        alert.cleared_at = at
        before = [step for step in alert.steps if step.at <= at]
        state = before[-1].to_state
        alert.steps.insert(
            len(before), Step(at, "device", "clear", state, state, "cleared at the device")
        )

    def _long_lie(self, fall: Alert, ack: datetime, attend: datetime, resolve: datetime) -> None:
        at = fall.raised_at + timedelta(
            seconds=LONG_LIE_AFTER_S + self.rng.uniform(0, SWEEP_JITTER_S)
        )
        alert = self._open(
            Alert(
                fall.facility_id,
                fall.zone_id,
                fall.device_id,
                fall.subject,
                "long_lie",
                None,
                at,
                {"limit_min": round(LONG_LIE_AFTER_S / 60)},
            )
        )
        actor = duty_username(fall.facility_id)
        # Whoever is already on the way takes this one over too.
        taken = max(ack, at) + timedelta(seconds=self.rng.uniform(3, 20))
        if taken < attend:
            alert.steps.append(Step(taken, actor, "acknowledge", "active", "acknowledged"))
            alert.steps.append(Step(attend, actor, "attend", "acknowledged", "attended"))
        else:
            alert.steps.append(Step(attend, actor, "attend", "active", "attended"))
        self._escalate(alert, taken if taken < attend else attend)
        alert.steps.append(Step(resolve, actor, "resolve", "attended", "resolved", "已扶起"))
        alert.disposition = "real"
        alert.steps.sort(key=lambda step: step.at)

    def _high(
        self,
        device: Device,
        kind: str,
        event: Event,
        detail: dict[str, Any],
        *,
        cleared_at: datetime | None = None,
        cancelled: bool = False,
    ) -> None:
        """Raise a high alert for `event`, or count a repeat on the one still open."""
        at = event.received_at
        if at >= self.last_alert:
            return
        open_alert = self.latest.get((device.id, kind))
        if open_alert is not None and open_alert.resolved.at > at:
            open_alert.count += 1
            open_alert.last_raised_at = at
            state = [step for step in open_alert.steps if step.at <= at][-1].to_state
            open_alert.steps.append(
                Step(at, "system", "repeat", state, state, f"count {open_alert.count}")
            )
            open_alert.steps.sort(key=lambda step: step.at)
            return
        alert = _device_alert(device, kind, at, detail, event.seq)
        alert.seq_ts = event.ts
        self._open(alert)
        self._answer(alert, cleared_at=cleared_at, cancelled=cancelled)

    # -- devices --------------------------------------------------------------------------

    def _occupied(self, zone: Zone | None, at: datetime) -> bool:
        """Whether anyone is there to press a button or fall: never an empty class at night."""
        if zone is None or zone.kind == "room":
            return True
        return daily_fraction(occupancy_profile(zone), hour_of_day(at)) > 0

    def _button(self, device: Device, zone: Zone | None, rng: random.Random) -> None:
        button = "red"
        if zone is not None and zone.kind == "room":
            button = rng.choices(("red", "pull_cord", "pendant"), (4, 4, 2))[0]
        for at in _poisson_times(rng, PRESS_MEAN_S, self.start, self.end):
            if self._offline(device.facility_id, at) or not self._occupied(zone, at):
                continue
            pressed = self._event(device, at, {"event": "pressed", "button": button})
            cancelled_at = None
            if rng.random() < CANCEL_SHARE:
                cancel = self._event(
                    device, at + timedelta(seconds=rng.uniform(5, 40)), {"event": "cancelled"}
                )
                cancelled_at = cancel.received_at
            self._high(
                device,
                "sos",
                pressed,
                {"button": button},
                cleared_at=cancelled_at,
                cancelled=cancelled_at is not None,
            )
        if rng.random() < TEST_CALL_SHARE:
            # A scheduled test on a weekday morning: recorded, answered on ack, alarms no one.
            day = self.start + timedelta(days=rng.uniform(0, (self.end - self.start).days or 1))
            at = day.replace(hour=9, minute=0) + timedelta(minutes=rng.uniform(0, 120))
            if self.start <= at < self.end and not self._offline(device.facility_id, at):
                self._event(device, at, {"event": "pressed", "button": button, "test": True})

    def _fall_sensor(self, device: Device, rng: random.Random) -> None:
        posture = ("lying", "sitting", "unknown")
        for at in _poisson_times(rng, FALL_MEAN_S, self.start, self.end):
            if self._offline(device.facility_id, at):
                continue
            confidence = round(rng.uniform(0.5, 0.99), 2)
            body: dict[str, Any] = {
                "event": "fall_detected",
                "confidence": confidence,
                "posture": rng.choices(posture, (7, 2, 1))[0],
                "zone": device.zone_id or device.id,
            }
            fallen = self._event(device, at, body)
            cleared = self._event(
                device, at + timedelta(seconds=rng.uniform(120, 900)), {"event": "fall_cleared"}
            )
            if confidence >= FALL_THRESHOLD:
                detail = {"confidence": confidence, "posture": body["posture"]}
                self._high(device, "fall", fallen, detail, cleared_at=cleared.received_at)
        for at in _poisson_times(rng, DWELL_MEAN_S, self.start, self.end):
            presence = daily_fraction("room_presence", hour_of_day(at))
            if self._offline(device.facility_id, at) or rng.random() > presence:
                continue
            seconds = rng.randrange(1800, 5401, 60)
            dwell = self._event(device, at, {"event": "dwell", "seconds": seconds})
            self._high(device, "dwell", dwell, {"seconds": seconds})

    # -- facilities and zones -------------------------------------------------------------

    def _floods(self) -> None:
        """A few facilities lose power or network for a while: every device offline at once."""
        span = (self.last_alert - self.start).total_seconds() - FLOOD_MINUTES[1] * 60
        if span <= 0 or not self.district.facilities:
            return
        months = (self.end - self.start).days / 30
        floods = max(1, round(FLOODS_PER_FACILITY_MONTH * len(self.district.facilities) * months))
        candidates = flood_facilities(self.district)
        for _ in range(floods):
            facility = self.rng.choice(candidates)
            begin = self.start + timedelta(seconds=self.rng.uniform(0, span))
            until = begin + timedelta(minutes=_between(self.rng, FLOOD_MINUTES))
            self.outages.setdefault(facility.id, []).append((begin, until))

    def _outage_alerts(self) -> None:
        for facility_id, spans in self.outages.items():
            for begin, until in spans:
                for device in self.district.devices_of(facility_id):
                    # Each device's last will fires when the broker misses its keep-alive.
                    at = begin + timedelta(seconds=self.rng.uniform(30, 90))
                    last_seen = begin - timedelta(seconds=self.rng.uniform(0, 60))
                    alert = self._device_alert(
                        device, "device_offline", at, {"last_seen": last_seen.isoformat()}
                    )
                    back = until + timedelta(seconds=self.rng.uniform(2, 40))
                    self._resolve_by_condition(alert, back)

    def _zone_alerts(self) -> None:
        for zone in self.district.zones:
            if zone.kind == "common" and zone.capacity:
                self._surges(zone)
            elif zone.kind == "class" and zone.class_type:
                self._short_staffed(zone)

    def _zone_alert(
        self, zone: Zone, kind: str, begin: datetime, minutes: float, detail: dict[str, Any]
    ) -> None:
        hold = OVER_CAPACITY_HOLD_S if kind == "over_capacity" else STAFF_RATIO_HOLD_S
        at = begin + timedelta(seconds=hold + self.rng.uniform(0, SWEEP_JITTER_S))
        end = begin + timedelta(minutes=minutes)
        if end >= self.last_alert or self._offline(zone.facility_id, begin):
            return
        subject = f"zone:{zone.facility_id}/{zone.zone_id}"
        alert = self._open(
            Alert(zone.facility_id, zone.zone_id, None, subject, kind, None, at, detail)
        )
        self._staff_look(alert)
        self._resolve_by_condition(alert, end + timedelta(seconds=self.rng.uniform(0, 2)))

    def _surges(self, zone: Zone) -> None:
        capacity = zone.capacity or 0
        for day in _poisson_times(self.rng, SURGE_MEAN_DAYS * 86400, self.start, self.end):
            # At the busiest hour of the zone's day: lunch in a dining room, play in a hall.
            profile = occupancy_profile(zone)
            peak = max(range(24 * 4), key=lambda q: daily_fraction(profile, q / 4)) / 4
            begin = day.replace(hour=0, minute=0, second=0) + timedelta(hours=peak)
            if begin < self.start:
                continue
            extra = self.rng.randint(2, max(3, capacity // 5))
            minutes = _between(self.rng, SURGE_MINUTES)
            detail = {"count": capacity + extra, "capacity": capacity}
            self._zone_alert(zone, "over_capacity", begin, minutes, detail)
            # The zone's counters show the crowd that raised it.
            self.surges.setdefault(zone.zone_id, []).append((begin, minutes * 60, extra))

    def _short_staffed(self, zone: Zone) -> None:
        per_staff = CLASS_LIMITS[str(zone.class_type)][1]
        for day in _poisson_times(self.rng, RATIO_MEAN_DAYS * 86400, self.start, self.end):
            if day.weekday() >= 5:
                continue  # classes are closed at the weekend
            begin = day.replace(hour=9, minute=0, second=0) + timedelta(
                minutes=self.rng.uniform(0, 6 * 60)
            )
            staff = self.rng.randint(1, 2)
            children = staff * per_staff + self.rng.randint(1, 3)
            detail = {"children": children, "staff": staff, "ratio": f"1:{per_staff}"}
            self._zone_alert(zone, "staff_ratio", begin, _between(self.rng, RATIO_MINUTES), detail)

    # -- the whole month ------------------------------------------------------------------

    def build(self) -> History:
        """Outages and zone alerts first (the devices' readings show them), then each device."""
        self._floods()
        self._outage_alerts()
        self._zone_alerts()
        for device in self.district.devices:
            rng = random.Random(f"carehub-history-device:{self.seed}:{device.id}")
            zone = self.zones.get(device.zone_id) if device.zone_id else None
            behaviour = make_behaviour(device, zone, rng, self.start)
            if isinstance(behaviour, CounterBehaviour) and zone is not None:
                for begin, seconds, extra in self.surges.get(zone.zone_id, ()):
                    behaviour.add_surge(begin, seconds, extra)
            self._readings(device, behaviour)
            if device.type == "emergency_button":
                self._button(device, zone, rng)
            elif device.type == "fall_sensor":
                self._fall_sensor(device, rng)
        self.alerts.sort(key=lambda alert: alert.raised_at)
        self.events.sort(key=lambda event: event.ts)
        return History(self.start, self.end, self.readings, self.events, self.alerts)


def _period(end: datetime, days: float) -> datetime:
    if end.tzinfo is None:
        raise ValueError("end must carry a time zone")
    if not 0 < days <= 400 or not math.isfinite(days):
        raise ValueError("days must be between 0 and 400")
    return end - timedelta(days=days)


def build_history(district: District, *, end: datetime, days: float = 30, seed: int = 7) -> History:
    """The district's `days` before `end`: readings, events and resolved alerts with trails."""
    return _Month(district, _period(end, days), end, seed).build()


def history_batches(
    district: District,
    *,
    end: datetime,
    days: float = 30,
    seed: int = 7,
    facilities: int = BATCH_FACILITIES,
) -> Iterator[History]:
    """The same month, a few facilities at a time (each facility's trail is its own)."""
    start = _period(end, days)
    if facilities < 1:
        raise ValueError("a batch holds at least one facility")
    for first in range(0, len(district.facilities), facilities):
        part = district.with_only(district.facilities[first : first + facilities])
        yield _Month(part, start, end, seed).build()
