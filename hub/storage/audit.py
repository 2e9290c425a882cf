"""Queries of the audit chain: `alert_audit` rows and each facility's `audit_heads` record."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import dict_row

from hub.models import AuditStep
from hub.storage.alerts import present

Connection = AsyncConnection[Any]


# The alert_audit columns after facility_id and alert_id, in their order.
_STEP_FIELDS = tuple(field.name for field in fields(AuditStep))


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What one audit row says: the alert, its facility, and the step of its trail."""

    facility_id: str
    alert_id: int
    step: AuditStep

    def as_row(self) -> tuple[object, ...]:
        """The fields in their order, as the alert_audit columns hold them."""
        step = self.step
        return (self.facility_id, self.alert_id, *(getattr(step, name) for name in _STEP_FIELDS))


@dataclass(frozen=True, slots=True)
class StoredAudit:
    """An audit row as stored: its id, its entry and its place in the chain."""

    id: int
    entry: AuditEntry
    prev_hash: str
    hash: str


async def lock_head(conn: Connection, facility_id: str, genesis_hash: str) -> str:
    """The facility's last hash, its head locked for this transaction (opened if new)."""
    return await head_hash(await send_lock_head(conn, facility_id, genesis_hash))


async def send_lock_head(
    conn: Connection, facility_id: str, genesis_hash: str
) -> AsyncCursor[tuple[Any, ...]]:
    """Send the lock of the facility's head; `head_hash` reads its last hash.

    One statement: the no-op update of an existing head locks it, as FOR UPDATE would,
    and a concurrent writer's head is read as that writer committed it.
    """
    return await conn.execute(
        "INSERT INTO audit_heads AS h (facility_id, last_id, last_hash) VALUES (%s, 0, %s)"
        " ON CONFLICT (facility_id) DO UPDATE SET last_id = h.last_id RETURNING last_hash",
        (facility_id, genesis_hash),
    )


async def head_hash(cur: AsyncCursor[tuple[Any, ...]]) -> str:
    """The last hash of the head `send_lock_head` locked."""
    return str(present(await cur.fetchone())[0])


async def append(conn: Connection, entry: AuditEntry, prev_hash: str, digest: str) -> None:
    """Store one row after `prev_hash` and move the facility's head to it.

    One statement whose result is not read: in a pipeline it costs no round trip of its own.
    """
    await conn.execute(
        "WITH row AS (INSERT INTO alert_audit (facility_id, alert_id, at, actor, action,"
        " from_state, to_state, note, prev_hash, hash)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id)"
        " UPDATE audit_heads SET last_id = row.id, last_hash = %s FROM row WHERE facility_id = %s",
        (*entry.as_row(), prev_hash, digest, digest, entry.facility_id),
    )


async def audited_facilities(conn: Connection) -> list[str]:
    """Every facility with a chain head or an audit row, by id."""
    cur = await conn.execute(
        "SELECT facility_id FROM audit_heads UNION SELECT DISTINCT facility_id"
        " FROM alert_audit ORDER BY 1"
    )
    return [str(row[0]) for row in await cur.fetchall()]


async def chain(conn: Connection, facility_id: str) -> list[StoredAudit]:
    """The facility's audit rows in the order they were written."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, facility_id, alert_id, at, actor, action, from_state, to_state, note,"
            " prev_hash, hash FROM alert_audit WHERE facility_id = %s ORDER BY id",
            (facility_id,),
        )
        return [
            StoredAudit(
                row["id"],
                AuditEntry(
                    row["facility_id"],
                    row["alert_id"],
                    AuditStep(**{name: row[name] for name in _STEP_FIELDS}),
                ),
                row["prev_hash"],
                row["hash"],
            )
            for row in await cur.fetchall()
        ]


async def head(conn: Connection, facility_id: str) -> tuple[int, str] | None:
    """(last id, last hash) of the facility's chain head, or None when it has none."""
    cur = await conn.execute(
        "SELECT last_id, last_hash FROM audit_heads WHERE facility_id = %s", (facility_id,)
    )
    row = await cur.fetchone()
    return None if row is None else (row[0], row[1])


async def audit_totals(conn: Connection, facility_id: str | None = None) -> tuple[int, int]:
    """(rows, facilities) of the audit trail, of one facility or of all."""
    cur = await conn.execute(
        "SELECT count(*), count(DISTINCT facility_id) FROM alert_audit"
        " WHERE %(facility)s::text IS NULL OR facility_id = %(facility)s::text",
        {"facility": facility_id},
    )
    row = await cur.fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


async def chain_heads(conn: Connection, facility_ids: list[str]) -> dict[str, tuple[int, int, str]]:
    """Per facility with a chain: (rows, last id, last hash) of its head record."""
    cur = await conn.execute(
        "SELECT h.facility_id, count(a.id), h.last_id, h.last_hash FROM audit_heads h"
        " LEFT JOIN alert_audit a ON a.facility_id = h.facility_id"
        " WHERE h.facility_id = ANY(%s) GROUP BY h.facility_id, h.last_id, h.last_hash",
        (facility_ids,),
    )
    return {str(row[0]): (int(row[1]), int(row[2]), str(row[3])) for row in await cur.fetchall()}
