"""Deliberate breaches of the device contract, one knob per clause, for a simulated device.

A vendor's firmware gets these wrong in the field; `carehub vendor-check` must name each.
A device without faults (`Faults()`) keeps every clause of contract v1 (SPEC §3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from devices import CATALOGUE


@dataclass(frozen=True, slots=True)
class Faults:
    """What one simulated device does wrong; the defaults break nothing."""

    # Also sends each telemetry on this channel, which the contract does not have (a
    # firmware's own keep-alive or debug channel, say "heartbeat").
    stray_channel: str | None = None
    # Publishes its `online` status without the retain flag: a new subscriber hears nothing.
    status_retained: bool = True
    # Connects without a last will: a power cut leaves the retained status saying online.
    last_will: bool = True
    # Telemetry comes this many times heartbeat_s apart (1.0 keeps the heartbeat).
    heartbeat_factor: float = 1.0
    # seq goes down by one with each message instead of up.
    seq_backwards: bool = False
    # The device's clock runs this many seconds ahead (positive) or behind (negative).
    clock_offset_s: float = 0.0
    # Telemetry carries a first field of the wrong type (a string for a number, say).
    bad_telemetry: bool = False
    # A test call goes out as a real call: `pressed` without `"test": true`.
    test_press_as_real: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.heartbeat_factor) and self.heartbeat_factor > 0):
            raise ValueError("heartbeat_factor must be a positive number")
        if not math.isfinite(self.clock_offset_s):
            raise ValueError("clock_offset_s must be a finite number of seconds")


def spoil_telemetry(device_type: str, body: dict[str, object]) -> dict[str, object]:
    """`body` with the type's first telemetry field replaced by a value of the wrong type."""
    first = CATALOGUE[device_type].telemetry[0]
    return {**body, first.name: "not-a-number" if first.kind != "str" else 12345}
