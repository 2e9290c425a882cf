"""Queries of the timer leader: its lock, its sweeps' snapshots, the conditions it keeps.

It also prunes old live changes and trigger claims (`rule_conditions` is its own table).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from hub.models import DeviceInfo
from hub.rules import Condition, DeviceSnapshot, ZoneSnapshot
from hub.storage.pool import dict_rows

Connection = AsyncConnection[Any]


async def try_timer_lock(conn: Connection, lock_class: int) -> bool:
    """Take this schema's timer lock on `conn`'s session, if no other session holds it."""
    cur = await conn.execute(
        "SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))", (lock_class,)
    )
    row = await cur.fetchone()
    return row is not None and bool(row[0])


async def ping(conn: Connection) -> None:
    """One round trip: raises when the session (and a lock it holds) is gone."""
    await conn.execute("SELECT 1")


async def prune_old(conn: Connection, table: str, keep: str, batch: int) -> int:
    """Delete at most `batch` rows of live_changes or alert_triggers older than `keep`."""
    # live_changes has an id; alert_triggers is keyed by (device_id, seq, kind).
    key = {"live_changes": "id", "alert_triggers": "ctid"}[table]
    cur = await conn.execute(
        f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table}"
        f" WHERE at < now() - interval '{keep}' LIMIT %s)",
        (batch,),
    )
    return cur.rowcount


async def prune_past_retention(conn: Connection, table: str, days: int, batch: int) -> int:
    """Delete at most `batch` rows of readings or events older than `days` (plain tables)."""
    if table not in ("readings", "events"):
        raise ValueError(f"{table} has no retention")
    cur = await conn.execute(
        f"DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM {table}"
        " WHERE ts < now() - make_interval(days => %s) LIMIT %s)",
        (days, batch),
    )
    return cur.rowcount


async def devices_to_check(
    conn: Connection, now: datetime, heartbeat_factor: float, battery_threshold: float
) -> list[DeviceSnapshot]:
    """Devices that may be offline or low, or whose offline or battery alert may end."""
    rows = await dict_rows(
        conn,
        "SELECT d.id, d.facility_id, d.type, d.zone_id, d.heartbeat_s, d.registered_at,"
        " s.last_seen, s.online, s.battery, s.count, s.staff"
        " FROM devices d LEFT JOIN device_state s ON s.device_id = d.id"
        " WHERE s.online IS FALSE"
        " OR coalesce(s.last_seen, d.registered_at)"
        "    < %s - make_interval(secs => %s * d.heartbeat_s)"
        " OR s.battery <= %s"
        " OR EXISTS (SELECT 1 FROM alerts a WHERE a.subject = d.id"
        "  AND a.kind IN ('device_offline', 'low_battery') AND a.state <> 'resolved')",
        (now, heartbeat_factor, battery_threshold),
    )
    return [_device_snapshot(row) for row in rows]


def _device_snapshot(row: dict[str, Any]) -> DeviceSnapshot:
    return DeviceSnapshot(
        device=DeviceInfo(
            row["id"], row["facility_id"], row["type"], row["zone_id"], row["heartbeat_s"]
        ),
        registered_at=row["registered_at"],
        last_seen=row["last_seen"],
        online=row["online"],
        battery=row["battery"],
        count=row["count"],
        staff=row["staff"],
    )


async def zone_snapshots(conn: Connection, now: datetime) -> list[ZoneSnapshot]:
    """Zones with the summed count (and staff) of their fresh occupancy counters."""
    # A counter that has gone quiet says nothing about now: its count is ignored.
    rows = await dict_rows(
        conn,
        "SELECT z.facility_id, z.zone_id, z.capacity, z.class_type,"
        " sum(s.count)::int AS count, sum(s.staff)::int AS staff"
        " FROM zones z JOIN devices d ON d.facility_id = z.facility_id"
        "  AND d.zone_id = z.zone_id AND d.type = 'occupancy_counter'"
        " JOIN device_state s ON s.device_id = d.id AND s.count IS NOT NULL"
        "  AND s.last_seen > %s - make_interval(secs => 2 * d.heartbeat_s)"
        " GROUP BY z.facility_id, z.zone_id, z.capacity, z.class_type",
        (now,),
    )
    return [ZoneSnapshot(**row) for row in rows]


async def facility_capacities(conn: Connection) -> dict[str, int]:
    """Licensed beds plus childcare places of every facility, by id."""
    cur = await conn.execute("SELECT id, beds + childcare_places FROM facilities")
    return {str(row[0]): int(row[1]) for row in await cur.fetchall()}


async def condition_starts(conn: Connection) -> dict[tuple[str, str], datetime]:
    """(subject, kind) -> since when each kept zone condition has held."""
    cur = await conn.execute("SELECT subject, kind, since FROM rule_conditions")
    return {(str(row[0]), str(row[1])): row[2] for row in await cur.fetchall()}


async def start_conditions(
    conn: Connection, conditions: Iterable[Condition], now: datetime
) -> None:
    """Note that these conditions hold from `now` (one already noted keeps its start)."""
    for condition in conditions:
        await conn.execute(
            "INSERT INTO rule_conditions (subject, kind, facility_id, zone_id, since,"
            " detail) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (
                condition.subject,
                condition.kind,
                condition.facility_id,
                condition.zone_id,
                now,
                Jsonb(condition.detail),
            ),
        )


async def end_conditions(conn: Connection, keys: Sequence[tuple[str, str]]) -> None:
    """Forget the conditions (subject, kind) that no longer hold."""
    if keys:
        await conn.execute(
            "DELETE FROM rule_conditions WHERE (subject, kind) IN"
            " (SELECT * FROM unnest(%s::text[], %s::text[]))",
            ([s for s, _ in keys], [k for _, k in keys]),
        )
