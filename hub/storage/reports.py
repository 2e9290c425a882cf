"""The figures of the monthly supervision report (SPEC §1), read in one snapshot.

The scope's totals are `/kpis`' own (hub/storage/kpis.py, same function, same snapshot);
the per-facility rows run the same SQL text grouped by facility. What the KPIs do not
have (counts by day, the distribution of response times, the overdue calls, occupancy
per day, breaches per class) is read here, over the same facilities and period.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from hub.errors import StorageError
from hub.storage.kpis import (
    FalseAlarms,
    Kpis,
    ResponseFigures,
    alert_figures_sql,
    device_figures_sql,
    district_kpis,
    facility_kpis,
    kpi_params,
    response_figures,
)

# Upper edges, in seconds, of the response-time distribution's bins; the last bin is open.
RESPONSE_BINS_S: tuple[int, ...] = (15, 30, 60, 120, 180, 300, 600)
WORST_DEVICES = 10


@dataclass(frozen=True, slots=True)
class FacilityFigures(ResponseFigures):
    """One facility's row of the report: its alert figures, devices and occupancy."""

    id: str
    name: str
    kind: str
    capacity: int
    alerts: int
    calls: int
    # Resolved and judged by staff (not self-resolved), and of those false alarms.
    judged: int
    false_alarms: int
    false_alarm_share: float | None
    devices_total: int
    devices_online: int
    buttons_untested: int
    # People counted in the month: highest count at once, and the mean while counted.
    occupancy_peak: int | None
    occupancy_mean: float | None


@dataclass(frozen=True, slots=True)
class DailyAlerts:
    """Alerts of one kind raised at one facility on one day (China time)."""

    facility_id: str
    day: date
    kind: str
    alerts: int


@dataclass(frozen=True, slots=True)
class ResponseBin:
    """High alerts acknowledged / attended within (low_s, high_s]; high_s None: beyond."""

    low_s: int
    high_s: int | None
    acknowledged: int
    attended: int


@dataclass(frozen=True, slots=True)
class OverdueCall:
    """A high alert not acknowledged within 180 s, and what became of it."""

    alert_id: int
    facility_id: str
    facility_name: str
    zone_id: str | None
    zone_name: str | None
    device_id: str | None
    kind: str
    raised_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    attended_at: datetime | None
    resolved_at: datetime | None
    disposition: str | None


@dataclass(frozen=True, slots=True)
class DayOccupancy:
    """People counted on one day: peak at once and mean; facility_id None for the scope."""

    facility_id: str | None
    day: date
    peak: int
    mean: float


@dataclass(frozen=True, slots=True)
class ClassBreaches:
    """Staff-ratio alerts of one childcare class (zone) in the period."""

    facility_id: str
    zone_id: str | None
    zone_name: str | None
    class_type: str | None
    breaches: int


@dataclass(frozen=True, slots=True)
class DevicePlace:
    """Where a device the report names is: its facility and zone."""

    device_id: str
    facility_id: str
    zone_id: str | None


@dataclass(frozen=True, slots=True)
class MonthlyFigures:
    """Everything the monthly report shows, for one facility or a district."""

    kpis: Kpis
    # Days are China's (`timezone`), as the period's bounds are.
    timezone: str
    facilities: tuple[FacilityFigures, ...]
    daily: tuple[DailyAlerts, ...]
    response_bins: tuple[ResponseBin, ...]
    # High alerts never acknowledged / never attended in the period.
    never_acknowledged: int
    never_attended: int
    overdue: tuple[OverdueCall, ...]
    occupancy: tuple[DayOccupancy, ...]
    staff_ratio: tuple[ClassBreaches, ...]
    # Call buttons with no test press in the 30 days before the period's end.
    untested: tuple[DevicePlace, ...]
    # The devices with most false alarms (then the highest share), at most ten.
    worst_devices: tuple[FalseAlarms, ...]
    places: dict[str, DevicePlace]


_FACILITIES = """
SELECT id, name, kind, beds + childcare_places AS capacity
FROM facilities WHERE id = ANY(%(facilities)s) ORDER BY id
"""

_DAILY = """
SELECT facility_id, (raised_at AT TIME ZONE %(tz)s)::date AS day, kind, count(*) AS alerts
FROM alerts
WHERE facility_id = ANY(%(facilities)s) AND raised_at >= %(start)s AND raised_at < %(end)s
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
"""

# width_bucket over the bins' edges: 0 is (0, 15], ..., len(edges) is beyond the last.
_RESPONSE_BINS = """
SELECT what, bin, count(*) AS alerts FROM (
    SELECT 'ack' AS what, width_bucket(extract(epoch FROM acknowledged_at - raised_at)::float8,
                                       %(edges)s::float8[]) AS bin
    FROM alerts
    WHERE facility_id = ANY(%(facilities)s) AND raised_at >= %(start)s AND raised_at < %(end)s
      AND priority = 'high' AND acknowledged_at IS NOT NULL
    UNION ALL
    SELECT 'attend', width_bucket(extract(epoch FROM attended_at - raised_at)::float8,
                                  %(edges)s::float8[])
    FROM alerts
    WHERE facility_id = ANY(%(facilities)s) AND raised_at >= %(start)s AND raised_at < %(end)s
      AND priority = 'high' AND attended_at IS NOT NULL
) timed
GROUP BY what, bin
"""

_OVERDUE = """
SELECT a.id AS alert_id, a.facility_id, f.name AS facility_name, a.zone_id,
       z.name AS zone_name, a.device_id, a.kind, a.raised_at, a.acknowledged_at,
       CASE WHEN coalesce(u.display_name, '') = '' THEN a.acknowledged_by
            ELSE u.display_name || ' (' || a.acknowledged_by || ')' END AS acknowledged_by,
       a.attended_at, a.resolved_at, a.disposition
FROM alerts a
JOIN facilities f ON f.id = a.facility_id
LEFT JOIN zones z ON z.facility_id = a.facility_id AND z.zone_id = a.zone_id
LEFT JOIN users u ON u.username = a.acknowledged_by
WHERE a.facility_id = ANY(%(facilities)s) AND a.raised_at >= %(start)s
  AND a.raised_at < %(end)s AND a.overdue_at IS NOT NULL
ORDER BY a.raised_at, a.id
"""

# Per 5-minute bucket the counters of a facility (and of the whole scope) add up, as the
# over_capacity rule counts; then per day the highest sum and the mean sum.
_OCCUPANCY = """
WITH per_bucket AS (
    SELECT GROUPING(facility_id) = 1 AS whole, facility_id, bucket,
           sum(max_count) AS peak_count, sum(avg_count) AS mean_count
    FROM occupancy_5m
    WHERE facility_id = ANY(%(facilities)s) AND bucket >= %(start)s AND bucket < %(end)s
    GROUP BY GROUPING SETS ((facility_id, bucket), (bucket))
)
SELECT whole, facility_id, (bucket AT TIME ZONE %(tz)s)::date AS day,
       max(peak_count)::int AS peak, avg(mean_count)::float8 AS mean
FROM per_bucket
GROUP BY whole, facility_id, day
ORDER BY whole DESC, facility_id, day
"""

_STAFF_RATIO = """
SELECT a.facility_id, a.zone_id, z.name AS zone_name, z.class_type, count(*) AS breaches
FROM alerts a
LEFT JOIN zones z ON z.facility_id = a.facility_id AND z.zone_id = a.zone_id
WHERE a.facility_id = ANY(%(facilities)s) AND a.raised_at >= %(start)s
  AND a.raised_at < %(end)s AND a.kind = 'staff_ratio'
GROUP BY 1, 2, 3, 4
ORDER BY breaches DESC, 1, 2
"""

_DEVICE_PLACES = """
SELECT id AS device_id, facility_id, zone_id FROM devices WHERE id = ANY(%(ids)s) ORDER BY id
"""


async def monthly_figures(
    conn: AsyncConnection[Any],
    *,
    facility: str | None,
    district: str | None,
    start: datetime,
    end: datetime,
    now: datetime,
    timezone: str,
) -> MonthlyFigures:
    """The report's figures of one facility or one district over [start, end).

    QueryError (from the KPIs) when the scope is unknown or the period is bad.
    """
    try:
        async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            if facility is not None:
                kpis = await facility_kpis(conn, facility, start, end, now)
            else:
                assert district is not None  # noqa: S101 - the caller gives one of the two
                kpis = await district_kpis(conn, district, start, end, now)
            params = kpi_params(kpis.scope.facility_ids, start, end, now)
            params |= {"tz": timezone, "edges": [0, *RESPONSE_BINS_S]}
            await cur.execute(_FACILITIES, params)
            registry = await cur.fetchall()
            await cur.execute(alert_figures_sql(per_facility=True), params)
            alerts = {row["facility_id"]: row for row in await cur.fetchall()}
            await cur.execute(device_figures_sql(per_facility=True), params)
            devices = {row["facility_id"]: row for row in await cur.fetchall()}
            await cur.execute(_DAILY, params)
            daily = tuple(DailyAlerts(**row) for row in await cur.fetchall())
            await cur.execute(_RESPONSE_BINS, params)
            timed = {(row["what"], row["bin"]): int(row["alerts"]) for row in await cur.fetchall()}
            await cur.execute(_OVERDUE, params)
            overdue = tuple(OverdueCall(**row) for row in await cur.fetchall())
            await cur.execute(_OCCUPANCY, params)
            occupancy = tuple(
                DayOccupancy(
                    None if row["whole"] else row["facility_id"],
                    row["day"],
                    row["peak"],
                    row["mean"],
                )
                for row in await cur.fetchall()
            )
            await cur.execute(_STAFF_RATIO, params)
            staff_ratio = tuple(ClassBreaches(**row) for row in await cur.fetchall())
            worst = tuple(
                sorted(kpis.false_alarms_by_device, key=lambda r: (-r.false_alarms, -r.share))[
                    :WORST_DEVICES
                ]
            )
            named = [*kpis.buttons_untested, *(rate.subject for rate in worst)]
            await cur.execute(_DEVICE_PLACES, {"ids": named})
            places = {row["device_id"]: DevicePlace(**row) for row in await cur.fetchall()}
            untested = tuple(places[device] for device in kpis.buttons_untested)
    except psycopg.Error as exc:
        what = f"facility {facility!r}" if facility is not None else f"district {district!r}"
        raise StorageError(f"cannot read the monthly report of {what}: {exc}") from exc

    bins = _response_bins(timed)
    month = _month_occupancy(occupancy)
    untested_at = _count_by((button.facility_id, 1) for button in untested)
    # A call is a press of a call button: the sos alert it raised.
    calls = _count_by((row.facility_id, row.alerts) for row in daily if row.kind == "sos")
    return MonthlyFigures(
        kpis=kpis,
        timezone=timezone,
        facilities=tuple(
            _facility(
                row,
                alerts=alerts.get(row["id"]),
                devices=devices.get(row["id"]),
                calls=calls.get(row["id"], 0),
                untested=untested_at.get(row["id"], 0),
                occupancy=month.get(row["id"], (None, None)),
            )
            for row in registry
        ),
        daily=daily,
        response_bins=bins,
        never_acknowledged=kpis.high_alerts - sum(b.acknowledged for b in bins),
        never_attended=kpis.high_alerts - sum(b.attended for b in bins),
        overdue=overdue,
        occupancy=occupancy,
        staff_ratio=staff_ratio,
        untested=untested,
        worst_devices=worst,
        places=places,
    )


def _count_by(pairs: Iterable[tuple[str, int]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key, count in pairs:
        counts[key] = counts.get(key, 0) + count
    return counts


def _response_bins(timed: dict[tuple[str, int], int]) -> tuple[ResponseBin, ...]:
    # width_bucket gives 1 for [0, 15), ..., len(edges) for 600 s and beyond.
    lows = (0, *RESPONSE_BINS_S)
    highs: tuple[int | None, ...] = (*RESPONSE_BINS_S, None)
    return tuple(
        ResponseBin(low, high, timed.get(("ack", index), 0), timed.get(("attend", index), 0))
        for index, (low, high) in enumerate(zip(lows, highs, strict=True), start=1)
    )


def _month_occupancy(days: Sequence[DayOccupancy]) -> dict[str | None, tuple[int, float]]:
    """Per facility (None: the scope), the month's peak and the mean of its daily means."""
    by_place: dict[str | None, list[DayOccupancy]] = {}
    for day in days:
        by_place.setdefault(day.facility_id, []).append(day)
    return {
        place: (max(d.peak for d in rows), sum(d.mean for d in rows) / len(rows))
        for place, rows in by_place.items()
    }


def _facility(
    registry: dict[str, Any],
    *,
    alerts: dict[str, Any] | None,
    devices: dict[str, Any] | None,
    calls: int,
    untested: int,
    occupancy: tuple[int, float] | tuple[None, None],
) -> FacilityFigures:
    a = alerts or {}
    judged = int(a.get("judged", 0))
    false_alarms = int(a.get("false_alarms", 0))
    return FacilityFigures(
        id=registry["id"],
        name=registry["name"],
        kind=registry["kind"],
        capacity=int(registry["capacity"]),
        alerts=int(a.get("alerts", 0)),
        calls=calls,
        **response_figures(a),
        judged=judged,
        false_alarms=false_alarms,
        false_alarm_share=false_alarms / judged if judged else None,
        devices_total=int((devices or {}).get("total", 0)),
        devices_online=int((devices or {}).get("online", 0)),
        buttons_untested=untested,
        occupancy_peak=occupancy[0],
        occupancy_mean=occupancy[1],
    )
