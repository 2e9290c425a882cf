"""Typed queries the pipeline needs: the device registry, counts for health and tests."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import class_row

from hub.models import DeviceInfo

_DEVICE_COLUMNS = "id, facility_id, type, zone_id, heartbeat_s"


async def load_devices(conn: AsyncConnection[object]) -> dict[str, DeviceInfo]:
    """Every registered device, by id."""
    async with conn.cursor(row_factory=class_row(DeviceInfo)) as cur:
        await cur.execute(f"SELECT {_DEVICE_COLUMNS} FROM devices")
        return {device.id: device for device in await cur.fetchall()}


async def find_device(conn: AsyncConnection[object], device_id: str) -> DeviceInfo | None:
    """One registered device, or None."""
    async with conn.cursor(row_factory=class_row(DeviceInfo)) as cur:
        await cur.execute(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE id = %s", (device_id,))
        return await cur.fetchone()
