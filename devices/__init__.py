"""The device catalogue: the MQTT contract for vendors, in code (SPEC §3).

The hub validates with it and the simulators build their payloads from it.
"""

from devices import emergency_button, fall_sensor, occupancy_counter
from devices.alerts import ALERT_KINDS, ESCALATION
from devices.occupancy_counter import CLASS_LIMITS
from devices.schema import AlertKind, DeviceType, EventSpec, FieldSpec, ParamSpec, first_bad_field
from devices.topics import CONTRACT_VERSION, ID_PATTERN, topic

CATALOGUE: dict[str, DeviceType] = {
    module.DEVICE_TYPE.name: module.DEVICE_TYPE
    for module in (fall_sensor, emergency_button, occupancy_counter)
}

# What staff and regulators call each kind (简体中文): notifications and live summaries.
ALERT_LABELS: dict[str, str] = {name: kind.label for name, kind in ALERT_KINDS.items()}
# What a rule override may name: every kind, and the escalation timing.
RULE_PARAMS: dict[str, AlertKind] = {**ALERT_KINDS, ESCALATION.name: ESCALATION}

MAX_PAYLOAD_BYTES = 16 * 1024
# Why a message was refused, as the `rejected` channel says it (SPEC §3).
REASON_CODES = (
    "not_json",
    "not_object",
    "too_large",
    "bad_topic",
    "unknown_device",
    "wrong_facility",
    "bad_field",
    "bad_time",
    "unknown_event",
)
DEFAULT_HEARTBEAT_S = 300
# A device's clock may lag by a day (buffered after an outage) or lead by five minutes.
MAX_PAST_S = 24 * 3600
MAX_FUTURE_S = 5 * 60


__all__ = [
    "ALERT_KINDS",
    "ALERT_LABELS",
    "CATALOGUE",
    "CLASS_LIMITS",
    "CONTRACT_VERSION",
    "DEFAULT_HEARTBEAT_S",
    "ID_PATTERN",
    "MAX_FUTURE_S",
    "MAX_PAST_S",
    "MAX_PAYLOAD_BYTES",
    "REASON_CODES",
    "RULE_PARAMS",
    "AlertKind",
    "DeviceType",
    "EventSpec",
    "FieldSpec",
    "ParamSpec",
    "first_bad_field",
    "topic",
]
