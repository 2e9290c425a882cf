"""Fall sensor (跌倒检测): radar or camera-free sensors that report falls and long stillness."""

from devices.alerts import alert_kinds
from devices.schema import DeviceType, EventSpec, FieldSpec

BATTERY = FieldSpec("battery", "number", minimum=0, maximum=100, doc="percent")
RSSI = FieldSpec("rssi", "number", minimum=-150, maximum=0, doc="dBm")

DEVICE_TYPE = DeviceType(
    name="fall_sensor",
    doc="Detects a fall and a long stillness in one zone; reports presence as telemetry.",
    events=(
        EventSpec(
            "fall_detected",
            (
                FieldSpec("confidence", "number", required=True, minimum=0, maximum=1),
                FieldSpec("zone", "str"),
                FieldSpec("posture", "choice", choices=("lying", "sitting", "unknown")),
            ),
            doc="someone fell; confidence 0..1",
        ),
        EventSpec("fall_cleared", doc="the person got up or was helped up"),
        EventSpec(
            "dwell",
            (FieldSpec("seconds", "int", required=True, minimum=0, maximum=7 * 86400),),
            doc="no movement for N seconds",
        ),
    ),
    telemetry=(FieldSpec("presence", "bool"), BATTERY, RSSI),
    heartbeat_s=300,
    alerts=alert_kinds("fall", "long_lie", "dwell", "device_offline", "low_battery"),
)
