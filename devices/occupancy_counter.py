"""Occupancy counter (人数统计): people in a zone now, and how many of them are staff."""

from devices.schema import DeviceType, FieldSpec

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
    rule_defaults={"over_capacity_minutes": 2, "staff_ratio_minutes": 5},
)
