"""The demo's month of history: built by the simulators, written once with COPY.

On the first start of `carehub demo` the district gets 30 days of readings, events and
alerts, each alert with its audit trail chained onto the facility's chain exactly as the
hub chains a live change, so `carehub audit verify` holds and the KPIs, the feed's
history and the monthly report have a month of figures the moment the screen opens. The
database notes it in `seeded_history`; a later start finds that and writes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from hub.alerts.audit import GENESIS_HASH, chained
from hub.errors import HubError
from hub.settings import Settings
from hub.storage import audit as audit_rows
from hub.storage import history as history_rows
from hub.storage.audit import AuditEntry
from hub.storage.history import SeededHistory
from hub.storage.pool import connect

if TYPE_CHECKING:
    from simulators import District
    from simulators.history import Alert, History

HISTORY_DAYS = 30


@dataclass(frozen=True, slots=True)
class HistoryOutcome:
    """What the start found or did: the district's history, and whether this start wrote it."""

    written: bool
    history: SeededHistory

    def summary(self) -> str:
        """One line for the demo's banner."""
        h = self.history
        figures = (
            f"{h.readings:,} readings, {h.events:,} events, {h.alerts:,} alerts,"
            f" {h.audit_rows:,} audit rows"
        )
        days = round((h.period_end - h.period_start).total_seconds() / 86400)
        if self.written:
            return f"{days} days written now, in {h.seconds:.1f} s ({figures})"
        since = h.period_start.date().isoformat()
        return (
            f"{days} days since {since}, written on the first start in {h.seconds:.1f} s"
            f" ({figures}); nothing written now"
        )


def _alert_row(alert_id: int, alert: Alert) -> tuple[Any, ...]:
    """The alerts row of one history alert, its times and actors read from its steps."""
    ack, attend, resolve = (alert.first(a) for a in ("acknowledge", "attend", "resolve"))
    renotify, overdue = alert.first("renotify"), alert.first("overdue")
    if ack is None and attend is not None:
        ack = attend  # attending an alert nobody took over takes it over (lifecycle.py)
    resolved = alert.resolved
    return (
        alert_id,
        alert.facility_id,
        alert.zone_id,
        alert.device_id,
        alert.subject,
        alert.kind,
        alert.priority,
        alert.latched,
        "resolved",
        alert.count,
        alert.seq,
        alert.seq_ts,
        alert.raised_at,
        alert.last_raised_at or alert.raised_at,
        ack.at if ack else None,
        ack.actor if ack else None,
        attend.at if attend else None,
        attend.actor if attend else None,
        resolved.at,
        resolved.actor,
        alert.disposition,
        resolve.note if resolve else "",
        alert.cleared_at,
        renotify.at if renotify else None,
        overdue.at if overdue else None,
        alert.detail,
    )


def _audit_entries(alerts: list[Alert], ids: list[int]) -> list[AuditEntry]:
    """Every step of every alert as its audit entry, in the order they happened."""
    entries = [
        AuditEntry(
            alert.facility_id,
            alert_id,
            step.at,
            step.actor,
            step.action,
            step.from_state,
            step.to_state,
            step.note,
        )
        for alert_id, alert in zip(ids, alerts, strict=True)
        for step in alert.steps
    ]
    entries.sort(key=lambda entry: entry.at)
    return entries


async def _write(conn: Any, history: History) -> tuple[int, int, int, int]:
    """Write one batch inside the caller's transaction: (readings, events, alerts, audit rows)."""
    alert_ids = await history_rows.reserve_ids(conn, "alerts", len(history.alerts))
    entries = _audit_entries(history.alerts, alert_ids)
    audit_ids = await history_rows.reserve_ids(conn, "alert_audit", len(entries))
    # Each facility's chain goes on from its head: a database whose hub has already run
    # keeps its rows, and the month follows them.
    by_facility: dict[str, list[tuple[int, AuditEntry]]] = defaultdict(list)
    for audit_id, entry in zip(audit_ids, entries, strict=True):
        by_facility[entry.facility_id].append((audit_id, entry))
    audit: list[tuple[Any, ...]] = []
    heads: dict[str, tuple[int, str]] = {}
    for facility_id, rows in sorted(by_facility.items()):
        prev = await audit_rows.lock_head(conn, facility_id, GENESIS_HASH)
        links = chained((entry for _, entry in rows), prev)
        for (audit_id, _), (entry, prev_hash, digest) in zip(rows, links, strict=True):
            audit.append((audit_id, *entry.as_row(), prev_hash, digest))
            heads[facility_id] = (audit_id, digest)
    audit.sort(key=lambda row: row[0])
    readings = await history_rows.copy_readings(conn, history.readings)
    events = await history_rows.copy_events(conn, history.events)
    alerts = await history_rows.copy_alerts(
        conn, (_alert_row(i, a) for i, a in zip(alert_ids, history.alerts, strict=True))
    )
    written = await history_rows.copy_audit(conn, audit)
    await history_rows.move_heads(conn, heads)
    return readings, events, alerts, written


async def _write_month(
    conn: Any, district: District, batches: Iterator[History], started: float
) -> SeededHistory:
    """Build each batch in a thread while the one before it is written; what was written."""
    totals = [0, 0, 0, 0]
    period: tuple[datetime, datetime] | None = None
    building = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
    try:
        while (batch := await building) is not None:
            building = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
            period = period or (batch.start, batch.end)
            for index, count in enumerate(await _write(conn, batch)):
                totals[index] += count
    finally:
        if not building.done():
            await asyncio.gather(building, return_exceptions=True)
    if period is None:
        raise HubError(f"district {district.name} has no facilities to write history for")
    await history_rows.settle_devices(conn, [d.id for d in district.devices], *period)
    seeded = SeededHistory(
        district=district.name,
        period_start=period[0],
        period_end=period[1],
        readings=totals[0],
        events=totals[1],
        alerts=totals[2],
        audit_rows=totals[3],
        seconds=time.perf_counter() - started,
    )
    await history_rows.record_seeded(conn, seeded)
    return seeded


async def ensure_history(
    settings: Settings,
    district: District,
    *,
    end: datetime | None = None,
    days: float = HISTORY_DAYS,
    seed: int = 7,
) -> HistoryOutcome:
    """Write the district's last `days` unless an earlier start did; which one happened."""
    from simulators import SHANGHAI
    from simulators.history import history_batches

    started = time.perf_counter()
    async with await connect(settings) as conn:
        existing = await history_rows.seeded(conn, district.name)
        if existing is not None:
            return HistoryOutcome(False, existing)
        # Building is CPU work (seconds for a district): off the event loop, batch by batch.
        batches = history_batches(district, end=end or datetime.now(SHANGHAI), days=days, seed=seed)
        async with conn.transaction():
            await history_rows.lock_seeding(conn)
            existing = await history_rows.seeded(conn, district.name)
            if existing is not None:  # another demo on this database got there first
                return HistoryOutcome(False, existing)
            seeded = await _write_month(conn, district, batches, started)
        await history_rows.refresh_occupancy(conn, seeded.period_start, seeded.period_end)
    return HistoryOutcome(True, seeded)
