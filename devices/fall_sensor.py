"""Fall sensor (跌倒检测): radar or camera-free sensors that report falls and long stillness."""

from devices.alerts import DEVICE_OFFLINE, LOW_BATTERY
from devices.schema import AlertKind, DeviceType, EventSpec, FieldSpec, ParamSpec

BATTERY = FieldSpec("battery", "number", minimum=0, maximum=100, doc="percent")
RSSI = FieldSpec("rssi", "number", minimum=-150, maximum=0, doc="dBm")

FALL = AlertKind(
    "fall",
    "high",
    latched=True,
    doc="fall_detected with confidence at or above min_confidence",
    params=(ParamSpec("min_confidence", 0.6, 0, 1, doc="the zone's threshold"),),
    label="跌倒",
)
LONG_LIE = AlertKind(
    "long_lie",
    "high",
    latched=True,
    doc="a fall not attended within limit_min minutes",
    params=(ParamSpec("limit_min", 10, 1, 240, integer=True, doc="minutes"),),
    label="跌倒后长时间未起",
)
DWELL = AlertKind(
    "dwell",
    "high",
    latched=True,
    doc="the sensor saw no movement for at least min_seconds",
    params=(ParamSpec("min_seconds", 0, 0, 7 * 86400, integer=True, doc="ignore shorter"),),
    label="长时间无活动",
)

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
    alerts=(FALL, LONG_LIE, DWELL, DEVICE_OFFLINE, LOW_BATTERY),
)
