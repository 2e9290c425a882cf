"""Alert lifecycle (SPEC §4): raise and repeat, acknowledge, attend, resolve, snooze.

The database holds the state. One open alert per (subject, kind) is a unique index, so
concurrent hub processes cannot open two; a repeat increments the count. Every change
writes, in the same transaction, an audit row chained by hash per facility, a row of
`live_changes` announced with NOTIFY, and whatever the `in_transaction` hooks add
(notifications), so none of them can exist without the others.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from hub.errors import AlertError, StorageError
from hub.models import DISPOSITIONS, Alert, AlertChange, AlertDecision, AlertState
from hub.rules import NEVER_SHELVED
from hub.wire import change_json

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
_Row = TypeVar("_Row")
DictConnection = AsyncConnection[dict[str, Any]]
# Called inside the change's transaction (notifications are queued there).
TransactionHook = Callable[[AsyncConnection[Any], AlertChange], Awaitable[object]]
# Called after commit (device ack, local bookkeeping); must not block.
ChangeListener = Callable[[AlertChange], None]

_ALERT_COLUMNS = (
    "id, facility_id, zone_id, device_id, subject, kind, priority, latched, state, count, seq,"
    " raised_at, last_raised_at, acknowledged_at, acknowledged_by, attended_at, attended_by,"
    " resolved_at, resolved_by, disposition, note, cleared_at, renotified_at, overdue_at,"
    " shelved, detail"
)
NOTE_MAX = 2000
ACTOR_MAX = 128


def live_channel(schema: str) -> str:
    """The NOTIFY channel of this schema's live changes."""
    return f"carehub_live_{schema}"[:63]


def audit_hash(
    *,
    facility_id: str,
    alert_id: int,
    at: datetime,
    actor: str,
    action: str,
    from_state: str | None,
    to_state: str | None,
    note: str,
    prev_hash: str,
) -> str:
    """The hash of one audit row over its content and the previous row's hash."""
    content = [
        facility_id,
        alert_id,
        at.astimezone(UTC).isoformat(timespec="microseconds"),
        actor,
        action,
        from_state,
        to_state,
        note,
        prev_hash,
    ]
    canonical = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


_ALERT_FIELDS = tuple(field.name for field in fields(Alert))


def _alert(row: dict[str, Any]) -> Alert:
    return Alert(**{key: row[key] for key in _ALERT_FIELDS})


@dataclass(frozen=True, slots=True)
class AuditProblem:
    """The first row where a facility's audit chain does not hold, and why."""

    facility_id: str
    row_id: int | None
    why: str


class AlertStore:
    """Every alert change, each in one transaction with its audit row and live change."""

    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConnection[object]],
        schema: str,
        *,
        in_transaction: Sequence[TransactionHook] = (),
        listeners: Sequence[ChangeListener] = (),
    ) -> None:
        self._pool = pool
        self._channel = live_channel(schema)
        self._in_transaction = list(in_transaction)
        self._listeners = list(listeners)

    def add_listener(self, listener: ChangeListener) -> None:
        """Call `listener` after each committed change made through this store."""
        self._listeners.append(listener)

    def add_transaction_hook(self, hook: TransactionHook) -> None:
        """Run `hook` inside each change's transaction."""
        self._in_transaction.append(hook)

    # -- raising -------------------------------------------------------------------------

    async def raise_alert(self, decision: AlertDecision) -> AlertChange | None:
        """Open an alert, or count a repeat on the open one; None for a redelivered message."""
        try:
            async with self._pool.connection() as conn, conn.transaction():
                change = await self._raise(conn, decision)
                if change is not None:
                    await self._record(conn, change)
        except psycopg.Error as exc:
            raise StorageError(f"cannot store the {decision.kind} alert: {exc}") from exc
        if change is not None:
            self._announce(change)
        return change

    async def _raise(self, conn: AsyncConnection[Any], d: AlertDecision) -> AlertChange | None:
        triggered = d.seq is not None and d.device_id is not None
        if triggered:
            # Claim the message first: a concurrent copy of it waits here, then finds it.
            cur = await conn.execute(
                "INSERT INTO alert_triggers (device_id, seq, kind, at) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING RETURNING 1",
                (d.device_id, d.seq, d.kind, d.at),
            )
            if await cur.fetchone() is None:
                return None
        shelved = False
        if d.zone_id is not None and d.kind not in NEVER_SHELVED:
            cur = await conn.execute(
                "SELECT 1 FROM snoozes WHERE facility_id = %s AND zone_id = %s"
                " AND starts_at <= %s AND until > %s LIMIT 1",
                (d.facility_id, d.zone_id, d.at, d.at),
            )
            shelved = await cur.fetchone() is not None
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "INSERT INTO alerts (facility_id, zone_id, device_id, subject, kind, priority,"
                " latched, seq, raised_at, last_raised_at, shelved, detail)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (subject, kind) WHERE state <> 'resolved' DO UPDATE SET"
                "  count = alerts.count + 1, last_raised_at = EXCLUDED.last_raised_at,"
                "  seq = coalesce(EXCLUDED.seq, alerts.seq), cleared_at = NULL,"
                "  detail = alerts.detail || EXCLUDED.detail"
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
                    d.at,
                    d.at,
                    shelved,
                    Jsonb(d.detail or {}),
                ),
            )
            row = _present(await cur.fetchone())
        alert = _alert(row)
        if triggered:
            await conn.execute(
                "UPDATE alert_triggers SET alert_id = %s"
                " WHERE device_id = %s AND seq = %s AND kind = %s",
                (alert.id, d.device_id, d.seq, d.kind),
            )
        if row["inserted"]:
            return AlertChange(alert, "raise", None, "system", d.at)
        return AlertChange(alert, "repeat", alert.state, "system", d.at, f"count {alert.count}")

    # -- lifecycle -----------------------------------------------------------------------

    async def acknowledge(self, alert_id: int, actor: str, note: str = "") -> AlertChange:
        """Take the alert over: `active` -> `acknowledged`, by `actor`."""
        return await self._transition(alert_id, "acknowledge", actor, note)

    async def attend(self, alert_id: int, actor: str, note: str = "") -> AlertChange:
        """Someone is on site: `active`/`acknowledged` -> `attended`."""
        return await self._transition(alert_id, "attend", actor, note)

    async def resolve(
        self, alert_id: int, actor: str, disposition: str, note: str = ""
    ) -> AlertChange:
        """Close the alert with a disposition: real, false_alarm, test or other."""
        if disposition not in DISPOSITIONS:
            raise AlertError(
                "invalid",
                f"disposition must be one of {', '.join(DISPOSITIONS)}, not {disposition!r}",
            )
        return await self._transition(alert_id, "resolve", actor, note, disposition=disposition)

    async def comment(self, alert_id: int, actor: str, note: str) -> AlertChange:
        """Add a note to the alert's trail; its state does not change."""
        if not note.strip():
            raise AlertError("invalid", "a comment needs some text")
        return await self._transition(alert_id, "comment", actor, note)

    async def _transition(
        self,
        alert_id: int,
        action: str,
        actor: str,
        note: str,
        *,
        disposition: str | None = None,
        at: datetime | None = None,
    ) -> AlertChange:
        actor, note = _checked_actor(actor), _checked_note(note)
        try:
            async with self._pool.connection() as conn, conn.transaction():
                change = await self._apply(
                    conn, alert_id, action, actor, note, disposition=disposition, at=at
                )
                await self._record(conn, change)
        except psycopg.Error as exc:
            raise StorageError(f"cannot {action} alert {alert_id}: {exc}") from exc
        self._announce(change)
        return change

    async def _apply(
        self,
        conn: AsyncConnection[Any],
        alert_id: int,
        action: str,
        actor: str,
        note: str,
        *,
        disposition: str | None,
        at: datetime | None,
    ) -> AlertChange:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                f"SELECT {_ALERT_COLUMNS}, now() AS db_now FROM alerts WHERE id = %s FOR UPDATE",
                (alert_id,),
            )
            row = await cur.fetchone()
        if row is None:
            raise AlertError("not_found", f"there is no alert {alert_id}")
        alert = _alert(row)
        when: datetime = at or row["db_now"]
        sets, values = _transition_sets(
            alert, action, actor=actor, note=note, disposition=disposition, at=when
        )
        async with conn.cursor(row_factory=dict_row) as cur:
            if sets:
                await cur.execute(
                    f"UPDATE alerts SET {', '.join(sets)} WHERE id = %s RETURNING {_ALERT_COLUMNS}",
                    (*values, alert_id),
                )
                alert_after = _alert(_present(await cur.fetchone()))
            else:
                alert_after = alert
        return AlertChange(alert_after, action, alert.state, actor, when, note)

    async def resolve_condition_ended(self, alert_id: int, at: datetime, why: str) -> AlertChange:
        """Resolve a non-latched alert whose condition ended (by the system, `other`)."""
        return await self._transition(
            alert_id, "resolve", "system", why, disposition="other", at=at
        )

    async def clear(self, kind: str, device_id: str, at: datetime) -> AlertChange | None:
        """The device says the condition ended: latched alerts stay open, others resolve."""
        try:
            async with self._pool.connection() as conn, conn.transaction():
                async with conn.cursor(row_factory=dict_row) as cur:
                    await cur.execute(
                        f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE subject = %s AND kind = %s"
                        " AND state <> 'resolved' FOR UPDATE",
                        (device_id, kind),
                    )
                    row = await cur.fetchone()
                if row is None:
                    return None
                alert = _alert(row)
                if alert.latched:
                    change = await self._apply(
                        conn,
                        alert.id,
                        "clear",
                        "device",
                        "cleared at the device",
                        disposition=None,
                        at=at,
                    )
                else:
                    change = await self._apply(
                        conn,
                        alert.id,
                        "resolve",
                        "system",
                        "condition ended",
                        disposition="other",
                        at=at,
                    )
                await self._record(conn, change)
        except psycopg.Error as exc:
            raise StorageError(f"cannot clear the {kind} alert of {device_id}: {exc}") from exc
        self._announce(change)
        return change

    async def escalate(self, alert_id: int, step: str, at: datetime) -> AlertChange | None:
        """Take an escalation step (renotify or overdue) once; None when no longer due."""
        column = {"renotify": "renotified_at", "overdue": "overdue_at"}[step]
        try:
            async with self._pool.connection() as conn, conn.transaction():
                async with conn.cursor(row_factory=dict_row) as cur:
                    await cur.execute(
                        f"UPDATE alerts SET {column} = %s WHERE id = %s AND {column} IS NULL"
                        f" AND state = 'active' RETURNING {_ALERT_COLUMNS}",
                        (at, alert_id),
                    )
                    row = await cur.fetchone()
                if row is None:
                    return None
                alert = _alert(row)
                why = "not acknowledged in time"
                change = AlertChange(alert, step, alert.state, "system", at, why)
                await self._record(conn, change)
        except psycopg.Error as exc:
            raise StorageError(f"cannot escalate alert {alert_id}: {exc}") from exc
        self._announce(change)
        return change

    async def snooze(
        self,
        facility_id: str,
        zone_id: str,
        *,
        until: datetime,
        reason: str,
        actor: str,
        now: datetime,
    ) -> list[AlertChange]:
        """Shelve a zone's alerts until `until`, with a reason; returns the alerts shelved."""
        actor, reason = _checked_actor(actor), _checked_note(reason)
        if not reason.strip():
            raise AlertError("invalid", "a snooze needs a reason")
        if until <= now:
            raise AlertError("invalid", "a snooze must end in the future")
        if until - now > timedelta(days=7):
            raise AlertError("invalid", "a snooze may last at most 7 days")
        changes: list[AlertChange] = []
        try:
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "SELECT 1 FROM zones WHERE facility_id = %s AND zone_id = %s",
                    (facility_id, zone_id),
                )
                if await cur.fetchone() is None:
                    raise AlertError("not_found", f"facility {facility_id} has no zone {zone_id}")
                await conn.execute(
                    "INSERT INTO snoozes (facility_id, zone_id, starts_at, until, reason,"
                    " created_by) VALUES (%s, %s, %s, %s, %s, %s)",
                    (facility_id, zone_id, now, until, reason, actor),
                )
                async with conn.cursor(row_factory=dict_row) as dcur:
                    await dcur.execute(
                        f"UPDATE alerts SET shelved = true WHERE facility_id = %s AND zone_id = %s"
                        " AND state <> 'resolved' AND NOT shelved AND kind <> ALL(%s)"
                        f" RETURNING {_ALERT_COLUMNS}",
                        (facility_id, zone_id, list(NEVER_SHELVED)),
                    )
                    rows = await dcur.fetchall()
                note = f"zone {zone_id} snoozed until {until.isoformat()}: {reason}"
                for row in sorted(rows, key=lambda r: int(r["id"])):
                    alert = _alert(row)
                    change = AlertChange(alert, "snooze", alert.state, actor, now, note)
                    await self._record(conn, change)
                    changes.append(change)
        except psycopg.Error as exc:
            raise StorageError(f"cannot snooze zone {zone_id}: {exc}") from exc
        for change in changes:
            self._announce(change)
        return changes

    # -- reading -------------------------------------------------------------------------

    async def get(self, alert_id: int) -> Alert:
        """One alert, or AlertError not_found."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = %s", (alert_id,))
            row = await cur.fetchone()
        if row is None:
            raise AlertError("not_found", f"there is no alert {alert_id}")
        return _alert(row)

    # -- the trail -----------------------------------------------------------------------

    async def _record(self, conn: AsyncConnection[Any], change: AlertChange) -> None:
        alert = change.alert
        await write_audit(
            conn,
            facility_id=alert.facility_id,
            alert_id=alert.id,
            at=change.at,
            actor=change.actor,
            action=change.action,
            from_state=change.previous,
            to_state=alert.state,
            note=change.note,
        )
        cur = await conn.execute(
            "INSERT INTO live_changes (facility_id, alert_id, change) VALUES (%s, %s, %s)"
            " RETURNING id",
            (alert.facility_id, alert.id, Jsonb(change_json(change))),
        )
        change_id = _present(await cur.fetchone())[0]
        await conn.execute("SELECT pg_notify(%s, %s)", (self._channel, str(change_id)))
        for hook in self._in_transaction:
            await hook(conn, change)

    def _announce(self, change: AlertChange) -> None:
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:
                logger.exception("alert listener failed", extra={"alert_id": change.alert.id})


async def open_alerts(
    conn: AsyncConnection[Any], facility_ids: Sequence[str] | None = None
) -> list[Alert]:
    """Every open (unresolved) alert of some facilities (all when None), newest first."""
    ids = None if facility_ids is None else list(facility_ids)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE state <> 'resolved'"
            " AND (%(ids)s::text[] IS NULL OR facility_id = ANY(%(ids)s::text[]))"
            " ORDER BY raised_at DESC, id DESC",
            {"ids": ids},
        )
        return [_alert(row) for row in await cur.fetchall()]


def _present(row: _Row | None) -> _Row:
    """The row a statement with RETURNING (or a locked read) must have produced."""
    if row is None:
        raise StorageError("the database returned no row where one was certain")
    return row


def _checked_actor(actor: str) -> str:
    actor = actor.strip()
    if not actor:
        raise AlertError("invalid", "who is acting must be named")
    if len(actor) > ACTOR_MAX:
        raise AlertError("invalid", f"an actor name is at most {ACTOR_MAX} characters")
    return actor


def _checked_note(note: str) -> str:
    if len(note) > NOTE_MAX:
        raise AlertError("invalid", f"a note is at most {NOTE_MAX} characters")
    if "\x00" in note:
        raise AlertError("invalid", "a note cannot contain U+0000")
    return note


def _transition_sets(
    alert: Alert,
    action: str,
    *,
    actor: str,
    note: str,
    disposition: str | None,
    at: datetime,
) -> tuple[list[str], list[Any]]:
    """The columns an action changes, or AlertError when the state does not allow it."""
    state: AlertState = alert.state
    if action == "comment":
        return [], []
    if state == "resolved":
        raise AlertError("conflict", f"alert {alert.id} is already resolved")
    if action == "clear":
        return ["cleared_at = %s"], [at]
    if action == "acknowledge":
        if state != "active":
            raise AlertError(
                "conflict",
                f"alert {alert.id} was already taken over by {alert.acknowledged_by} ({state})",
            )
        return (
            ["state = 'acknowledged'", "acknowledged_at = %s", "acknowledged_by = %s"],
            [at, actor],
        )
    if action == "attend":
        if state == "attended":
            raise AlertError(
                "conflict", f"alert {alert.id} is already attended by {alert.attended_by}"
            )
        sets = ["state = 'attended'", "attended_at = %s", "attended_by = %s"]
        values: list[Any] = [at, actor]
        if alert.acknowledged_at is None:
            # Attending on site takes the alert over too.
            sets += ["acknowledged_at = %s", "acknowledged_by = %s"]
            values += [at, actor]
        return sets, values
    if action == "resolve":
        sets = [
            "state = 'resolved'",
            "resolved_at = %s",
            "resolved_by = %s",
            "disposition = %s",
            "note = %s",
        ]
        return sets, [at, actor, disposition, note]
    raise AlertError("invalid", f"unknown action {action!r}")


async def write_audit(
    conn: AsyncConnection[Any],
    *,
    facility_id: str,
    alert_id: int,
    at: datetime,
    actor: str,
    action: str,
    from_state: str | None,
    to_state: str | None,
    note: str,
) -> None:
    """Append one audit row to the facility's chain (inside the caller's transaction)."""
    await conn.execute(
        "INSERT INTO audit_heads (facility_id, last_id, last_hash) VALUES (%s, 0, %s)"
        " ON CONFLICT DO NOTHING",
        (facility_id, GENESIS_HASH),
    )
    cur = await conn.execute(
        "SELECT last_hash FROM audit_heads WHERE facility_id = %s FOR UPDATE", (facility_id,)
    )
    prev_hash = str(_present(await cur.fetchone())[0])
    digest = audit_hash(
        facility_id=facility_id,
        alert_id=alert_id,
        at=at,
        actor=actor,
        action=action,
        from_state=from_state,
        to_state=to_state,
        note=note,
        prev_hash=prev_hash,
    )
    cur = await conn.execute(
        "INSERT INTO alert_audit (facility_id, alert_id, at, actor, action, from_state, to_state,"
        " note, prev_hash, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (facility_id, alert_id, at, actor, action, from_state, to_state, note, prev_hash, digest),
    )
    audit_id = _present(await cur.fetchone())[0]
    await conn.execute(
        "UPDATE audit_heads SET last_id = %s, last_hash = %s WHERE facility_id = %s",
        (audit_id, digest, facility_id),
    )


async def verify_audit(
    conn: AsyncConnection[Any], facility_id: str | None = None
) -> list[AuditProblem]:
    """Check each facility's chain; one AuditProblem per broken facility, at its first row."""
    problems: list[AuditProblem] = []
    if facility_id is None:
        cur = await conn.execute(
            "SELECT facility_id FROM audit_heads UNION SELECT DISTINCT facility_id"
            " FROM alert_audit ORDER BY 1"
        )
        facilities = [str(row[0]) for row in await cur.fetchall()]
    else:
        facilities = [facility_id]
    for facility in facilities:
        problem = await _verify_facility(conn, facility)
        if problem is not None:
            problems.append(problem)
    return problems


async def _verify_facility(conn: AsyncConnection[Any], facility_id: str) -> AuditProblem | None:
    prev_hash = GENESIS_HASH
    last_id: int | None = None
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, facility_id, alert_id, at, actor, action, from_state, to_state, note,"
            " prev_hash, hash FROM alert_audit WHERE facility_id = %s ORDER BY id",
            (facility_id,),
        )
        async for row in cur:
            if row["prev_hash"] != prev_hash:
                return AuditProblem(
                    facility_id,
                    row["id"],
                    "does not follow the row before it (a row was removed or reordered)",
                )
            expected = audit_hash(
                facility_id=row["facility_id"],
                alert_id=row["alert_id"],
                at=row["at"],
                actor=row["actor"],
                action=row["action"],
                from_state=row["from_state"],
                to_state=row["to_state"],
                note=row["note"],
                prev_hash=row["prev_hash"],
            )
            if expected != row["hash"]:
                return AuditProblem(facility_id, row["id"], "its content was changed")
            prev_hash = row["hash"]
            last_id = row["id"]
    cur2 = await conn.execute(
        "SELECT last_id, last_hash FROM audit_heads WHERE facility_id = %s", (facility_id,)
    )
    head = await cur2.fetchone()
    if head is None:
        if last_id is not None:
            return AuditProblem(facility_id, None, "the chain's head record is missing")
        return None
    if head[1] != prev_hash or (last_id is not None and head[0] != last_id):
        return AuditProblem(
            facility_id, last_id, "rows after this one were removed (the head points past it)"
        )
    return None
