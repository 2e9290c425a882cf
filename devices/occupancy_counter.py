"""Occupancy counter (人数统计): people in a zone now, and how many of them are staff."""

from devices.alerts import DEVICE_OFFLINE
from devices.schema import AlertKind, DeviceType, FieldSpec, ParamSpec

# National limits per childcare class (SPEC §5): most children, children per staff member.
CLASS_LIMITS: dict[str, tuple[int, int]] = {
    "乳儿班": (10, 3),
    "托小班": (15, 5),
    "托大班": (20, 7),
    "混合班": (18, 6),
}

OVER_CAPACITY = AlertKind(
    "over_capacity",
    "medium",
    latched=False,
    doc="a zone's or the facility's count above its licensed capacity for hold_s",
    params=(ParamSpec("hold_s", 120, 0, 3600, integer=True, doc="seconds above capacity"),),
    label="超员",
)
STAFF_RATIO = AlertKind(
    "staff_ratio",
    "medium",
    latched=False,
    doc="a childcare class with more children per staff member than its ratio, for hold_s",
    params=(ParamSpec("hold_s", 300, 0, 3600, integer=True, doc="seconds above the ratio"),),
    label="师幼比超标",
)

DEVICE_TYPE = DeviceType(
    name="occupancy_counter",
    doc="Counts people in a zone; sends telemetry only.",
    events=(),
    telemetry=(
        FieldSpec("count", "int", minimum=0, maximum=100_000),
        FieldSpec("staff", "int", minimum=0, maximum=100_000),
        FieldSpec("zone", "str"),
        FieldSpec("rssi", "number", minimum=-150, maximum=0),
    ),
    heartbeat_s=60,
    alerts=(OVER_CAPACITY, STAFF_RATIO, DEVICE_OFFLINE),
)
