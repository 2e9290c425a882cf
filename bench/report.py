"""`carehub bench report`: how long the monthly supervision report takes for a big district.

Seeds N facilities with a month of history in a schema of its own (alerts through their
whole lifecycle with a valid audit chain, people counted every 15 minutes, test calls,
device states), then builds the district's report as PDF and as XLSX, as
`carehub report monthly` does, and prints each build time. The target is 60 s for 500
facilities. `seed_month` is also what the report's tests seed.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.types.json import Jsonb

from bench.dashboard import COUNTER, DEVICES, seed_registry
from bench.harness import BenchRun, copy_registry
from hub.alerts.audit import GENESIS_HASH, audit_hash
from hub.models import AuditStep
from hub.reports.files import render
from hub.reports.monthly import hub_report
from hub.settings import Settings
from hub.storage.audit import AuditEntry

TARGET_S = 60.0
DISTRICT = "基准区"
READING_EVERY = timedelta(minutes=15)
# kind -> (weight, priority, device prefix or None for the class's own alert)
_KINDS: dict[str, tuple[int, str, str | None]] = {
    "sos": (40, "high", "eb"),
    "fall": (14, "high", "fs"),
    "dwell": (4, "high", "fs"),
    "low_battery": (10, "low", "eb"),
    "device_offline": (16, "medium", "oc"),
    "over_capacity": (6, "medium", None),
    "staff_ratio": (10, "medium", None),
}
_LATCHED_DISPOSITIONS = ("real", "false_alarm", "test", "other")
_LATCHED_WEIGHTS = (55, 30, 10, 5)
_CLASS_ZONE = COUNTER[2]
# The columns every readings and events row starts with.
_MESSAGE_KEY = ("ts", "device_id", "seq", "facility_id", "zone_id")


@dataclass(frozen=True, slots=True)
class _Seeded:
    alerts: int
    audit_rows: int
    readings: int


def previous_month(now: datetime, zone: str) -> tuple[str, datetime, datetime]:
    """The calendar month before `now` in `zone`: (YYYY-MM, its start, its end)."""
    local = now.astimezone(ZoneInfo(zone))
    end = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    start = (end - timedelta(days=1)).replace(day=1)
    return f"{start:%Y-%m}", start, end


async def seed_month(
    conn: psycopg.AsyncConnection[Any],
    facility_ids: Sequence[str],
    start: datetime,
    end: datetime,
    now: datetime,
    *,
    seed: int = 1,
) -> _Seeded:
    """A month of history at the facilities (registered as `seed_registry` does)."""
    rng = random.Random(seed)
    await conn.execute(
        "UPDATE devices SET registered_at = %s WHERE facility_id = ANY(%s)",
        (start - timedelta(days=90), list(facility_ids)),
    )
    alerts = [row for fid in facility_ids for row in _alerts(rng, fid, start, end)]
    columns = (
        "facility_id",
        "zone_id",
        "device_id",
        "subject",
        "kind",
        "priority",
        "latched",
        "state",
        "raised_at",
        "last_raised_at",
        "acknowledged_at",
        "acknowledged_by",
        "attended_at",
        "attended_by",
        "resolved_at",
        "resolved_by",
        "disposition",
        "overdue_at",
        "renotified_at",
    )
    readings = list(_readings(rng, facility_ids, start, end))
    await copy_registry(
        conn,
        [
            ("alerts", columns, alerts),
            ("readings", (*_MESSAGE_KEY, "received_at", "count", "staff", "payload"), readings),
            (
                "events",
                (*_MESSAGE_KEY, "event", "received_at", "payload"),
                _test_calls(rng, facility_ids, end),
            ),
            (
                "device_state",
                ("device_id", "last_seen", "online", "count"),
                _states(rng, facility_ids, now),
            ),
        ],
    )
    audit = await _audit(conn, facility_ids)
    return _Seeded(len(alerts), audit, len(readings))


def _alerts(
    rng: random.Random, facility_id: str, start: datetime, end: datetime
) -> Iterator[tuple[Any, ...]]:
    kinds = list(_KINDS)
    weights = [_KINDS[kind][0] for kind in kinds]
    staff = f"staff-{facility_id}"
    day = start
    while day < end:
        for _ in range(rng.randint(2, 7)):
            kind = rng.choices(kinds, weights)[0]
            _, priority, prefix = _KINDS[kind]
            raised = day + timedelta(seconds=rng.randrange(86_000))
            if raised >= end:
                continue
            if prefix is None:
                device, zone, subject = None, _CLASS_ZONE, f"zone:{facility_id}/{_CLASS_ZONE}"
            else:
                device = f"{facility_id}-{prefix}"
                zone = next(z for p, _, z in (*DEVICES, COUNTER) if p == prefix)
                subject = device
            where = (facility_id, zone, device, subject)
            yield _lifecycle(rng, where, kind, priority, raised=raised, staff=staff)
        day += timedelta(days=1)


def _lifecycle(
    rng: random.Random,
    where: tuple[str, str, str | None, str],
    kind: str,
    priority: str,
    *,
    raised: datetime,
    staff: str,
) -> tuple[Any, ...]:
    """One resolved alert's row: most answered within a minute, some late, a few never."""
    facility_id, zone, device, subject = where

    def at(seconds: float) -> datetime:
        return raised + timedelta(seconds=int(seconds))

    latched = priority == "high"
    # Up to last_raised_at, every row alike: raised once, now resolved.
    head = (facility_id, zone, device, subject, kind, priority, latched, "resolved", raised, raised)
    if not latched:
        resolved = at(rng.randint(60, 7200))
        if rng.random() < 0.8:  # the condition ended: the system closes it
            return (*head, None, None, None, None, resolved, "system", "self_resolved", None, None)
        disposition = rng.choice(("false_alarm", "false_alarm", "real", "other"))
        return (*head, at(30), staff, None, None, resolved, staff, disposition, None, None)
    draw = rng.random()
    ack_s: int | None
    if draw < 0.80:
        ack_s = rng.randint(5, 59)
    elif draw < 0.93:
        ack_s = rng.randint(60, 179)
    elif draw < 0.98:
        ack_s = rng.randint(180, 600)
    else:
        ack_s = None
    attend_s = (ack_s or 300) + rng.randint(30, 400)
    resolved = at(attend_s + rng.randint(60, 1800))
    disposition = rng.choices(_LATCHED_DISPOSITIONS, _LATCHED_WEIGHTS)[0]
    overdue = at(180) if ack_s is None or ack_s > 180 else None
    renotified = at(60) if ack_s is None or ack_s > 60 else None
    return (
        *head,
        None if ack_s is None else at(ack_s),
        None if ack_s is None else staff,
        at(attend_s),
        staff,
        resolved,
        staff,
        disposition,
        overdue,
        renotified,
    )


def _readings(
    rng: random.Random, facility_ids: Sequence[str], start: datetime, end: datetime
) -> Iterator[tuple[Any, ...]]:
    """Each facility's counter every 15 minutes: a daily curve peaking in the late morning."""
    for facility_id in facility_ids:
        device = f"{facility_id}-{COUNTER[0]}"
        at, seq = start, 0
        size = rng.randint(8, 14)
        while at < end:
            hour = at.astimezone(start.tzinfo).hour + at.minute / 60
            curve = max(0.0, math.sin((hour - 7) / 11 * math.pi)) if 7 <= hour <= 18 else 0.0
            count = max(0, round(size * curve + rng.gauss(0, 1)))
            seq += 1
            staff = max(1, count // 5) if count else 0
            yield (at, device, seq, facility_id, _CLASS_ZONE, at, count, staff, Jsonb({}))
            at += READING_EVERY


def _test_calls(
    rng: random.Random, facility_ids: Sequence[str], end: datetime
) -> Iterator[tuple[Any, ...]]:
    """Most buttons were tested in the last 30 days; some were not."""
    for facility_id in facility_ids:
        if rng.random() < 0.85:
            at = end - timedelta(days=rng.randint(1, 25))
            device = f"{facility_id}-eb"
            yield (
                at,
                device,
                1,
                facility_id,
                "room-1",
                "pressed",
                at,
                Jsonb({"event": "pressed", "button": "red", "test": True}),
            )


def _states(
    rng: random.Random, facility_ids: Sequence[str], now: datetime
) -> Iterator[tuple[Any, ...]]:
    for facility_id in facility_ids:
        for prefix, _, _ in (*DEVICES, COUNTER):
            quiet = rng.random() < 0.08
            seen = now - timedelta(seconds=rng.randint(3600, 7200) if quiet else rng.randint(0, 60))
            count = rng.randint(0, 12) if prefix == COUNTER[0] else None
            yield (f"{facility_id}-{prefix}", seen, True, count)


async def _audit(conn: psycopg.AsyncConnection[Any], facility_ids: Sequence[str]) -> int:
    """The audit chain of every seeded alert, hashed as the hub hashes it, in time order."""
    cur = await conn.execute(
        "SELECT facility_id, id, raised_at, acknowledged_at, acknowledged_by, attended_at,"
        " attended_by, resolved_at, resolved_by, overdue_at, disposition FROM alerts"
        " WHERE facility_id = ANY(%s) ORDER BY facility_id, raised_at, id",
        (list(facility_ids),),
    )
    entries: dict[str, list[AuditEntry]] = {}
    for (
        fid,
        aid,
        raised,
        ack,
        ack_by,
        attend,
        attend_by,
        resolved,
        resolved_by,
        overdue,
        disp,
    ) in await cur.fetchall():
        steps = [AuditEntry(fid, aid, AuditStep(raised, "system", "raise", None, "active", ""))]
        state = "active"
        for when, actor, action, to in (
            (overdue, "system", "overdue", None),
            (ack, ack_by, "acknowledge", "acknowledged"),
            (attend, attend_by, "attend", "attended"),
            (resolved, resolved_by, "resolve", "resolved"),
        ):
            if when is None:
                continue
            after = to or state
            note = disp if to == "resolved" else ""
            step = AuditStep(when, actor, action, state, after, note)
            steps.append(AuditEntry(fid, aid, step))
            state = after
        entries.setdefault(fid, []).extend(steps)
    # Appended to each facility's chain as the hub appends: after its head, which stays
    # locked until the rows are in, so a hub running meanwhile (the browser tests) waits.
    ids = list(facility_ids)
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO audit_heads (facility_id, last_id, last_hash)"
            " SELECT unnest(%s::text[]), 0, %s ON CONFLICT DO NOTHING",
            (ids, GENESIS_HASH),
        )
        cur = await conn.execute(
            "SELECT facility_id, last_hash FROM audit_heads WHERE facility_id = ANY(%s)"
            " ORDER BY facility_id FOR UPDATE",
            (ids,),
        )
        heads = dict(await cur.fetchall())
        rows = []
        for fid, chain in entries.items():
            prev = heads[fid]
            for entry in sorted(chain, key=lambda e: (e.step.at, e.alert_id)):
                digest = audit_hash(entry, prev)
                rows.append((*entry.as_row(), prev, digest))
                prev = digest
        columns = (
            "facility_id", "alert_id", "at", "actor", "action", "from_state", "to_state",
            "note", "prev_hash", "hash",
        )  # fmt: skip
        await copy_registry(conn, [("alert_audit", columns, rows)])
        # COPY keeps the rows' order, so each facility's last row has its highest id.
        await conn.execute(
            "UPDATE audit_heads h SET last_id = m.id, last_hash = m.hash FROM"
            " (SELECT DISTINCT ON (facility_id) facility_id, id, hash FROM alert_audit"
            "  WHERE facility_id = ANY(%s) ORDER BY facility_id, id DESC) m"
            " WHERE h.facility_id = m.facility_id",
            (ids,),
        )
    return len(rows)


def run_report_bench(settings: Settings, facilities: int = 500, keep: bool = False) -> int:
    """Seed N facilities with a month and time the district's report in both formats."""
    return asyncio.run(_bench(settings, facilities, keep=keep))


async def _bench(settings: Settings, facilities: int, *, keep: bool) -> int:
    run = BenchRun.new(settings)
    now = datetime.now(UTC)
    month, start, end = previous_month(now, settings.report_timezone)
    run.announce(f"carehub bench report: {facilities} facilities, month {month}")
    async with run.database(keep=keep) as conn:
        began = time.perf_counter()
        await seed_registry(conn, facilities, DISTRICT)
        cur = await conn.execute("SELECT id FROM facilities ORDER BY id")
        ids = [row[0] for row in await cur.fetchall()]
        seeded = await seed_month(conn, ids, start, end, now)
        await conn.execute("ANALYZE")
        print(
            f"  seeded {seeded.alerts:,} alerts, {seeded.audit_rows:,} audit rows, "
            f"{seeded.readings:,} readings in {time.perf_counter() - began:.1f} s",
            flush=True,
        )
        figures = []
        for fmt in ("pdf", "xlsx"):
            began = time.perf_counter()
            report = await hub_report(
                conn, settings, facility=None, district=DISTRICT, month=month, now=now
            )
            read = time.perf_counter()
            content = await asyncio.to_thread(render, report, fmt, "zh")
            total = time.perf_counter() - began
            figures.append(total)
            print(
                f"  {fmt}: {total:.2f} s (figures and audit {read - began:.2f} s, "
                f"writing {total - (read - began):.2f} s), {len(content):,} bytes",
                flush=True,
            )
    worst = max(figures)
    verdict = "PASS" if worst < TARGET_S else "FAIL"
    print(
        f"monthly report of {facilities} facilities: {worst:.2f} s worst of pdf and xlsx "
        f"(target < {TARGET_S:.0f} s): {verdict}",
        flush=True,
    )
    return 0
