"""Alert lifecycle (SPEC §4): raise and repeat, acknowledge, attend, resolve, snooze.

The database holds the state. One open alert per (subject, kind) is a unique index, so
concurrent hub processes cannot open two; a repeat increments the count. Every change
writes, in the same transaction, an audit row chained by hash per facility, a row of
`live_changes` announced with NOTIFY, and whatever the `in_transaction` hooks add
(notifications), so none of them can exist without the others.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from hub.alerts.audit import GENESIS_HASH, audit_entry, write_audit
from hub.errors import AlertError, StorageError
from hub.models import (
    DISPOSITIONS,
    SELF_RESOLVED,
    Alert,
    AlertAction,
    AlertChange,
    AlertDecision,
    AlertState,
)
from hub.rules import NEVER_SHELVED
from hub.storage import alerts as alert_rows
from hub.storage import audit as audit_rows
from hub.storage.live import append_change, live_channel
from hub.storage.registry import zone_exists
from hub.wire import change_json

logger = logging.getLogger(__name__)

# Called inside the change's transaction (notifications are queued there).
TransactionHook = Callable[[AsyncConnection[Any], AlertChange], Awaitable[object]]
# Called after commit (device ack, local bookkeeping); must not block.
ChangeListener = Callable[[AlertChange], None]

NOTE_MAX = 2000
ACTOR_MAX = 128
# The longest a zone may be snoozed: a drill or a repair, not a way to silence a zone.
SNOOZE_MAX = timedelta(days=7)
# The column each escalation step stamps, once.
Escalation = Literal["renotify", "overdue"]
_ESCALATION_COLUMNS: dict[Escalation, str] = {"renotify": "renotified_at", "overdue": "overdue_at"}


@dataclass(frozen=True, slots=True)
class _Step:
    """One action on an alert: what, by whom, with which note (and disposition)."""

    action: AlertAction
    actor: str
    note: str
    disposition: str | None = None


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
        async with self._transaction(f"cannot store the {decision.kind} alert") as conn:
            raised = await self._raise(conn, decision)
            if raised is None:
                return None
            change, locked_hash = raised
            await self._record(conn, change, locked_hash=locked_hash)
        self._announce(change)
        return change

    async def _raise(
        self, conn: AsyncConnection[Any], d: AlertDecision
    ) -> tuple[AlertChange, str] | None:
        """The change, and the facility's audit head (locked) it follows; None if redelivered."""
        # A clear the device sent after this message may have been stored first; a copy
        # of this message may have been claimed first (then this one is redelivered).
        checks = await alert_rows.raise_checks(conn, d, may_shelve=d.kind not in NEVER_SHELVED)
        if not checks.claimed:
            return None
        upsert = await alert_rows.send_upsert(
            conn, d, shelved=checks.shelved, cleared_at=checks.cleared_at
        )
        # Sent behind the upsert, so the alert's row is locked before the head, as every
        # change locks them, and both travel in one round trip.
        head = await audit_rows.send_lock_head(conn, d.facility_id, GENESIS_HASH)
        alert, inserted = await alert_rows.upserted(upsert)
        locked_hash = await audit_rows.head_hash(head)
        if inserted:
            return AlertChange(alert, "raise", None, "system", d.at), locked_hash
        why = f"count {alert.count}"
        return AlertChange(alert, "repeat", alert.state, "system", d.at, why), locked_hash

    # -- lifecycle -----------------------------------------------------------------------

    async def acknowledge(self, alert_id: int, actor: str, note: str = "") -> AlertChange:
        """Take the alert over: `active` -> `acknowledged`, by `actor`."""
        return await self._transition(alert_id, _Step("acknowledge", actor, note))

    async def attend(self, alert_id: int, actor: str, note: str = "") -> AlertChange:
        """Someone is on site: `active`/`acknowledged` -> `attended`."""
        return await self._transition(alert_id, _Step("attend", actor, note))

    async def resolve(
        self, alert_id: int, actor: str, disposition: str, note: str = ""
    ) -> AlertChange:
        """Close the alert with a disposition: real, false_alarm, test or other."""
        if disposition not in DISPOSITIONS:
            raise AlertError(
                "invalid",
                f"disposition must be one of {', '.join(DISPOSITIONS)}, not {disposition!r}",
            )
        return await self._transition(alert_id, _Step("resolve", actor, note, disposition))

    async def comment(self, alert_id: int, actor: str, note: str) -> AlertChange:
        """Add a note to the alert's trail; its state does not change."""
        if not note.strip():
            raise AlertError("invalid", "a comment needs some text")
        return await self._transition(alert_id, _Step("comment", actor, note))

    async def _transition(
        self, alert_id: int, step: _Step, at: datetime | None = None
    ) -> AlertChange:
        """Take `step` on the alert, at `at` or else the database's time when it is locked."""
        step = replace(step, actor=_checked_actor(step.actor), note=_checked_note(step.note))
        async with self._transaction(f"cannot {step.action} alert {alert_id}") as conn:
            locked = await alert_rows.lock_alert(conn, alert_id)
            if locked is None:
                raise AlertError("not_found", f"there is no alert {alert_id}")
            alert, db_now = locked
            change = await self._apply(conn, alert, step, at or db_now)
            await self._record(conn, change)
        self._announce(change)
        return change

    async def _apply(
        self, conn: AsyncConnection[Any], alert: Alert, step: _Step, at: datetime
    ) -> AlertChange:
        """Make one step's change to a locked alert (or AlertError if its state forbids)."""
        changes = _transition_changes(alert, step, at)
        alert_after = await alert_rows.update_alert(conn, alert.id, changes) if changes else alert
        return AlertChange(alert_after, step.action, alert.state, step.actor, at, step.note)

    async def resolve_condition_ended(self, alert_id: int, at: datetime, why: str) -> AlertChange:
        """Resolve a non-latched alert whose condition ended (by the system, `self_resolved`)."""
        return await self._transition(alert_id, _Step("resolve", "system", why, SELF_RESOLVED), at)

    async def clear(
        self,
        kind: str,
        device_id: str,
        at: datetime,
        *,
        order: tuple[datetime, int] | None = None,
    ) -> AlertChange | None:
        """The device says the condition ended: latched alerts stay open, others resolve.

        `order`, the clearing message's (ts, seq): a clear ends only what the device raised
        before it. One that arrives first is kept, and the event it clears opens cleared.
        """
        async with self._transaction(f"cannot clear the {kind} alert of {device_id}") as conn:
            if order is not None:
                await alert_rows.lock_device_kind(conn, device_id, kind)
                await alert_rows.record_clear(conn, device_id, kind, order, at)
            alert = await alert_rows.lock_open_alert(conn, device_id, kind)
            if alert is None:
                return None
            if order is not None and await alert_rows.raised_after(conn, alert.id, order):
                # The device raised it again after this clear: it is not cleared.
                return None
            if alert.latched:
                step = _Step("clear", "device", "cleared at the device")
            else:
                step = _Step("resolve", "system", "condition ended", SELF_RESOLVED)
            change = await self._apply(conn, alert, step, at)
            await self._record(conn, change)
        self._announce(change)
        return change

    async def escalate(self, alert_id: int, step: Escalation, at: datetime) -> AlertChange | None:
        """Take an escalation step (renotify or overdue) once; None when no longer due."""
        column = _ESCALATION_COLUMNS[step]
        async with self._transaction(f"cannot escalate alert {alert_id}") as conn:
            alert = await alert_rows.mark_escalated(conn, alert_id, column, at)
            if alert is None:
                return None
            why = "not acknowledged in time"
            change = AlertChange(alert, step, alert.state, "system", at, why)
            await self._record(conn, change)
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
        if until - now > SNOOZE_MAX:
            raise AlertError("invalid", "a snooze may last at most 7 days")
        changes: list[AlertChange] = []
        async with self._transaction(f"cannot snooze zone {zone_id}") as conn:
            if not await zone_exists(conn, facility_id, zone_id):
                raise AlertError("not_found", f"facility {facility_id} has no zone {zone_id}")
            shelved = await alert_rows.shelve_zone(
                conn,
                facility_id,
                zone_id,
                starts_at=now,
                until=until,
                reason=reason,
                actor=actor,
                never_shelved=NEVER_SHELVED,
            )
            note = f"zone {zone_id} snoozed until {until.isoformat()}: {reason}"
            for alert in shelved:
                change = AlertChange(alert, "snooze", alert.state, actor, now, note)
                await self._record(conn, change)
                changes.append(change)
        for change in changes:
            self._announce(change)
        return changes

    # -- reading -------------------------------------------------------------------------

    async def get(self, alert_id: int) -> Alert:
        """One alert, or AlertError not_found."""
        async with self._pool.connection() as conn:
            alert = await alert_rows.get_alert(conn, alert_id)
        if alert is None:
            raise AlertError("not_found", f"there is no alert {alert_id}")
        return alert

    # -- the trail -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _transaction(self, failure: str) -> AsyncIterator[AsyncConnection[Any]]:
        """One change's transaction; a database error in it is StorageError(`failure`: why)."""
        try:
            # In pipeline mode: a statement whose result is not read (the audit row, the
            # live change, the commit's companions) travels with the next one that is, so
            # a raise costs four round trips instead of some twenty. On the hub's event
            # loop each round trip also waits for a turn behind telemetry.
            async with self._pool.connection() as conn, conn.pipeline(), conn.transaction():
                yield conn
        except psycopg.Error as exc:
            raise StorageError(f"{failure}: {exc}") from exc

    async def _record(
        self, conn: AsyncConnection[Any], change: AlertChange, *, locked_hash: str | None = None
    ) -> None:
        alert = change.alert
        await write_audit(conn, audit_entry(change), locked_hash=locked_hash)
        await append_change(
            conn,
            self._channel,
            facility_id=alert.facility_id,
            alert_id=alert.id,
            change=change_json(change),
        )
        for hook in self._in_transaction:
            await hook(conn, change)

    def _announce(self, change: AlertChange) -> None:
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:
                logger.exception("alert listener failed", extra={"alert_id": change.alert.id})


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


def _transition_changes(alert: Alert, step: _Step, at: datetime) -> dict[str, object]:
    """The columns a step taken at `at` changes, or AlertError when the state does not allow it."""
    action, actor = step.action, step.actor
    state: AlertState = alert.state
    if action == "comment":
        return {}
    if state == "resolved":
        raise AlertError("conflict", f"alert {alert.id} is already resolved")
    if action == "clear":
        return {"cleared_at": at}
    if action == "acknowledge":
        if state != "active":
            raise AlertError(
                "conflict",
                f"alert {alert.id} was already taken over by {alert.acknowledged_by} ({state})",
            )
        return {"state": "acknowledged", "acknowledged_at": at, "acknowledged_by": actor}
    if action == "attend":
        if state == "attended":
            raise AlertError(
                "conflict", f"alert {alert.id} is already attended by {alert.attended_by}"
            )
        changes: dict[str, object] = {"state": "attended", "attended_at": at, "attended_by": actor}
        if alert.acknowledged_at is None:
            # Attending on site takes the alert over too.
            changes |= {"acknowledged_at": at, "acknowledged_by": actor}
        return changes
    if action == "resolve":
        return {
            "state": "resolved",
            "resolved_at": at,
            "resolved_by": actor,
            "disposition": step.disposition,
            "note": step.note,
        }
    raise AlertError("invalid", f"unknown action {action!r}")
