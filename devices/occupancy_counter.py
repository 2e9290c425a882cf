"""Occupancy counter (人数统计): people in a zone now, and how many of them are staff."""

from devices.alerts import alert_kinds
from devices.schema import DeviceType, FieldSpec

# National limits per childcare class (SPEC §5): most children, children per staff member.
CLASS_LIMITS: dict[str, tuple[int, int]] = {
    "乳儿班": (10, 3),
    "托小班": (15, 5),
    "托大班": (20, 7),
    "混合班": (18, 6),
}

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
    alerts=alert_kinds("over_capacity", "staff_ratio", "device_offline"),
)
