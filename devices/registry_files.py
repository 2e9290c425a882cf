"""The SPEC §5 registry import files: their header rows, and the kinds their rows name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

RegistryKind: TypeAlias = Literal["facilities", "zones", "devices"]

# Exactly the names SPEC §5 gives, in its order; the order in a file may differ.
FACILITY_COLUMNS: Final = (
    "id",
    "name",
    "kind",
    "district",
    "address",
    "latitude",
    "longitude",
    "registration_no",
    "beds",
    "childcare_places",
)
ZONE_COLUMNS: Final = ("facility_id", "zone_id", "name", "kind", "capacity", "class_type")
DEVICE_COLUMNS: Final = ("id", "facility_id", "type", "zone_id", "heartbeat_s", "vendor", "model")

IMPORT_HEADERS: Final[dict[RegistryKind, tuple[str, ...]]] = {
    "facilities": FACILITY_COLUMNS,
    "zones": ZONE_COLUMNS,
    "devices": DEVICE_COLUMNS,
}

# The `kind` values a facilities file and a zones file may hold.
FACILITY_KINDS: Final = ("elderly", "childcare", "integrated")
ZONE_KINDS: Final = ("room", "class", "common")


@dataclass(frozen=True, slots=True)
class Zone:
    """One row of a zones file: a room, a childcare class or a common area."""

    facility_id: str
    zone_id: str
    name: str
    kind: str
    capacity: int | None
    class_type: str | None
