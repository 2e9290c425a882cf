"""Facility, zone and device deltas for the live websocket: one watcher per hub process.

Alert changes reach the feed through `live_changes`; the state that telemetry moves does
not (device_state rows are rewritten thousands of times a second). Once a second the
watcher reads it in three aggregate queries (facility status, zone counts, each device's
online flag and battery), compares with what it saw last and publishes only what a
screen shows differently: a facility's status, a zone's count, a device going on- or
offline, or its battery moving by a whole point since it was last published.

The state it last published is also what a new client's snapshot is built from, so a
snapshot and the deltas after it always agree.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from hub.errors import StorageError, raise_if_cancelled
from hub.storage.live import device_flags, devices
from hub.storage.status import facility_statuses, zone_status
from hub.wire import device_status_message, facility_status_message, zone_count_message

logger = logging.getLogger(__name__)

# Screens are told of a status change within about this long.
POLL_S = 1.0
# A battery reading moves by fractions with every report; a screen cares about points.
BATTERY_STEP = 1.0


class Publish(Protocol):
    """LiveFeed.broadcast: hand a message about a facility to the clients that see it."""

    def __call__(
        self, message: dict[str, Any], facility_id: str | None, *, device_level: bool = False
    ) -> None: ...


@dataclass(slots=True)
class _Device:
    facility_id: str
    online: bool
    # The battery level last published, not the last one read, so slow drift still shows.
    battery: float | None


class StatusWatcher:
    """Polls facility, zone and device state and publishes what changed."""

    def __init__(
        self, pool: AsyncConnectionPool[AsyncConnection[object]], publish: Publish
    ) -> None:
        self._pool = pool
        self._publish = publish
        self._statuses: dict[str, dict[str, Any]] = {}
        self._zones: dict[str, list[dict[str, Any]]] = {}
        self._devices: dict[str, _Device] = {}
        # Set after the first successful poll: from then on the caches are a snapshot.
        self.ready = asyncio.Event()
        self.polls = 0

    async def run(self) -> None:
        """Poll every POLL_S until cancelled; a database outage pauses it, nothing more."""
        failing = False
        while True:
            try:
                await self.poll()
                if failing:
                    logger.info("status watcher reading the database again")
                failing = False
            except (StorageError, psycopg.Error, PoolTimeout, OSError) as exc:
                raise_if_cancelled()
                if not failing:
                    logger.warning("status watcher cannot read the database: %s", exc)
                failing = True
            await asyncio.sleep(POLL_S)

    async def poll(self) -> None:
        """Read the state once and publish what changed since the last poll."""
        async with self._pool.connection() as conn:
            statuses = await facility_statuses(conn)
            zones = await zone_status(conn)
            flags = await device_flags(conn)
            changed = self._changed_devices(flags)
            details = await devices(conn, device_ids=changed) if changed else []
        # From here to the end nothing awaits: the caches and the deltas move together,
        # so a client that takes a snapshot sees either all of this poll or none of it.
        first = not self.ready.is_set()
        self._apply_statuses(statuses, first)
        self._apply_zones(zones, first)
        self._apply_devices(flags, details, first)
        self.polls += 1
        self.ready.set()

    def _changed_devices(self, flags: list[tuple[str, str, bool, float | None]]) -> list[str]:
        if not self.ready.is_set():
            return []
        changed = []
        for device_id, _facility_id, online, battery in flags:
            seen = self._devices.get(device_id)
            if seen is None or seen.online != online or _battery_moved(seen.battery, battery):
                changed.append(device_id)
        return changed

    def _apply_statuses(self, statuses: dict[str, dict[str, Any]], first: bool) -> None:
        for facility_id, status in statuses.items():
            if not first and self._statuses.get(facility_id) != status:
                self._publish(facility_status_message(facility_id, status), facility_id)
        self._statuses = statuses

    def _apply_zones(self, zones: dict[str, list[dict[str, Any]]], first: bool) -> None:
        if not first:
            for facility_id, facility_zones in zones.items():
                before = {z["zone_id"]: z for z in self._zones.get(facility_id, [])}
                for zone in facility_zones:
                    old = before.get(zone["zone_id"])
                    if old is None or (old["present"], old["staff"]) != (
                        zone["present"],
                        zone["staff"],
                    ):
                        self._publish(zone_count_message(facility_id, zone), facility_id)
        self._zones = zones

    def _apply_devices(
        self,
        flags: list[tuple[str, str, bool, float | None]],
        details: list[dict[str, Any]],
        first: bool,
    ) -> None:
        if first:
            self._devices = {
                device_id: _Device(facility_id, online, battery)
                for device_id, facility_id, online, battery in flags
            }
            return
        for device in details:
            self._devices[device["id"]] = _Device(
                device["facility_id"], device["online"], device["battery"]
            )
            self._publish(device_status_message(device), device["facility_id"], device_level=True)
        present = {flag[0] for flag in flags}
        for gone in [device_id for device_id in self._devices if device_id not in present]:
            del self._devices[gone]

    # -- what a snapshot is built from ---------------------------------------------------

    def statuses(self, facility_ids: Collection[str]) -> dict[str, dict[str, Any]]:
        """The last published FacilityStatus of each facility the watcher knows."""
        return {fid: self._statuses[fid] for fid in facility_ids if fid in self._statuses}

    def zones(self, facility_ids: Collection[str]) -> dict[str, list[dict[str, Any]]]:
        """The last published Zones of each facility, by facility id."""
        return {fid: self._zones.get(fid, []) for fid in facility_ids}


def _battery_moved(published: float | None, now: float | None) -> bool:
    if published is None or now is None:
        return published is not now
    return abs(now - published) >= BATTERY_STEP
