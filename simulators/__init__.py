"""Simulated facilities and devices that speak carehub's MQTT contract over a real broker."""

from devices import CLASS_LIMITS
from devices.mqtt import MqttTarget, parse_mqtt_url
from devices.registry_files import DEVICE_COLUMNS, FACILITY_COLUMNS, ZONE_COLUMNS, Zone
from simulators.behaviour import SHANGHAI, SimClock, daily_fraction, format_ts
from simulators.device import Link, SimulatedDevice
from simulators.district import (
    DEMO_DISTRICTS,
    Device,
    District,
    Facility,
    build_demo_district,
    build_district,
    build_districts,
    demo_counts,
    district_prefix,
)
from simulators.faults import Faults
from simulators.fleet import Fleet
from simulators.run import run_simulation
from simulators.scenarios import SCENARIOS, ScenarioReport, garbage_messages, run_scenario

__all__ = [
    "CLASS_LIMITS",
    "DEMO_DISTRICTS",
    "DEVICE_COLUMNS",
    "FACILITY_COLUMNS",
    "SCENARIOS",
    "SHANGHAI",
    "ZONE_COLUMNS",
    "Device",
    "District",
    "Facility",
    "Faults",
    "Fleet",
    "Link",
    "MqttTarget",
    "ScenarioReport",
    "SimClock",
    "SimulatedDevice",
    "Zone",
    "build_demo_district",
    "build_district",
    "build_districts",
    "daily_fraction",
    "demo_counts",
    "district_prefix",
    "format_ts",
    "garbage_messages",
    "parse_mqtt_url",
    "run_scenario",
    "run_simulation",
]
