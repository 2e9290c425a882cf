"""Emergency call button (一键呼叫): a red button, a pull cord or a pendant."""

from devices.alerts import alert_kinds
from devices.fall_sensor import BATTERY, RSSI
from devices.schema import DeviceType, EventSpec, FieldSpec

DEVICE_TYPE = DeviceType(
    name="emergency_button",
    doc="A one-key call: pressing raises an sos alert; `test: true` is a scheduled test call.",
    events=(
        EventSpec(
            "pressed",
            (
                FieldSpec(
                    "button", "choice", required=True, choices=("red", "pull_cord", "pendant")
                ),
                FieldSpec(
                    "test", "bool", doc="a scheduled test call: recorded and acked, no alarm"
                ),
            ),
        ),
        EventSpec("cancelled", doc="the resident cancelled the call at the button"),
    ),
    telemetry=(BATTERY, RSSI),
    heartbeat_s=300,
    alerts=alert_kinds("sos", "device_offline", "low_battery"),
)
