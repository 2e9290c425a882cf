"""KPIs for a facility or a district over a period (SPEC §4), computed in the database."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import psycopg
from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from hub.errors import QueryError, StorageError

ScopeKind = Literal["facility", "district"]

# Care-line practice (SPEC §4): a high alert is answered within 60 s, and within 180 s it
# is an overdue call on the regulator's screen.
ACK_FAST_S = 60
ACK_SLOW_S = 180
# A device is online while heard within this many heartbeats (SPEC §4, device_offline).
HEARTBEATS_ONLINE = 2


def fresh_sql(now: str) -> str:
    """SQL: device `d`'s state `s` was heard within HEARTBEATS_ONLINE heartbeats of `now`.

    `now` is an SQL expression (`now()`, or a parameter); a counter's count is current,
    and a device may be online, only while this holds.
    """
    return f"s.last_seen >= {now} - make_interval(secs => {HEARTBEATS_ONLINE} * d.heartbeat_s)"


def online_sql(now: str) -> str:
    """SQL: device `d` is online at `now`, as the device_offline rule sees it.

    Heard recently and its last will did not say offline; never heard is offline (false,
    not NULL). The KPIs, the facility status, the REST API and the live feed all use it.
    """
    return f"coalesce(s.online IS NOT FALSE AND {fresh_sql(now)}, false)"


# Care lines ask residents to test their alarm monthly.
BUTTON_TEST_WINDOW = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Scope:
    """What the figures cover: one facility, or every facility of a district."""

    kind: ScopeKind
    # The facility's id, or the district's name.
    name: str
    facility_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Median and 90th percentile of a duration, in seconds; None when nothing was timed."""

    median_s: float | None
    p90_s: float | None


@dataclass(frozen=True, slots=True)
class FalseAlarms:
    """Resolved alerts of one kind or one device, and how many were false alarms."""

    subject: str
    resolved: int
    false_alarms: int
    share: float


@dataclass(frozen=True, slots=True)
class ZoneOccupancy:
    """People counted now in a zone by its live counters, against its licensed capacity."""

    facility_id: str
    zone_id: str
    name: str
    present: int
    capacity: int | None


@dataclass(frozen=True, slots=True)
class ResponseFigures:
    """How high alerts were answered over a period: the KPIs' and each report row's."""

    # High-priority alerts raised in the period, and how many were acknowledged in time
    # (one never acknowledged counts as late); shares are None when there were none.
    high_alerts: int
    ack_within_60s: int
    ack_within_180s: int
    ack_within_60s_share: float | None
    ack_within_180s_share: float | None
    # From raising to acknowledging / attending, over the high alerts that got there.
    time_to_ack: Percentiles
    time_to_attend: Percentiles
    overdue_calls: int
    staff_ratio_breaches: int


def response_figures(alerts: dict[str, Any]) -> dict[str, Any]:
    """The ResponseFigures fields from a row of alert_figures_sql (absent counts are 0)."""
    high = int(alerts.get("high_alerts", 0))
    return {
        "high_alerts": high,
        "ack_within_60s": int(alerts.get("ack_fast", 0)),
        "ack_within_180s": int(alerts.get("ack_slow", 0)),
        "ack_within_60s_share": alerts["ack_fast"] / high if high else None,
        "ack_within_180s_share": alerts["ack_slow"] / high if high else None,
        "time_to_ack": percentiles(alerts.get("time_to_ack")),
        "time_to_attend": percentiles(alerts.get("time_to_attend")),
        "overdue_calls": int(alerts.get("overdue_calls", 0)),
        "staff_ratio_breaches": int(alerts.get("staff_ratio_breaches", 0)),
    }


@dataclass(frozen=True, slots=True)
class Kpis(ResponseFigures):
    """The KPIs of one scope: alert figures over [start, end), device and people figures now."""

    scope: Scope
    start: datetime
    end: datetime
    now: datetime
    # Over alerts raised in the period and since resolved by staff (not `self_resolved`);
    # the shares are of those judged.
    false_alarms_by_kind: tuple[FalseAlarms, ...]
    false_alarms_by_device: tuple[FalseAlarms, ...]
    devices_total: int
    devices_online: int
    # Summed over zones with a live counter; capacity is licensed beds + childcare places.
    people_present: int
    capacity: int
    zones: tuple[ZoneOccupancy, ...]
    # Call buttons with no test press in the 30 days before `end`.
    buttons_untested: tuple[str, ...]


# Dispositions a person chose: what the false-alarm shares are out of. An alert the system
# closed because its condition ended (`self_resolved`) was judged by no one.
JUDGED = "state = 'resolved' AND disposition <> 'self_resolved'"


def alert_figures_sql(per_facility: bool = False) -> str:
    """SQL: the period's alert figures, of the whole scope or one row per facility.

    The KPIs (one row) and the monthly report (per facility) read the same text, so the
    report's figures and the screen's never disagree.
    """
    key = "facility_id" if per_facility else "NULL::text AS facility_id"
    group = "GROUP BY facility_id ORDER BY facility_id" if per_facility else ""
    return f"""
SELECT {key},
       count(*) AS alerts,
       count(*) FILTER (WHERE priority = 'high') AS high_alerts,
       count(*) FILTER (WHERE priority = 'high'
                        AND acknowledged_at <= raised_at + interval '{ACK_FAST_S} seconds')
           AS ack_fast,
       count(*) FILTER (WHERE priority = 'high'
                        AND acknowledged_at <= raised_at + interval '{ACK_SLOW_S} seconds')
           AS ack_slow,
       percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP
           (ORDER BY extract(epoch FROM acknowledged_at - raised_at)::float8)
           FILTER (WHERE priority = 'high' AND acknowledged_at IS NOT NULL) AS time_to_ack,
       percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP
           (ORDER BY extract(epoch FROM attended_at - raised_at)::float8)
           FILTER (WHERE priority = 'high' AND attended_at IS NOT NULL) AS time_to_attend,
       count(*) FILTER (WHERE overdue_at IS NOT NULL) AS overdue_calls,
       count(*) FILTER (WHERE kind = 'staff_ratio') AS staff_ratio_breaches,
       count(*) FILTER (WHERE {JUDGED}) AS judged,
       count(*) FILTER (WHERE {JUDGED} AND disposition = 'false_alarm') AS false_alarms
FROM alerts
WHERE facility_id = ANY(%(facilities)s) AND raised_at >= %(start)s AND raised_at < %(end)s
{group}
"""


# One pass over the period's alerts that staff resolved and judged, grouped both ways;
# alerts about a zone or a facility (no device) count for their kind only.
_FALSE_ALARMS = f"""
SELECT GROUPING(kind) = 1 AS per_device,
       coalesce(kind, device_id) AS subject,
       count(*) AS resolved,
       count(*) FILTER (WHERE disposition = 'false_alarm') AS false_alarms
FROM alerts
WHERE facility_id = ANY(%(facilities)s) AND raised_at >= %(start)s AND raised_at < %(end)s
  AND {JUDGED}
GROUP BY GROUPING SETS ((kind), (device_id))
HAVING GROUPING(kind) = 0 OR device_id IS NOT NULL
ORDER BY per_device,
         count(*) FILTER (WHERE disposition = 'false_alarm')::float8 / count(*) DESC,
         false_alarms DESC, subject
"""


# Offline as the device_offline rule sees it: the device's will said so, or nothing was
# heard for two heartbeats. Never heard at all is offline too.
def device_figures_sql(per_facility: bool = False) -> str:
    """SQL: devices registered and online now, of the whole scope or one row per facility."""
    key = "d.facility_id" if per_facility else "NULL::text AS facility_id"
    group = "GROUP BY d.facility_id ORDER BY d.facility_id" if per_facility else ""
    return f"""
SELECT {key},
       count(*) AS total,
       count(*) FILTER (WHERE {online_sql("%(now)s")}) AS online
FROM devices d LEFT JOIN device_state s ON s.device_id = d.id
WHERE d.facility_id = ANY(%(facilities)s)
{group}
"""


# As the over_capacity rule counts: several counters in a zone add up, and a counter not
# heard for two heartbeats counts nobody.
_ZONE_OCCUPANCY = f"""
SELECT z.facility_id, z.zone_id, z.name, sum(s.count)::int AS present, z.capacity
FROM zones z
JOIN devices d ON d.facility_id = z.facility_id AND d.zone_id = z.zone_id
     AND d.type = 'occupancy_counter'
JOIN device_state s ON s.device_id = d.id AND s.count IS NOT NULL
     AND {fresh_sql("%(now)s")}
WHERE z.facility_id = ANY(%(facilities)s)
GROUP BY z.facility_id, z.zone_id, z.name, z.capacity
ORDER BY z.facility_id, z.zone_id
"""

# Per button, the events_identity index (device_id, seq, ts) finds its events and the
# time bound keeps the scan to the window (and to its chunks under TimescaleDB). A button
# registered after the period did not exist then.
_BUTTONS_UNTESTED = """
SELECT d.id, d.facility_id, d.zone_id
FROM devices d
WHERE d.facility_id = ANY(%(facilities)s) AND d.type = 'emergency_button'
  AND d.registered_at < %(end)s
  AND NOT EXISTS (
      SELECT 1 FROM events e
      WHERE e.device_id = d.id AND e.ts >= %(tested_since)s AND e.ts < %(end)s
        AND e.event = 'pressed' AND e.payload ->> 'test' = 'true')
ORDER BY d.id
"""


async def facility_kpis(
    conn: AsyncConnection[Any], facility_id: str, start: datetime, end: datetime, now: datetime
) -> Kpis:
    """The KPIs of one facility; QueryError when it is not registered or the period is bad."""
    _check_period(start, end, now)
    return await _kpis(conn, "facility", facility_id, start=start, end=end, now=now)


async def district_kpis(
    conn: AsyncConnection[Any], district: str, start: datetime, end: datetime, now: datetime
) -> Kpis:
    """The KPIs of every facility in a district; QueryError when it has none, or a bad period."""
    _check_period(start, end, now)
    return await _kpis(conn, "district", district, start=start, end=end, now=now)


def kpis_as_dict(kpis: Kpis) -> dict[str, Any]:
    """The KPIs as JSON-ready values: nested objects, lists, ISO 8601 times."""
    document = dataclasses.asdict(kpis)
    for key in ("start", "end", "now"):
        document[key] = document[key].isoformat()
    return document


def kpi_params(
    facility_ids: Sequence[str], start: datetime, end: datetime, now: datetime
) -> dict[str, Any]:
    """The parameters every KPI query takes: the facilities, the period and `now`."""
    return {
        "facilities": list(facility_ids),
        "start": start,
        "end": end,
        "now": now,
        "tested_since": end - BUTTON_TEST_WINDOW,
    }


def _check_period(start: datetime, end: datetime, now: datetime) -> None:
    for name, value in (("start", start), ("end", end), ("now", now)):
        if value.tzinfo is None or value.utcoffset() is None:
            raise QueryError("invalid", f"the period's {name} needs a UTC offset: {value}")
    if start >= end:
        raise QueryError(
            "invalid", f"the period must start before it ends: {start} is not before {end}"
        )


async def _kpis(
    conn: AsyncConnection[Any],
    kind: ScopeKind,
    name: str,
    *,
    start: datetime,
    end: datetime,
    now: datetime,
) -> Kpis:
    # Every query reads one snapshot, so the figures add up even while alerts move on;
    # inside a caller's transaction they share that one instead.
    fresh = conn.info.transaction_status == TransactionStatus.IDLE
    try:
        async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            if fresh:
                await cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            column = "id" if kind == "facility" else "district"
            await cur.execute(
                f"SELECT id, beds + childcare_places AS capacity FROM facilities"
                f" WHERE {column} = %s ORDER BY id",
                (name,),
            )
            facilities = await cur.fetchall()
            if not facilities:
                what = "facility" if kind == "facility" else "facility in district"
                raise QueryError("not_found", f"no {what} {name!r} is registered")
            params = kpi_params([row["id"] for row in facilities], start, end, now)
            await cur.execute(alert_figures_sql(), params)
            alerts = await cur.fetchone()
            await cur.execute(_FALSE_ALARMS, params)
            false_alarms = await cur.fetchall()
            await cur.execute(device_figures_sql(), params)
            devices = await cur.fetchone()
            await cur.execute(_ZONE_OCCUPANCY, params)
            zones = tuple(ZoneOccupancy(**row) for row in await cur.fetchall())
            await cur.execute(_BUTTONS_UNTESTED, params)
            untested = tuple(row["id"] for row in await cur.fetchall())
    except psycopg.Error as exc:
        raise StorageError(f"cannot compute the KPIs of {kind} {name!r}: {exc}") from exc
    if alerts is None or devices is None:  # aggregates without GROUP BY return one row
        raise StorageError(f"the KPI queries of {kind} {name!r} returned no row")
    return Kpis(
        scope=Scope(kind, name, tuple(row["id"] for row in facilities)),
        start=start,
        end=end,
        now=now,
        **response_figures(alerts),
        false_alarms_by_kind=_false_alarms(false_alarms, per_device=False),
        false_alarms_by_device=_false_alarms(false_alarms, per_device=True),
        devices_total=int(devices["total"]),
        devices_online=int(devices["online"]),
        people_present=sum(zone.present for zone in zones),
        capacity=sum(int(row["capacity"]) for row in facilities),
        zones=zones,
        buttons_untested=untested,
    )


def percentiles(values: Sequence[float] | None) -> Percentiles:
    """Percentiles from the [median, p90] array a KPI query returns (or NULL)."""
    if values is None:
        return Percentiles(None, None)
    median, p90 = values
    return Percentiles(median, p90)


def _false_alarms(rows: Sequence[dict[str, Any]], *, per_device: bool) -> tuple[FalseAlarms, ...]:
    return tuple(
        FalseAlarms(
            subject=row["subject"],
            resolved=int(row["resolved"]),
            false_alarms=int(row["false_alarms"]),
            share=row["false_alarms"] / row["resolved"],
        )
        for row in rows
        if row["per_device"] is per_device
    )
