"""Alert kinds every device type may raise, and escalation timing (SPEC §4), as one table.

Each kind is plain data: which device type raises it is named in that type's module (see
`DeviceType.alerts`); the hub's rules read the parameters from here, with per-facility and
per-zone overrides on top.
"""

from typing import Literal

from devices.schema import AlertKind, ParamSpec

# SPEC §4's table in the spec's order: kind, priority, latched, and what staff and
# regulators call it (简体中文).
_SPEC_TABLE: tuple[tuple[str, Literal["high", "medium", "low"], bool, str], ...] = (
    ("sos", "high", True, "紧急呼叫"),
    ("fall", "high", True, "跌倒"),
    ("long_lie", "high", True, "跌倒后长时间未起"),
    ("dwell", "high", True, "长时间无活动"),
    ("over_capacity", "medium", False, "超员"),
    ("staff_ratio", "medium", False, "师幼比超标"),
    ("device_offline", "medium", False, "设备离线"),
    ("low_battery", "low", False, "电量低"),
)
# What raises each kind, in the words of its rule.
_RAISED_WHEN: dict[str, str] = {
    "sos": "the button was pressed (not a test call); cancelling at the button keeps it open",
    "fall": "fall_detected with confidence at or above min_confidence",
    "long_lie": "a fall not attended within limit_min minutes",
    "dwell": "the sensor saw no movement for at least min_seconds",
    "over_capacity": "a zone's or the facility's count above its licensed capacity for hold_s",
    "staff_ratio": (
        "a childcare class with more children per staff member than its ratio, for hold_s"
    ),
    "device_offline": (
        "nothing heard for heartbeat_factor × heartbeat_s, or the device's will said offline"
    ),
    "low_battery": "battery at or below threshold_percent; clears above clear_percent",
}
# The tunable parameters of each kind's rule: default, then the range an override may take.
_PARAMS: dict[str, tuple[ParamSpec, ...]] = {
    "fall": (ParamSpec("min_confidence", 0.6, 0, 1, doc="the zone's threshold"),),
    "long_lie": (ParamSpec("limit_min", 10, 1, 240, integer=True, doc="minutes"),),
    "dwell": (ParamSpec("min_seconds", 0, 0, 7 * 86400, integer=True, doc="ignore shorter"),),
    "over_capacity": (
        ParamSpec("hold_s", 120, 0, 3600, integer=True, doc="seconds above capacity"),
    ),
    "staff_ratio": (
        ParamSpec("hold_s", 300, 0, 3600, integer=True, doc="seconds above the ratio"),
    ),
    "device_offline": (
        ParamSpec("heartbeat_factor", 2, 1.5, 10, doc="missed heartbeats before offline"),
    ),
    "low_battery": (
        ParamSpec("threshold_percent", 15, 1, 50, doc="raise at or below"),
        ParamSpec("clear_percent", 20, 1, 100, doc="resolve above (no flapping at the line)"),
    ),
}

# Every alert kind of SPEC §4, by name, in the order the spec lists them.
ALERT_KINDS: dict[str, AlertKind] = {
    name: AlertKind(name, priority, latched, _RAISED_WHEN[name], _PARAMS.get(name, ()), label)
    for name, priority, latched, label in _SPEC_TABLE
}


def alert_kinds(*names: str) -> tuple[AlertKind, ...]:
    """The alert kinds called `names`, for a device type's `alerts`."""
    return tuple(ALERT_KINDS[name] for name in names)


# Not a kind: how long an alert may stay `active` before someone is told again.
ESCALATION = AlertKind(
    "escalation",
    "high",
    latched=False,
    doc="active this long: notify the facility manager again, then flag overdue",
    params=(
        ParamSpec("renotify_after_s", 60, 10, 3600, integer=True, doc="notify the manager again"),
        ParamSpec("overdue_after_s", 180, 30, 7200, integer=True, doc="overdue for regulators"),
    ),
    label="升级提醒",
)
