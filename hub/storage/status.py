"""Facility and zone status for screens (docs/api.md FacilityStatus, Zone), in bulk.

One aggregate query answers every facility at once, so a district of hundreds of
facilities costs one round trip; the live feed and the REST API share these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from devices import CLASS_LIMITS
from hub.errors import StorageError
from hub.storage.kpis import fresh_sql, online_sql

# Online devices and current counts as the KPIs count them (hub/storage/kpis.py).
_NOW = "coalesce(%(now)s::timestamptz, now())"

# Shelved alerts (their zone is snoozed) are listed but do not colour the facility: that
# is what snoozing a zone under maintenance is for. An overdue call is one still active.
_FACILITY_STATUS = f"""
WITH a AS (
    SELECT facility_id,
           count(*) FILTER (WHERE priority = 'high') AS high,
           count(*) FILTER (WHERE priority = 'medium') AS medium,
           count(*) FILTER (WHERE priority = 'low') AS low,
           count(*) FILTER (WHERE state = 'active' AND overdue_at IS NOT NULL) AS overdue
    FROM alerts
    WHERE state <> 'resolved' AND NOT shelved
      AND (%(ids)s::text[] IS NULL OR facility_id = ANY(%(ids)s::text[]))
    GROUP BY facility_id
), dv AS (
    SELECT d.facility_id,
           count(*) AS total,
           count(*) FILTER (WHERE {online_sql(_NOW)}) AS online,
           sum(s.count) FILTER (WHERE d.type = 'occupancy_counter'
                                AND {fresh_sql(_NOW)}) AS present,
           sum(s.staff) FILTER (WHERE d.type = 'occupancy_counter'
                                AND {fresh_sql(_NOW)}) AS staff
    FROM devices d LEFT JOIN device_state s ON s.device_id = d.id
    WHERE (%(ids)s::text[] IS NULL OR d.facility_id = ANY(%(ids)s::text[]))
    GROUP BY d.facility_id
)
SELECT f.id,
       coalesce(a.high, 0)::int AS high, coalesce(a.medium, 0)::int AS medium,
       coalesce(a.low, 0)::int AS low, coalesce(a.overdue, 0)::int AS overdue,
       coalesce(dv.total, 0)::int AS devices_total, coalesce(dv.online, 0)::int AS devices_online,
       coalesce(dv.present, 0)::int AS present, coalesce(dv.staff, 0)::int AS staff
FROM facilities f
LEFT JOIN a ON a.facility_id = f.id
LEFT JOIN dv ON dv.facility_id = f.id
WHERE (%(ids)s::text[] IS NULL OR f.id = ANY(%(ids)s::text[]))
"""

# Several counters in a zone add up; a zone with no current counter has no count (null).
_ZONE_STATUS = f"""
SELECT z.facility_id, z.zone_id, z.name, z.kind, z.capacity, z.class_type,
       sum(s.count)::int AS present, sum(s.staff)::int AS staff
FROM zones z
LEFT JOIN devices d ON d.facility_id = z.facility_id AND d.zone_id = z.zone_id
     AND d.type = 'occupancy_counter'
LEFT JOIN device_state s ON s.device_id = d.id AND s.count IS NOT NULL
     AND {fresh_sql(_NOW)}
WHERE (%(ids)s::text[] IS NULL OR z.facility_id = ANY(%(ids)s::text[]))
GROUP BY z.facility_id, z.zone_id
ORDER BY z.facility_id, z.zone_id
"""


def status_state(status: dict[str, Any]) -> str:
    """The facility's colour: overdue > alert (any open alert) > offline (any device) > ok."""
    if status["overdue"] > 0:
        return "overdue"
    if any(status["open_alerts"].values()):
        return "alert"
    if status["devices_online"] < status["devices_total"]:
        return "offline"
    return "ok"


async def _rows(
    conn: AsyncConnection[Any],
    query: str,
    facility_ids: Sequence[str] | None,
    now: datetime | None,
    what: str,
) -> list[dict[str, Any]]:
    """The rows of a status query over some facilities (all when None) at `now`."""
    params = {"ids": None if facility_ids is None else list(facility_ids), "now": now}
    try:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            return await cur.fetchall()
    except psycopg.Error as exc:
        raise StorageError(f"cannot read {what}: {exc}") from exc


async def facility_statuses(
    conn: AsyncConnection[Any],
    facility_ids: Sequence[str] | None = None,
    *,
    now: datetime | None = None,
) -> dict[str, dict[str, Any]]:
    """FacilityStatus of each facility (all when `facility_ids` is None), by facility id."""
    rows = await _rows(conn, _FACILITY_STATUS, facility_ids, now, "the facilities' status")
    statuses: dict[str, dict[str, Any]] = {}
    for row in rows:
        status: dict[str, Any] = {
            "state": "ok",
            "open_alerts": {"high": row["high"], "medium": row["medium"], "low": row["low"]},
            "overdue": row["overdue"],
            "devices_total": row["devices_total"],
            "devices_online": row["devices_online"],
            "present": row["present"],
            "staff": row["staff"],
        }
        status["state"] = status_state(status)
        statuses[str(row["id"])] = status
    return statuses


def zone_json(row: dict[str, Any]) -> dict[str, Any]:
    """A Zone of docs/api.md from a row with the zone's columns and its present/staff."""
    present: int | None = row["present"]
    staff: int | None = row["staff"]
    limits = CLASS_LIMITS.get(row["class_type"] or "")
    per_staff = limits[1] if limits is not None else None
    ratio_breached = False
    if per_staff is not None and present is not None:
        # As the staff_ratio rule counts (hub/rules.py ratio_breaches).
        children = max(present - (staff or 0), 0)
        ratio_breached = children > 0 and children > (staff or 0) * per_staff
    capacity: int | None = row["capacity"]
    return {
        "zone_id": row["zone_id"],
        "name": row["name"],
        "kind": row["kind"],
        "capacity": capacity,
        "class_type": row["class_type"],
        "present": present,
        "staff": staff,
        "staff_ratio_limit": per_staff,
        "over_capacity": capacity is not None and present is not None and present > capacity,
        "ratio_breached": ratio_breached,
    }


async def zone_status(
    conn: AsyncConnection[Any],
    facility_ids: Sequence[str] | None = None,
    *,
    now: datetime | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """The Zones of each facility (all when `facility_ids` is None), by facility id."""
    rows = await _rows(conn, _ZONE_STATUS, facility_ids, now, "the zones' status")
    zones: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        zones.setdefault(str(row["facility_id"]), []).append(zone_json(row))
    return zones
