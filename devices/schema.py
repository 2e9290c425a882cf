"""Field specifications: the small declarative language the device catalogue is written in."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["bool", "number", "int", "str", "choice"]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One payload field: its JSON kind, whether it is required, and its valid range."""

    name: str
    kind: Kind
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    max_length: int = 64
    doc: str = ""

    def check(self, value: Any) -> str | None:  # noqa: PLR0911 - one answer per rule
        """Return why `value` is not valid for this field, or None when it is."""
        if self.kind == "bool":
            return None if isinstance(value, bool) else "must be true or false"
        if self.kind in ("number", "int"):
            # JSON true/false are not numbers, even though Python says bool is an int.
            if isinstance(value, bool) or not isinstance(value, int | float):
                return "must be a number"
            if self.kind == "int" and not (isinstance(value, int) or value.is_integer()):
                return "must be a whole number"
            if isinstance(value, float) and not math.isfinite(value):
                return "must be finite"
            if self.minimum is not None and value < self.minimum:
                return f"must be ≥ {self.minimum:g}"
            if self.maximum is not None and value > self.maximum:
                return f"must be ≤ {self.maximum:g}"
            return None
        if not isinstance(value, str):
            return "must be a string"
        if self.kind == "choice" and value not in self.choices:
            return "must be one of " + ", ".join(self.choices)
        if len(value) > self.max_length:
            return f"must be at most {self.max_length} characters"
        return None


@dataclass(frozen=True, slots=True)
class EventSpec:
    """One event a device type may send, with the fields it carries besides `event`."""

    name: str
    fields: tuple[FieldSpec, ...] = ()
    doc: str = ""


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One tunable parameter of an alert rule: its default and the range it may take."""

    name: str
    default: float
    minimum: float
    maximum: float
    integer: bool = False
    doc: str = ""

    def check(self, value: Any) -> str | None:
        """Return why `value` is not valid for this parameter, or None when it is."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "must be a number"
        if self.integer and not float(value).is_integer():
            return "must be a whole number"
        if not self.minimum <= value <= self.maximum:
            return f"must be between {self.minimum:g} and {self.maximum:g}"
        return None


@dataclass(frozen=True, slots=True)
class AlertKind:
    """An alert kind of SPEC §4: what it means, how urgent it is, and its parameters."""

    name: str
    priority: Literal["high", "medium", "low"]
    latched: bool
    doc: str
    params: tuple[ParamSpec, ...] = ()
    # What staff and regulators call it (简体中文), in notifications and live summaries.
    label: str = ""

    def param(self, name: str) -> ParamSpec | None:
        """The parameter called `name`, or None."""
        for spec in self.params:
            if spec.name == name:
                return spec
        return None

    @property
    def defaults(self) -> dict[str, float]:
        """Every parameter at its default."""
        return {spec.name: spec.default for spec in self.params}


@dataclass(frozen=True, slots=True)
class DeviceType:
    """A device type of the catalogue: its payload contract, defaults and rule parameters."""

    name: str
    doc: str
    events: tuple[EventSpec, ...]
    telemetry: tuple[FieldSpec, ...]
    heartbeat_s: int = 300
    # The alert kinds this type's messages can raise (SPEC §4), with their parameters.
    alerts: tuple[AlertKind, ...] = ()

    def event(self, name: str) -> EventSpec | None:
        """The event spec called `name`, or None when this type does not send it."""
        for spec in self.events:
            if spec.name == name:
                return spec
        return None


def first_bad_field(
    specs: tuple[FieldSpec, ...], payload: dict[str, Any]
) -> tuple[str, str] | None:
    """Check `payload` against `specs`: (field, why) for the first bad field, or None.

    Fields that no spec names are kept, not refused, so vendors can add their own.
    """
    for spec in specs:
        if spec.name not in payload:
            if spec.required:
                return spec.name, "is required"
            continue
        value = payload[spec.name]
        if value is None and not spec.required:
            continue
        problem = spec.check(value)
        if problem is not None:
            return spec.name, problem
    return None
