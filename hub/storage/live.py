"""Queries of the live feed: the `live_changes` log, its NOTIFY channel, client snapshots.

A websocket client's scope and snapshot and the devices' state are read here too.
Facility status and zone counts come from hub/storage/status.py (shared with the REST
API); this module adds what only the live feed needs, in bulk, one round trip each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from hub.errors import StorageError
from hub.storage.kpis import online_sql
from hub.storage.registry import DEVICE_COLUMNS, DEVICES_WITH_STATE, FACILITY_COLUMNS
from hub.wire import device_json

# Online as the KPIs and the facility status count it.
_ONLINE = online_sql("now()")


def live_channel(schema: str) -> str:
    """The NOTIFY channel of this schema's live changes."""
    return f"carehub_live_{schema}"[:63]


async def append_change(
    conn: AsyncConnection[Any],
    channel: str,
    *,
    facility_id: str,
    alert_id: int,
    change: dict[str, Any],
) -> None:
    """Log one alert change for every hub process's live feed and NOTIFY them.

    Inside the change's own transaction: the row and the notification exist on commit.
    One statement whose result is not read: in a pipeline it costs no round trip of its own.
    """
    await conn.execute(
        "WITH c AS (INSERT INTO live_changes (facility_id, alert_id, change)"
        " VALUES (%s, %s, %s) RETURNING id) SELECT pg_notify(%s, c.id::text) FROM c",
        (facility_id, alert_id, Jsonb(change), channel),
    )


async def listen(conn: AsyncConnection[Any], channel: str) -> None:
    """LISTEN on `channel` (an autocommit connection's notifies() then yields them)."""
    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))


async def changes_after(
    conn: AsyncConnection[Any], after: int | None, limit: int
) -> list[tuple[int, str, dict[str, Any]]]:
    """(id, facility_id, change) of at most `limit` changes after id `after`, in order."""
    cur = await conn.execute(
        "SELECT id, facility_id, change FROM live_changes WHERE id > %s ORDER BY id LIMIT %s",
        (after, limit),
    )
    return [(int(row[0]), str(row[1]), dict(row[2])) for row in await cur.fetchall()]


async def changes_with_ids(
    conn: AsyncConnection[Any], change_ids: Sequence[int]
) -> list[tuple[int, str, dict[str, Any]]]:
    """(id, facility_id, change) of those of `change_ids` that are stored, in order."""
    cur = await conn.execute(
        "SELECT id, facility_id, change FROM live_changes WHERE id = ANY(%s) ORDER BY id",
        (list(change_ids),),
    )
    return [(int(row[0]), str(row[1]), dict(row[2])) for row in await cur.fetchall()]


async def district_facilities(conn: AsyncConnection[Any], district: str) -> frozenset[str]:
    """The ids of a district's facilities (a regulator's scope)."""
    try:
        cur = await conn.execute("SELECT id FROM facilities WHERE district = %s", (district,))
        return frozenset(str(row[0]) for row in await cur.fetchall())
    except psycopg.Error as exc:
        raise StorageError(f"cannot read the facilities of {district}: {exc}") from exc


async def last_change_id(conn: AsyncConnection[Any]) -> int:
    """The newest live change's id (0 when there is none)."""
    cur = await conn.execute("SELECT coalesce(max(id), 0) FROM live_changes")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def oldest_change_id(conn: AsyncConnection[Any]) -> int | None:
    """The oldest retained live change's id, or None when none is retained."""
    cur = await conn.execute("SELECT min(id) FROM live_changes")
    row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def changes_between(
    conn: AsyncConnection[Any], after: int, upto: int, facility_ids: frozenset[str] | None
) -> list[tuple[int, str, dict[str, Any]]]:
    """(id, facility_id, change) of the changes after `after` up to `upto`, in scope."""
    cur = await conn.execute(
        "SELECT id, facility_id, change FROM live_changes WHERE id > %s AND id <= %s"
        " AND (%s::text[] IS NULL OR facility_id = ANY(%s::text[])) ORDER BY id",
        (after, upto, _ids(facility_ids), _ids(facility_ids)),
    )
    return [(int(row[0]), str(row[1]), dict(row[2])) for row in await cur.fetchall()]


async def facility_rows(
    conn: AsyncConnection[Any], facility_ids: frozenset[str] | None
) -> list[dict[str, Any]]:
    """The registry fields of docs/api.md `Facility`, of every facility in scope, by id."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {FACILITY_COLUMNS} FROM facilities f"
            " WHERE %(ids)s::text[] IS NULL OR f.id = ANY(%(ids)s::text[]) ORDER BY f.id",
            {"ids": _ids(facility_ids)},
        )
        return list(await cur.fetchall())


async def devices(
    conn: AsyncConnection[Any],
    *,
    facility_ids: frozenset[str] | None = None,
    device_ids: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """docs/api.md `Device` objects of some facilities' devices, or of some devices, by id."""
    try:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                f"SELECT {DEVICE_COLUMNS} FROM {DEVICES_WITH_STATE}"
                " WHERE (%(facilities)s::text[] IS NULL OR d.facility_id = ANY(%(facilities)s))"
                " AND (%(devices)s::text[] IS NULL OR d.id = ANY(%(devices)s)) ORDER BY d.id",
                {
                    "facilities": _ids(facility_ids),
                    "devices": None if device_ids is None else list(device_ids),
                },
            )
            return [device_json(row) for row in await cur.fetchall()]
    except psycopg.Error as exc:
        raise StorageError(f"cannot read devices: {exc}") from exc


async def device_flags(conn: AsyncConnection[Any]) -> list[tuple[str, str, bool, float | None]]:
    """(device id, facility id, online, battery) of every device: what device deltas watch."""
    try:
        cur = await conn.execute(
            f"SELECT d.id, d.facility_id, {_ONLINE}, s.battery FROM {DEVICES_WITH_STATE}"
        )
        # The rows as psycopg built them (text, text, boolean, real): read every second for
        # every device, a conversion of each would cost more than the query.
        return cast("list[tuple[str, str, bool, float | None]]", await cur.fetchall())
    except psycopg.Error as exc:
        raise StorageError(f"cannot read the devices' state: {exc}") from exc


def _ids(facility_ids: frozenset[str] | None) -> list[str] | None:
    return None if facility_ids is None else sorted(facility_ids)
