"""A month of history written in one go with COPY (`carehub demo`'s first start).

Rows arrive ready-made (readings, events, alerts with their ids, chained audit rows); this
module only writes them, reserves the ids they use, and records in `seeded_history` that
the district has its history, all inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import msgspec
import psycopg
from psycopg import AsyncConnection
from psycopg.rows import class_row
from psycopg.types.json import set_json_dumps

from hub.errors import StorageError
from hub.storage.migrate import storage_flavour
from hub.storage.writer import STATE_FIELDS

Connection = AsyncConnection[Any]

# Any constant works; two demos starting on one database must not both write the month.
_SEED_LOCK: Final = 0x0CA4E_4B_12

_encode_json = msgspec.json.Encoder().encode

# Each table's columns as COPY writes them, with their binary types.
# The readings and events tables both begin with the device message's key and place.
_MESSAGE: Final = (
    ("ts", "timestamptz"),
    ("device_id", "text"),
    ("seq", "int8"),
    ("facility_id", "text"),
    ("zone_id", "text"),
)
_READING: Final = (
    *_MESSAGE,
    ("received_at", "timestamptz"),
    ("battery", "float4"),
    ("presence", "bool"),
    ("count", "int4"),
    ("staff", "int4"),
    ("rssi", "float4"),
    ("payload", "jsonb"),
)
READING_COLUMNS: Final = tuple(name for name, _ in _READING)

# The events table (payload last).
_EVENT: Final = (
    *_MESSAGE,
    ("event", "text"),
    ("received_at", "timestamptz"),
    ("payload", "jsonb"),
)
EVENT_COLUMNS: Final = tuple(name for name, _ in _EVENT)

# The alerts table, with the ids reserved for the month.
_ALERT: Final = (
    ("id", "int8"),
    ("facility_id", "text"),
    ("zone_id", "text"),
    ("device_id", "text"),
    ("subject", "text"),
    ("kind", "text"),
    ("priority", "text"),
    ("latched", "bool"),
    ("state", "text"),
    ("count", "int4"),
    ("seq", "int8"),
    ("seq_ts", "timestamptz"),
    ("raised_at", "timestamptz"),
    ("last_raised_at", "timestamptz"),
    ("acknowledged_at", "timestamptz"),
    ("acknowledged_by", "text"),
    ("attended_at", "timestamptz"),
    ("attended_by", "text"),
    ("resolved_at", "timestamptz"),
    ("resolved_by", "text"),
    ("disposition", "text"),
    ("note", "text"),
    ("cleared_at", "timestamptz"),
    ("renotified_at", "timestamptz"),
    ("overdue_at", "timestamptz"),
    ("detail", "jsonb"),
)
ALERT_COLUMNS: Final = tuple(name for name, _ in _ALERT)

# The alert_audit table, rows chained by hub/alerts/audit.py.
_AUDIT: Final = (
    ("id", "int8"),
    ("facility_id", "text"),
    ("alert_id", "int8"),
    ("at", "timestamptz"),
    ("actor", "text"),
    ("action", "text"),
    ("from_state", "text"),
    ("to_state", "text"),
    ("note", "text"),
    ("prev_hash", "text"),
    ("hash", "text"),
)
AUDIT_COLUMNS: Final = tuple(name for name, _ in _AUDIT)


@dataclass(frozen=True, slots=True)
class SeededHistory:
    """What was written for a district: its period, the rows of each kind, how long it took."""

    district: str
    period_start: datetime
    period_end: datetime
    readings: int
    events: int
    alerts: int
    audit_rows: int
    seconds: float
    written_at: datetime | None = None


async def lock_seeding(conn: Connection) -> None:
    """Hold the seeding lock until the transaction ends: one writer of history at a time."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SEED_LOCK,))


async def seeded(conn: Connection, district: str) -> SeededHistory | None:
    """The history already written for `district`, or None."""
    async with conn.cursor(row_factory=class_row(SeededHistory)) as cur:
        await cur.execute(
            "SELECT district, period_start, period_end, readings, events, alerts, audit_rows,"
            " seconds, written_at FROM seeded_history WHERE district = %s",
            (district,),
        )
        return await cur.fetchone()


async def record_seeded(conn: Connection, history: SeededHistory) -> None:
    """Note that `history.district` has its history now."""
    await conn.execute(
        "INSERT INTO seeded_history (district, period_start, period_end, readings, events,"
        " alerts, audit_rows, seconds) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            history.district,
            history.period_start,
            history.period_end,
            history.readings,
            history.events,
            history.alerts,
            history.audit_rows,
            history.seconds,
        ),
    )


async def reserve_ids(conn: Connection, table: str, n: int) -> list[int]:
    """`n` fresh ids of `table` (alerts or alert_audit), in increasing order."""
    if table not in ("alerts", "alert_audit"):
        raise ValueError(f"no id sequence is reserved for {table!r}")
    try:
        cur = await conn.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            (table, n),
        )
        return sorted(int(row[0]) for row in await cur.fetchall())
    except psycopg.Error as exc:
        raise StorageError(f"cannot reserve {n} ids of {table}: {exc}") from exc


async def _copy(
    conn: Connection,
    table: str,
    columns: Sequence[tuple[str, str]],
    rows: Iterable[Sequence[Any]],
) -> int:
    """COPY rows (binary) into `table`; JSON columns are given as Python values."""
    written = 0
    names = ", ".join(name for name, _ in columns)
    statement = f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)"
    try:
        async with conn.cursor() as cur:
            # msgspec writes JSON several times faster than the json module psycopg uses.
            set_json_dumps(_encode_json, cur)
            async with cur.copy(statement) as copy:
                copy.set_types([kind for _, kind in columns])
                for row in rows:
                    await copy.write_row(row)
                    written += 1
    except psycopg.Error as exc:
        raise StorageError(f"cannot write the history's {table}: {exc}") from exc
    return written


async def copy_readings(conn: Connection, rows: Iterable[Sequence[Any]]) -> int:
    """COPY readings (READING_COLUMNS order, payload a dict); how many."""
    return await _copy(conn, "readings", _READING, rows)


async def copy_events(conn: Connection, rows: Iterable[Sequence[Any]]) -> int:
    """COPY events (EVENT_COLUMNS order, payload a dict); how many."""
    return await _copy(conn, "events", _EVENT, rows)


async def copy_alerts(conn: Connection, rows: Iterable[Sequence[Any]]) -> int:
    """COPY alerts with their reserved ids (ALERT_COLUMNS order, detail a dict); how many."""
    return await _copy(conn, "alerts", _ALERT, rows)


async def copy_audit(conn: Connection, rows: Iterable[Sequence[Any]]) -> int:
    """COPY chained audit rows with their reserved ids (AUDIT_COLUMNS order); how many."""
    return await _copy(conn, "alert_audit", _AUDIT, rows)


async def move_heads(conn: Connection, heads: dict[str, tuple[int, str]]) -> None:
    """Point each facility's chain head at its last row: facility -> (id, hash)."""
    async with conn.cursor() as cur:
        await cur.executemany(
            "UPDATE audit_heads SET last_id = %s, last_hash = %s WHERE facility_id = %s",
            [(last_id, last_hash, facility) for facility, (last_id, last_hash) in heads.items()],
        )


async def refresh_occupancy(conn: Connection, start: datetime, end: datetime) -> None:
    """Materialise occupancy_5m over the history (TimescaleDB; outside a transaction).

    Its refresh policy only looks two days back, so without this the month's older
    readings would never reach the aggregate. On plain PostgreSQL it is a view: nothing to do.
    """
    if await storage_flavour(conn) != "timescale":
        return
    try:
        await conn.execute(
            "CALL refresh_continuous_aggregate('occupancy_5m', %s::timestamptz, %s::timestamptz)",
            (start, end),
        )
    except psycopg.Error as exc:
        raise StorageError(f"cannot refresh occupancy_5m over the history: {exc}") from exc


def _settle_sql() -> str:
    ordered = ", ".join(
        f"CASE WHEN {name} IS NOT NULL THEN ts END, CASE WHEN {name} IS NOT NULL THEN seq END"
        for name in STATE_FIELDS
    )
    columns = ", ".join(f"{name}_ts, {name}_seq" for name in STATE_FIELDS)
    return (
        f"INSERT INTO device_state (device_id, last_seen, last_seq, state_ts,"
        f" {', '.join(STATE_FIELDS)}, {columns})"
        f" SELECT DISTINCT ON (device_id) device_id, %(end)s, seq, ts,"
        f" {', '.join(STATE_FIELDS)}, {ordered}"
        " FROM readings WHERE device_id = ANY(%(devices)s) AND ts < %(end)s"
        " ORDER BY device_id, seq DESC"
        " ON CONFLICT (device_id) DO NOTHING"
    )


_SETTLE_STATE: Final = _settle_sql()


async def settle_devices(
    conn: Connection, device_ids: Sequence[str], start: datetime, end: datetime
) -> None:
    """The devices existed all month and were heard as it ended: their registration and state.

    Registered at the month's start, so the month's figures count them (a button with
    no test call, devices online); their latest state is their last reading of the
    month, heard at its end, so the hub's timers do not take a district that was just
    speaking for one silent since its registration. A state the hub already holds stays.
    """
    try:
        await conn.execute(
            "UPDATE devices SET registered_at = %s WHERE id = ANY(%s) AND registered_at > %s",
            (start, list(device_ids), start),
        )
        await conn.execute(_SETTLE_STATE, {"devices": list(device_ids), "end": end})
    except psycopg.Error as exc:
        raise StorageError(f"cannot settle the devices after the history: {exc}") from exc
