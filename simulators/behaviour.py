"""What each simulated device says and when, on a simulated clock; pure, no I/O."""

from __future__ import annotations

import heapq
import itertools
import math
import random
import time
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Final, Literal

from devices import CATALOGUE, CLASS_LIMITS, DEFAULT_HEARTBEAT_S
from devices.registry_files import Zone
from simulators.district import Device

# China has kept one offset, without daylight saving, since 1991: a fixed offset needs no tzdata.
SHANGHAI: Final = timezone(timedelta(hours=8), "Asia/Shanghai")

# Heartbeats wander by ±10 % so a district's devices do not publish in lockstep.
HEARTBEAT_JITTER: Final = 0.1
DAY_S: Final = 86_400.0
# Mean simulated time between spontaneous events, per device. At the default time scale a
# 20-facility district then raises a handful of alerts per real minute: lively, not a flood.
FALL_MEAN_S: Final = 7 * DAY_S
DWELL_MEAN_S: Final = 5 * DAY_S
PRESS_MEAN_S: Final = 4 * DAY_S
TEST_CALL_MEAN_S: Final = 30 * DAY_S
# Share of real presses the resident cancels at the button a few seconds later.
CANCEL_SHARE: Final = 0.3
# Batteries last months; a few devices start nearly flat so low_battery has something to show.
BATTERY_DRAIN_PER_DAY: Final = 0.5
LOW_BATTERY_SHARE: Final = 0.04

Channel = Literal["event", "telemetry"]


def format_ts(moment: datetime) -> str:
    """RFC 3339 with +08:00 and milliseconds, e.g. 2026-11-22T08:15:00.120+08:00."""
    if moment.tzinfo is None:
        raise ValueError("moment must carry a time zone")
    return moment.astimezone(SHANGHAI).isoformat(timespec="milliseconds")


class SimClock:
    """Simulated time running `time_scale` times faster than the monotonic clock."""

    def __init__(self, time_scale: float, start: datetime | None = None) -> None:
        if not time_scale > 0 or not math.isfinite(time_scale):
            raise ValueError("time_scale must be a positive number")
        self.time_scale = time_scale
        self._real0 = time.monotonic()
        self._sim0 = (start or datetime.now(SHANGHAI)).astimezone(SHANGHAI)

    def now(self) -> datetime:
        """The simulated time now, in Asia/Shanghai."""
        elapsed = time.monotonic() - self._real0
        return self._sim0 + timedelta(seconds=elapsed * self.time_scale)

    def real_seconds(self, sim_seconds: float) -> float:
        """How many real seconds `sim_seconds` of simulated time take."""
        return sim_seconds / self.time_scale

    def real_delay_until(self, moment: datetime) -> float:
        """Real seconds until the simulated clock reaches `moment` (≤ 0 when it has)."""
        return self.real_seconds((moment - self.now()).total_seconds())


# --- daily curves ------------------------------------------------------------------------------

# Fraction of a zone's expected people present, by hour of day, as piecewise-linear points.
DAILY_CURVES: Final[dict[str, tuple[tuple[float, float], ...]]] = {
    # Arrivals 7:30-9:00, departures 16:30-17:30, nobody at night.
    "childcare_class": (
        (0, 0),
        (7.5, 0),
        (8.25, 0.55),
        (9, 0.95),
        (16.5, 0.95),
        (17, 0.45),
        (17.5, 0),
        (24, 0),
    ),
    # Multi-purpose hall: a morning and an afternoon play session.
    "hall": (
        (0, 0),
        (9.5, 0),
        (9.75, 0.7),
        (10.75, 0.7),
        (11, 0),
        (15, 0),
        (15.25, 0.6),
        (16, 0.6),
        (16.25, 0),
        (24, 0),
    ),
    # Dining room: breakfast, lunch and supper peaks; a few people between meals.
    "dining": (
        (0, 0),
        (6.5, 0),
        (7, 0.7),
        (8, 0.7),
        (8.5, 0.05),
        (11, 0.05),
        (11.25, 0.85),
        (12.5, 0.85),
        (12.75, 0.05),
        (17, 0.05),
        (17.25, 0.8),
        (18.25, 0.8),
        (18.5, 0),
        (24, 0),
    ),
    "activity": (
        (0, 0),
        (8, 0),
        (9, 0.5),
        (11, 0.5),
        (11.25, 0.1),
        (14.5, 0.1),
        (15, 0.6),
        (16.5, 0.6),
        (17, 0.1),
        (20, 0.1),
        (20.5, 0),
        (24, 0),
    ),
    "rehab": (
        (0, 0),
        (8.5, 0),
        (9, 0.6),
        (11, 0.6),
        (11.25, 0),
        (14.5, 0),
        (15, 0.5),
        (16.5, 0.5),
        (16.75, 0),
        (24, 0),
    ),
    # 一老一小 intergenerational room: elders and children together mid-morning and mid-afternoon.
    "intergen": (
        (0, 0),
        (9.5, 0),
        (10, 0.6),
        (11, 0.6),
        (11.25, 0.1),
        (15, 0.1),
        (15.25, 0.5),
        (16, 0.5),
        (16.25, 0),
        (24, 0),
    ),
    # Chance a resident is in their own room: nights in, meals and activities out.
    "room_presence": (
        (0, 0.97),
        (6.5, 0.9),
        (7, 0.3),
        (8.5, 0.6),
        (11, 0.3),
        (12.75, 0.8),
        (14.5, 0.5),
        (17, 0.3),
        (18.5, 0.6),
        (20.5, 0.95),
        (24, 0.97),
    ),
}


def hour_of_day(moment: datetime) -> float:
    """Hours since local midnight in Asia/Shanghai, with fractions."""
    local = moment.astimezone(SHANGHAI)
    return local.hour + local.minute / 60 + local.second / 3600


def daily_fraction(profile: str, hour: float) -> float:
    """The curve `profile` at `hour` (0-24): the expected share of people present."""
    points = DAILY_CURVES[profile]
    hour %= 24
    index = bisect_right([h for h, _ in points], hour)
    if index >= len(points):
        return points[-1][1]
    (h0, v0), (h1, v1) = points[index - 1], points[index]
    return v0 + (v1 - v0) * (hour - h0) / (h1 - h0)


def occupancy_profile(zone: Zone) -> str:
    """The daily curve a zone follows, from its kind and the purpose its id names."""
    if zone.kind == "class":
        return "childcare_class"
    purpose = zone.zone_id.rsplit("-", 1)[-1]
    return purpose if purpose in DAILY_CURVES and purpose != "room_presence" else "activity"


# --- behaviours --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message a device wants to send: its channel and body, before `ts` and `seq`."""

    channel: Channel
    body: dict[str, Any]


Action = Callable[[datetime], list[Outgoing]]


class Behaviour:
    """A device's plan: telemetry every heartbeat plus events, on the simulated clock."""

    def __init__(
        self, device: Device, zone: Zone | None, rng: random.Random, start: datetime
    ) -> None:
        self.device = device
        self.zone = zone
        self.rng = rng
        self.heartbeat_s = float(
            device.heartbeat_s or CATALOGUE[device.type].heartbeat_s or DEFAULT_HEARTBEAT_S
        )
        self._plan: list[tuple[datetime, int, Action]] = []
        self._order = itertools.count()
        self._rssi_base = rng.uniform(-85, -50)
        # The first telemetry comes soon after connecting, spread so devices do not speak at once.
        self.schedule(
            start + timedelta(seconds=rng.uniform(0, 0.2 * self.heartbeat_s)), self._telemetry_due
        )

    def schedule(self, at: datetime, action: Action) -> None:
        """Run `action` when the simulated clock reaches `at`."""
        heapq.heappush(self._plan, (at, next(self._order), action))

    def due_at(self) -> datetime:
        """When the next planned message is due."""
        return self._plan[0][0]

    def advance(self, now: datetime) -> list[Outgoing]:
        """Every message due by `now`, in order; later ones stay planned."""
        out: list[Outgoing] = []
        while self._plan and self._plan[0][0] <= now:
            _, _, action = heapq.heappop(self._plan)
            out.extend(action(now))
        return out

    def recurring(self, mean_s: float, action: Action, start: datetime) -> None:
        """Run `action` at random (Poisson) times, `mean_s` simulated seconds apart on average."""

        def fire(now: datetime) -> list[Outgoing]:
            self.schedule(now + timedelta(seconds=self.rng.expovariate(1 / mean_s)), fire)
            return action(now)

        self.schedule(start + timedelta(seconds=self.rng.expovariate(1 / mean_s)), fire)

    def _telemetry_due(self, now: datetime) -> list[Outgoing]:
        jitter = self.rng.uniform(1 - HEARTBEAT_JITTER, 1 + HEARTBEAT_JITTER)
        # Planned from now, not from when it was due, so a device back from an outage does not
        # burst the heartbeats it missed.
        self.schedule(now + timedelta(seconds=self.heartbeat_s * jitter), self._telemetry_due)
        return [Outgoing("telemetry", self.telemetry(now))]

    def telemetry(self, now: datetime) -> dict[str, Any]:
        """The telemetry body at `now`."""
        raise NotImplementedError

    def rssi(self) -> int:
        """Signal strength in dBm: the spot's own level plus a little noise."""
        return max(-150, min(0, round(self._rssi_base + self.rng.gauss(0, 2))))


class _BatteryBehaviour(Behaviour):
    """A battery-powered device: its charge drains slowly on the simulated clock."""

    def __init__(
        self, device: Device, zone: Zone | None, rng: random.Random, start: datetime
    ) -> None:
        super().__init__(device, zone, rng, start)
        low = rng.random() < LOW_BATTERY_SHARE
        self._battery = rng.uniform(8, 20) if low else rng.uniform(45, 100)
        self._battery_at = start

    def battery(self, now: datetime) -> int:
        """Charge in percent at `now`."""
        days = max(0.0, (now - self._battery_at).total_seconds()) / DAY_S
        self._battery = max(0.0, self._battery - days * BATTERY_DRAIN_PER_DAY)
        self._battery_at = max(now, self._battery_at)
        return round(self._battery)


class FallSensorBehaviour(_BatteryBehaviour):
    """A radar fall sensor in a resident's room."""

    def __init__(
        self, device: Device, zone: Zone | None, rng: random.Random, start: datetime
    ) -> None:
        super().__init__(device, zone, rng, start)
        self._presence = rng.random() < daily_fraction("room_presence", hour_of_day(start))
        self._fallen = False
        self.recurring(FALL_MEAN_S, self._fall, start)
        self.recurring(DWELL_MEAN_S, self._dwell, start)

    def telemetry(self, now: datetime) -> dict[str, Any]:
        """Presence, battery and rssi."""
        target = daily_fraction("room_presence", hour_of_day(now))
        # Presence is sticky: each heartbeat a person may come or go, towards the time of day.
        if self._fallen:
            self._presence = True
        elif self._presence and self.rng.random() < (1 - target) * 0.3:
            self._presence = False
        elif not self._presence and self.rng.random() < target * 0.3:
            self._presence = True
        return {"presence": self._presence, "battery": self.battery(now), "rssi": self.rssi()}

    def _fall(
        self,
        now: datetime,
        confidence: float | None = None,
        clear_after_s: float | None = None,
    ) -> list[Outgoing]:
        if self._fallen:
            return []
        self._fallen = True
        self._presence = True
        body: dict[str, Any] = {
            "event": "fall_detected",
            "confidence": round(
                confidence if confidence is not None else self.rng.uniform(0.5, 0.99), 2
            ),
            "posture": self.rng.choices(("lying", "sitting", "unknown"), (7, 2, 1))[0],
        }
        if self.zone is not None:
            body["zone"] = self.zone.zone_id
        else:
            body["zone"] = self.device.zone_id or self.device.id
        # Someone gets up, or is helped up, a few minutes later.
        wait = clear_after_s if clear_after_s is not None else self.rng.uniform(120, 900)
        self.schedule(now + timedelta(seconds=wait), self._clear)
        return [Outgoing("event", body)]

    def _clear(self, _now: datetime) -> list[Outgoing]:
        self._fallen = False
        return [Outgoing("event", {"event": "fall_cleared"})]

    def _dwell(self, _now: datetime) -> list[Outgoing]:
        if self._fallen or not self._presence:
            return []
        return [
            Outgoing("event", {"event": "dwell", "seconds": self.rng.randrange(1800, 5401, 60)})
        ]

    def inject_fall(self, now: datetime, confidence: float, clear_after_s: float) -> None:
        """Plan a fall right now with this confidence, cleared `clear_after_s` later."""

        def fall(at: datetime) -> list[Outgoing]:
            self._fallen = False  # a scenario fall happens even if one is still open
            return self._fall(at, confidence, clear_after_s)

        self.schedule(now, fall)


class ButtonBehaviour(_BatteryBehaviour):
    """An emergency call button: red button, pull cord or pendant."""

    def __init__(
        self, device: Device, zone: Zone | None, rng: random.Random, start: datetime
    ) -> None:
        super().__init__(device, zone, rng, start)
        if zone is not None and zone.kind == "room":
            self.button = rng.choices(("red", "pull_cord", "pendant"), (4, 4, 2))[0]
        elif zone is not None and zone.kind == "common":
            self.button = rng.choice(("red", "pull_cord"))
        else:
            self.button = "red"
        self.recurring(PRESS_MEAN_S, self._press, start)
        self.recurring(TEST_CALL_MEAN_S, self._test_call, start)

    def telemetry(self, now: datetime) -> dict[str, Any]:
        """Battery and rssi."""
        return {"battery": self.battery(now), "rssi": self.rssi()}

    def _press(self, now: datetime, *, may_cancel: bool = True) -> list[Outgoing]:
        if may_cancel and self.rng.random() < CANCEL_SHARE:
            self.schedule(now + timedelta(seconds=self.rng.uniform(5, 40)), self._cancel)
        return [Outgoing("event", {"event": "pressed", "button": self.button})]

    def _test_call(self, _now: datetime) -> list[Outgoing]:
        return [Outgoing("event", {"event": "pressed", "button": self.button, "test": True})]

    def _cancel(self, _now: datetime) -> list[Outgoing]:
        return [Outgoing("event", {"event": "cancelled"})]

    def inject_press(self, now: datetime, *, test: bool = False) -> None:
        """Plan a call right now, not cancelled: a real one, or a test call if `test`."""
        if test:
            self.schedule(now, self._test_call)
        else:
            self.schedule(now, lambda at: self._press(at, may_cancel=False))


class CounterBehaviour(Behaviour):
    """An occupancy counter over a class or a common area, following a daily curve."""

    def __init__(
        self, device: Device, zone: Zone | None, rng: random.Random, start: datetime
    ) -> None:
        super().__init__(device, zone, rng, start)
        self.capacity = zone.capacity if zone is not None and zone.capacity else 20
        self.profile = occupancy_profile(zone) if zone is not None else "activity"
        self.ratio = CLASS_LIMITS[zone.class_type][1] if zone is not None and zone.class_type else 0
        if self.ratio:
            # Children enrolled, kept so that children plus their staff never exceed the class
            # capacity: whichever way the hub counts, an ordinary day raises no over_capacity.
            self.enrolled = max(
                c
                for c in range(self.capacity + 1)
                if c + math.ceil(c / self.ratio) <= self.capacity
            )
            self.enrolled -= rng.randint(0, max(0, self.enrolled // 5))
        else:
            self.enrolled = round(self.capacity * rng.uniform(0.75, 0.95))
        self._surge_until: datetime | None = None
        self._surge_extra = 0

    def people(self, now: datetime) -> int:
        """People expected now (children only, for a class), before any surge."""
        fraction = daily_fraction(self.profile, hour_of_day(now))
        if fraction <= 0:
            return 0
        noisy = self.enrolled * fraction + self.rng.gauss(0, 0.7)
        return max(0, min(self.enrolled, round(noisy)))

    def telemetry(self, now: datetime) -> dict[str, Any]:
        """Count, staff (for a class), zone and rssi."""
        people = self.people(now)
        if self._surge_until is not None and now < self._surge_until:
            people = self.capacity + self._surge_extra
        body: dict[str, Any] = {}
        if self.ratio:
            staff = math.ceil(people / self.ratio)
            body["count"] = people + staff
            body["staff"] = staff
        else:
            body["count"] = people
        body["zone"] = self.zone.zone_id if self.zone is not None else self.device.zone_id
        body["rssi"] = self.rssi()
        if body["zone"] is None:
            del body["zone"]
        return body

    def inject_over_capacity(self, now: datetime, hold_s: float, extra: int) -> None:
        """Report `extra` people over capacity for `hold_s` simulated seconds, starting now."""
        self._surge_until = now + timedelta(seconds=hold_s)
        self._surge_extra = extra
        self.schedule(now, lambda at: [Outgoing("telemetry", self.telemetry(at))])


def make_behaviour(
    device: Device, zone: Zone | None, rng: random.Random, start: datetime
) -> Behaviour:
    """The behaviour for a registry device, by its catalogue type."""
    if device.type == "fall_sensor":
        return FallSensorBehaviour(device, zone, rng, start)
    if device.type == "emergency_button":
        return ButtonBehaviour(device, zone, rng, start)
    if device.type == "occupancy_counter":
        return CounterBehaviour(device, zone, rng, start)
    raise ValueError(f"device {device.id}: type {device.type!r} is not in the catalogue")
