"""The demo's month of history: built by the simulators, written once with COPY.

On the first start of `carehub demo` each of its districts (鹿城区, 瓯海区) gets 30 days
of readings, events and alerts, written together in one transaction, each alert with its
audit trail chained onto the facility's chain exactly as the hub chains a live change, so
`carehub audit verify` holds and the KPIs, the feed's history and the monthly report have
a month of figures the moment the screen opens. The database notes each district in
`seeded_history`; a later start finds them and writes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from hub.alerts.audit import GENESIS_HASH, chained
from hub.errors import HubError
from hub.models import AuditStep
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
    """What the start found or did: each district's history, written now or kept from before."""

    written_now: tuple[SeededHistory, ...]
    kept: tuple[SeededHistory, ...] = ()

    @property
    def written(self) -> bool:
        """Whether this start wrote any district's month."""
        return bool(self.written_now)

    @property
    def history(self) -> SeededHistory:
        """Every district's history as one: its period, the rows of each kind, its seconds."""
        return combined((*self.written_now, *self.kept))

    def summary(self) -> str:
        """One line for the demo's banner."""
        if self.written_now:
            h = combined(self.written_now)
            line = f"{_days(h)} days written now, in {h.seconds:.1f} s ({_figures(h)})"
            if self.kept:
                names = "、".join(one.district for one in self.kept)
                line += f"; {names} kept from an earlier start"
            return line
        h = combined(self.kept)
        since = h.period_start.date().isoformat()
        return (
            f"{_days(h)} days since {since}, written on the first start in {h.seconds:.1f} s"
            f" ({_figures(h)}); nothing written now"
        )


def combined(histories: Sequence[SeededHistory]) -> SeededHistory:
    """Several districts' histories as one: summed rows, the whole period, the longest write
    (districts written together share one write and its seconds)."""
    if not histories:
        raise ValueError("no history to combine")
    written_at = [h.written_at for h in histories]
    return SeededHistory(
        district="、".join(h.district for h in histories),
        period_start=min(h.period_start for h in histories),
        period_end=max(h.period_end for h in histories),
        readings=sum(h.readings for h in histories),
        events=sum(h.events for h in histories),
        alerts=sum(h.alerts for h in histories),
        audit_rows=sum(h.audit_rows for h in histories),
        seconds=max(h.seconds for h in histories),
        written_at=None if None in written_at else min(w for w in written_at if w is not None),
    )


def _days(h: SeededHistory) -> int:
    return round((h.period_end - h.period_start).total_seconds() / 86400)


def _figures(h: SeededHistory) -> str:
    return (
        f"{h.readings:,} readings, {h.events:,} events, {h.alerts:,} alerts,"
        f" {h.audit_rows:,} audit rows"
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
            AuditStep(step.at, step.actor, step.action, step.from_state, step.to_state, step.note),
        )
        for alert_id, alert in zip(ids, alerts, strict=True)
        for step in alert.steps
    ]
    entries.sort(key=lambda entry: entry.step.at)
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


def _batches(
    parts: Sequence[District], *, end: datetime, days: float, seed: int
) -> Iterator[tuple[str, History]]:
    """Each district's month, a few facilities at a time, labelled with its district.

    Full batches come first and the districts' remainders last: each batch is built while
    the one before it is written, and a small batch in the middle would leave the next
    one's build with little to hide behind (12 + 8 homes: 10, 8, then 2).
    """
    from simulators.history import BATCH_FACILITIES, history_batches

    chunks = [
        (part, part.facilities[first : first + BATCH_FACILITIES])
        for part in parts
        for first in range(0, len(part.facilities), BATCH_FACILITIES)
    ]
    chunks.sort(key=lambda chunk: -len(chunk[1]))  # stable: districts keep their order
    for part, facilities in chunks:
        batch = part.with_only(facilities)
        for history in history_batches(batch, end=end, days=days, seed=seed):
            yield part.name, history


async def _write_months(
    conn: Any, parts: Sequence[District], batches: Iterator[tuple[str, History]], started: float
) -> tuple[SeededHistory, ...]:
    """Build each batch in a thread while the one before it is written; what was written,
    one row of `seeded_history` per district."""
    totals = {part.name: [0, 0, 0, 0] for part in parts}
    period: tuple[datetime, datetime] | None = None
    building = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
    try:
        while (labelled := await building) is not None:
            building = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
            name, batch = labelled
            period = period or (batch.start, batch.end)
            for index, count in enumerate(await _write(conn, batch)):
                totals[name][index] += count
    finally:
        if not building.done():
            await asyncio.gather(building, return_exceptions=True)
    if period is None:
        names = "、".join(part.name for part in parts)
        raise HubError(f"district {names} has no facilities to write history for")
    await history_rows.settle_devices(conn, [d.id for part in parts for d in part.devices], *period)
    seconds = time.perf_counter() - started
    written = tuple(
        SeededHistory(
            district=part.name,
            period_start=period[0],
            period_end=period[1],
            readings=totals[part.name][0],
            events=totals[part.name][1],
            alerts=totals[part.name][2],
            audit_rows=totals[part.name][3],
            seconds=seconds,
        )
        for part in parts
    )
    for seeded in written:
        await history_rows.record_seeded(conn, seeded)
    return written


async def _seeded(conn: Any, parts: Sequence[District]) -> dict[str, SeededHistory]:
    """The districts of `parts` that have their history already."""
    found = {part.name: await history_rows.seeded(conn, part.name) for part in parts}
    return {name: seeded for name, seeded in found.items() if seeded is not None}


async def ensure_history(
    settings: Settings,
    district: District,
    *,
    end: datetime | None = None,
    days: float = HISTORY_DAYS,
    seed: int = 7,
) -> HistoryOutcome:
    """Write the last `days` of each of the district's administrative districts (鹿城区,
    瓯海区) that no earlier start wrote, in one transaction; which were written and kept."""
    from simulators import SHANGHAI

    started = time.perf_counter()
    parts = [district.part(name) for name in district.districts] or [district]
    async with await connect(settings) as conn:
        kept = await _seeded(conn, parts)
        if len(kept) == len(parts):
            return HistoryOutcome((), tuple(kept[part.name] for part in parts))
        async with conn.transaction():
            await history_rows.lock_seeding(conn)
            # Another demo on this database may have got there first.
            kept = await _seeded(conn, parts)
            missing = [part for part in parts if part.name not in kept]
            if not missing:
                return HistoryOutcome((), tuple(kept[part.name] for part in parts))
            # Building is CPU work (seconds for a district): off the event loop, batch by batch.
            when = end or datetime.now(SHANGHAI)
            batches = _batches(missing, end=when, days=days, seed=seed)
            written = await _write_months(conn, missing, batches, started)
        period = combined(written)
        await history_rows.refresh_occupancy(conn, period.period_start, period.period_end)
    return HistoryOutcome(written, tuple(kept[part.name] for part in parts if part.name in kept))
