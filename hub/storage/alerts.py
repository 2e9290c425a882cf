"""Queries of the alerts table family: alerts, their trigger claims, clears and snoozes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypeVar

from psycopg import AsyncConnection, AsyncCursor, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from hub.errors import StorageError
from hub.models import Alert, AlertDecision

Connection = AsyncConnection[Any]


async def raised_since(conn: Connection, facility_id: str, since: datetime) -> int:
    """How many alerts the facility raised after `since` (what a flood is counted on)."""
    cur = await conn.execute(
        "SELECT count(*) FROM alerts WHERE facility_id = %s AND raised_at > %s",
        (facility_id, since),
    )
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])


ALERT_FIELDS = tuple(field.name for field in fields(Alert))
# Every models.Alert column, in its order (the REST API's lists name them over `a.`).
_ALERT_COLUMNS = ", ".join(ALERT_FIELDS)
# The columns an alert change may set (AlertStore's transitions and escalations).
_SETTABLE = frozenset(ALERT_FIELDS) - {"id", "facility_id", "subject", "kind"}

_Row = TypeVar("_Row")


def alert_of(row: dict[str, Any]) -> Alert:
    """An Alert from a row holding (at least) every Alert column."""
    return Alert(**{key: row[key] for key in ALERT_FIELDS})


def present(row: _Row | None) -> _Row:
    """The row a statement with RETURNING (or a locked read) must have produced."""
    if row is None:
        raise StorageError("the database returned no row where one was certain")
    return row


@dataclass(frozen=True, slots=True)
class RaiseChecks:
    """What a raise learns before it writes: whether it claimed its message, the device's
    newest clear when that came after the message, and whether the zone is snoozed."""

    claimed: bool
    cleared_at: datetime | None
    shelved: bool


async def raise_checks(conn: Connection, d: AlertDecision, *, may_shelve: bool) -> RaiseChecks:
    """Lock the device's order, read its newest clear, claim the message, read the snooze.

    Sent as one pipeline, so the four cost one round trip: on the hub's busy event loop
    each round trip of an emergency's transaction also waits for a turn of the loop.
    The claim is taken after the order lock, as before: a concurrent copy of the message
    waits on the claim, then finds it (and the checks of a lost claim are not used).
    """
    clear = claim = snooze = None
    async with conn.pipeline():
        if d.order is not None and d.device_id is not None:
            await lock_device_kind(conn, d.device_id, d.kind)
            clear = await conn.execute(
                "SELECT at FROM device_clears WHERE device_id = %s AND kind = %s"
                " AND (ts, seq) > (%s, %s)",
                (d.device_id, d.kind, *d.order),
            )
        if d.seq is not None and d.device_id is not None:
            claim = await conn.execute(
                "INSERT INTO alert_triggers (device_id, seq, kind, at) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING RETURNING 1",
                (d.device_id, d.seq, d.kind, d.at),
            )
        if may_shelve and d.zone_id is not None:
            snooze = await conn.execute(
                "SELECT 1 FROM snoozes WHERE facility_id = %s AND zone_id = %s"
                " AND starts_at <= %s AND until > %s LIMIT 1",
                (d.facility_id, d.zone_id, d.at, d.at),
            )
    cleared = None if clear is None else await clear.fetchone()
    return RaiseChecks(
        claimed=claim is None or await claim.fetchone() is not None,
        cleared_at=None if cleared is None else cleared[0],
        shelved=snooze is not None and await snooze.fetchone() is not None,
    )


# SQL: whether the repeating message comes after the alert's latest trigger, by the
# device's own order (ts, seq). A timer's repeat, or an alert of before that order was
# kept, counts as newer: it is what it was before messages could overtake each other.
_REPEAT_IS_NEWER = (
    "(EXCLUDED.seq_ts IS NULL OR alerts.seq_ts IS NULL"
    " OR (EXCLUDED.seq_ts, EXCLUDED.seq) > (alerts.seq_ts, alerts.seq))"
)


async def upserted(cur: AsyncCursor[dict[str, Any]]) -> tuple[Alert, bool]:
    """The alert `send_upsert` opened or repeated, and whether it was opened."""
    row = present(await cur.fetchone())
    return alert_of(row), bool(row["inserted"])


async def send_upsert(
    conn: Connection, d: AlertDecision, *, shelved: bool, cleared_at: datetime | None = None
) -> AsyncCursor[dict[str, Any]]:
    """Send the upsert that opens the decided alert, or counts a repeat on the open one;
    `upserted` reads its row. Not read at once, so that in a pipeline what is sent after
    it (the audit head's lock) shares its round trip.

    A repeat that the device sent before the alert's latest trigger (a copy that took the
    other hub, and longer) counts, but leaves the newer trigger's seq, detail and clearing
    as they are. `cleared_at`: the device's newest clear, when it came after `d`. The
    message `d` claimed (raise_checks) is linked to the alert.
    """
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "INSERT INTO alerts (facility_id, zone_id, device_id, subject, kind, priority,"
        " latched, seq, seq_ts, raised_at, last_raised_at, shelved, detail, cleared_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (subject, kind) WHERE state <> 'resolved' DO UPDATE SET"
        "  count = alerts.count + 1,"
        "  last_raised_at = GREATEST(alerts.last_raised_at, EXCLUDED.last_raised_at),"
        f" seq = CASE WHEN {_REPEAT_IS_NEWER}"
        "   THEN coalesce(EXCLUDED.seq, alerts.seq) ELSE alerts.seq END,"
        f" seq_ts = CASE WHEN {_REPEAT_IS_NEWER}"
        "   THEN coalesce(EXCLUDED.seq_ts, alerts.seq_ts) ELSE alerts.seq_ts END,"
        f" cleared_at = CASE WHEN {_REPEAT_IS_NEWER}"
        "   THEN EXCLUDED.cleared_at ELSE alerts.cleared_at END,"
        f" detail = CASE WHEN {_REPEAT_IS_NEWER}"
        "   THEN alerts.detail || EXCLUDED.detail ELSE EXCLUDED.detail || alerts.detail END"
        f" RETURNING {_ALERT_COLUMNS}, (xmax = 0) AS inserted",
        (
            d.facility_id,
            d.zone_id,
            d.device_id,
            d.subject,
            d.kind,
            d.priority,
            d.latched,
            d.seq,
            d.ts if d.seq is not None else None,
            d.at,
            d.at,
            shelved,
            Jsonb(d.detail or {}),
            cleared_at,
        ),
    )
    if d.seq is not None and d.device_id is not None:
        # Note which alert the claimed message raised or repeated; sent before the
        # upsert's row is read, so that in a pipeline both cost one round trip.
        await conn.execute(
            "UPDATE alert_triggers SET alert_id = (SELECT id FROM alerts"
            "  WHERE subject = %s AND kind = %s AND state <> 'resolved')"
            " WHERE device_id = %s AND seq = %s AND kind = %s",
            (d.subject, d.kind, d.device_id, d.seq, d.kind),
        )
    return cur


# -- the order of one device's raises and clears ---------------------------------------

# The advisory lock class of (device, kind) ordering; any constant unused elsewhere.
_ORDER_LOCK_CLASS = 0x0CA4_0011


async def lock_device_kind(conn: Connection, device_id: str, kind: str) -> None:
    """Serialise, until commit, the raises and clears of one device's alerts of `kind`.

    Without it a clear committed on one hub and the event it clears, on the other, could
    each miss the other: the clear finds no alert yet, the raise no clear yet.
    """
    await conn.execute(
        "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
        (_ORDER_LOCK_CLASS, f"{device_id}/{kind}"),
    )


async def record_clear(
    conn: Connection, device_id: str, kind: str, order: tuple[datetime, int], at: datetime
) -> None:
    """Remember the device's clear of `kind`, unless it already sent a newer one."""
    ts, seq = order
    await conn.execute(
        "INSERT INTO device_clears AS c (device_id, kind, ts, seq, at) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (device_id, kind) DO UPDATE SET ts = EXCLUDED.ts, seq = EXCLUDED.seq,"
        "  at = EXCLUDED.at WHERE (EXCLUDED.ts, EXCLUDED.seq) > (c.ts, c.seq)",
        (device_id, kind, ts, seq, at),
    )


async def raised_after(conn: Connection, alert_id: int, order: tuple[datetime, int]) -> bool:
    """Whether the alert's latest trigger was sent after `order` (so a clear of then is old)."""
    cur = await conn.execute(
        "SELECT seq_ts IS NOT NULL AND (seq_ts, seq) > (%s, %s) FROM alerts WHERE id = %s",
        (*order, alert_id),
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def lock_alert(conn: Connection, alert_id: int) -> tuple[Alert, datetime] | None:
    """The alert, locked for this transaction, and the database's now; None if none."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_ALERT_COLUMNS}, now() AS db_now FROM alerts WHERE id = %s FOR UPDATE",
            (alert_id,),
        )
        row = await cur.fetchone()
    return None if row is None else (alert_of(row), row["db_now"])


async def lock_open_alert(conn: Connection, subject: str, kind: str) -> Alert | None:
    """The open alert of a subject and kind, locked for this transaction; None if none."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE subject = %s AND kind = %s"
            " AND state <> 'resolved' FOR UPDATE",
            (subject, kind),
        )
        row = await cur.fetchone()
    return None if row is None else alert_of(row)


async def update_alert(conn: Connection, alert_id: int, changes: Mapping[str, object]) -> Alert:
    """Set some columns of an alert (named as in models.Alert); the alert after."""
    unknown = set(changes) - _SETTABLE
    if unknown:
        raise ValueError(f"not settable alert columns: {sorted(unknown)}")
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = %s").format(sql.Identifier(column)) for column in changes
    )
    query = sql.SQL("UPDATE alerts SET {} WHERE id = %s RETURNING {}").format(
        assignments, sql.SQL(_ALERT_COLUMNS)
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, (*changes.values(), alert_id))
        return alert_of(present(await cur.fetchone()))


async def mark_escalated(
    conn: Connection, alert_id: int, column: str, at: datetime
) -> Alert | None:
    """Stamp an escalation step (renotified_at or overdue_at) on an active alert, once.

    None when the alert is no longer active or the step was taken already.
    """
    if column not in ("renotified_at", "overdue_at"):
        raise ValueError(f"not an escalation column: {column!r}")
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"UPDATE alerts SET {column} = %s WHERE id = %s AND {column} IS NULL"
            f" AND state = 'active' RETURNING {_ALERT_COLUMNS}",
            (at, alert_id),
        )
        row = await cur.fetchone()
    return None if row is None else alert_of(row)


async def shelve_zone(
    conn: Connection,
    facility_id: str,
    zone_id: str,
    *,
    starts_at: datetime,
    until: datetime,
    reason: str,
    actor: str,
    never_shelved: Iterable[str],
) -> list[Alert]:
    """Record a snooze of the zone and shelve its open alerts; those shelved, by id."""
    await conn.execute(
        "INSERT INTO snoozes (facility_id, zone_id, starts_at, until, reason,"
        " created_by) VALUES (%s, %s, %s, %s, %s, %s)",
        (facility_id, zone_id, starts_at, until, reason, actor),
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "UPDATE alerts SET shelved = true WHERE facility_id = %s AND zone_id = %s"
            " AND state <> 'resolved' AND NOT shelved AND kind <> ALL(%s)"
            f" RETURNING {_ALERT_COLUMNS}",
            (facility_id, zone_id, list(never_shelved)),
        )
        rows = await cur.fetchall()
    return [alert_of(row) for row in sorted(rows, key=lambda r: int(r["id"]))]


async def get_alert(conn: Connection, alert_id: int) -> Alert | None:
    """One alert, or None."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = %s", (alert_id,))
        row = await cur.fetchone()
    return None if row is None else alert_of(row)


async def open_alerts(conn: Connection, facility_ids: Sequence[str] | None = None) -> list[Alert]:
    """Every open (unresolved) alert of some facilities (all when None), newest first."""
    ids = None if facility_ids is None else list(facility_ids)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE state <> 'resolved'"
            " AND (%(ids)s::text[] IS NULL OR facility_id = ANY(%(ids)s::text[]))"
            " ORDER BY raised_at DESC, id DESC",
            {"ids": ids},
        )
        return [alert_of(row) for row in await cur.fetchall()]


@dataclass(frozen=True, slots=True)
class EscalationCandidate:
    """An active alert with an escalation step (renotify, overdue) not yet taken."""

    id: int
    facility_id: str
    zone_id: str | None
    priority: str
    raised_at: datetime
    renotified_at: datetime | None
    overdue_at: datetime | None


@dataclass(frozen=True, slots=True)
class UnattendedFall:
    """A fall nobody has attended yet, with no long_lie raised for it."""

    id: int
    facility_id: str
    zone_id: str | None
    device_id: str
    raised_at: datetime


async def open_alert_ids(conn: Connection, kinds: Sequence[str]) -> dict[tuple[str, str], int]:
    """(subject, kind) -> id of every open alert of these kinds."""
    cur = await conn.execute(
        "SELECT id, subject, kind FROM alerts WHERE state <> 'resolved' AND kind = ANY(%s)",
        (list(kinds),),
    )
    return {(str(row[1]), str(row[2])): int(row[0]) for row in await cur.fetchall()}


async def escalation_candidates(
    conn: Connection, priorities: Sequence[str]
) -> list[EscalationCandidate]:
    """Active, unshelved alerts of these priorities with an escalation step still to take."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, facility_id, zone_id, priority, raised_at, renotified_at, overdue_at"
            " FROM alerts WHERE state = 'active' AND NOT shelved AND priority = ANY(%s)"
            " AND (renotified_at IS NULL OR overdue_at IS NULL)",
            (list(priorities),),
        )
        return [EscalationCandidate(**row) for row in await cur.fetchall()]


async def unattended_falls(conn: Connection) -> list[UnattendedFall]:
    """Falls nobody has attended yet, with no long_lie raised for them."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT f.id, f.facility_id, f.zone_id, f.device_id, f.raised_at FROM alerts f"
            " WHERE f.kind = 'fall' AND f.state IN ('active', 'acknowledged')"
            " AND NOT EXISTS (SELECT 1 FROM alerts l WHERE l.kind = 'long_lie'"
            "  AND l.subject = f.subject AND l.detail->>'fall_alert_id' = f.id::text)"
        )
        return [UnattendedFall(**row) for row in await cur.fetchall()]
