"""The device catalogue: the MQTT contract for vendors, in code (SPEC §3).

The hub validates with it and the simulators build their payloads from it.
"""

from devices import emergency_button, fall_sensor, occupancy_counter
from devices.schema import DeviceType, EventSpec, FieldSpec, first_bad_field

CATALOGUE: dict[str, DeviceType] = {
    module.DEVICE_TYPE.name: module.DEVICE_TYPE
    for module in (fall_sensor, emergency_button, occupancy_counter)
}

CONTRACT_VERSION = "v1"
MAX_PAYLOAD_BYTES = 16 * 1024
DEFAULT_HEARTBEAT_S = 300
# A device's clock may lag by a day (buffered after an outage) or lead by five minutes.
MAX_PAST_S = 24 * 3600
MAX_FUTURE_S = 5 * 60
ID_PATTERN = r"[A-Za-z0-9_-]{1,64}"


def topic(root: str, facility_id: str, device_id: str, channel: str) -> str:
    """The topic a device publishes (or reads) `channel` on."""
    return f"{root}/{CONTRACT_VERSION}/{facility_id}/{device_id}/{channel}"


__all__ = [
    "CATALOGUE",
    "CONTRACT_VERSION",
    "DEFAULT_HEARTBEAT_S",
    "ID_PATTERN",
    "MAX_FUTURE_S",
    "MAX_PAST_S",
    "MAX_PAYLOAD_BYTES",
    "DeviceType",
    "EventSpec",
    "FieldSpec",
    "first_bad_field",
    "topic",
]
