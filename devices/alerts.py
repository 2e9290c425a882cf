"""Alert kinds every device type shares, and escalation timing (SPEC §4).

Each kind is plain data: what raises it lives with the device type that sends the
message (see `DeviceType.alerts`); the hub's rules read the parameters from here, with
per-facility and per-zone overrides on top.
"""

from devices.schema import AlertKind, ParamSpec

DEVICE_OFFLINE = AlertKind(
    "device_offline",
    "medium",
    latched=False,
    doc="nothing heard for heartbeat_factor × heartbeat_s, or the device's will said offline",
    params=(ParamSpec("heartbeat_factor", 2, 1.5, 10, doc="missed heartbeats before offline"),),
    label="设备离线",
)

LOW_BATTERY = AlertKind(
    "low_battery",
    "low",
    latched=False,
    doc="battery at or below threshold_percent; clears above clear_percent",
    params=(
        ParamSpec("threshold_percent", 15, 1, 50, doc="raise at or below"),
        ParamSpec("clear_percent", 20, 1, 100, doc="resolve above (no flapping at the line)"),
    ),
    label="电量低",
)

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
