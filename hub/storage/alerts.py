"""Queries of the alerts table family: alerts, their trigger claims, snoozes, live changes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

Connection = AsyncConnection[Any]


async def raised_since(conn: Connection, facility_id: str, since: datetime) -> int:
    """How many alerts the facility raised after `since` (what a flood is counted on)."""
    cur = await conn.execute(
        "SELECT count(*) FROM alerts WHERE facility_id = %s AND raised_at > %s",
        (facility_id, since),
    )
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])
