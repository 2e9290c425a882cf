"""The HTTP API's queries (docs/api.md): lists in a caller's scope, one object, histories.

Every list takes the caller's scope as the parameters of `hub.storage.accounts.SCOPE_SQL` (over the
facilities table `f`) and a keyset cursor, and fetches one row more than asked so the
router knows whether there is a next page.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from devices import CATALOGUE
from hub.models import Alert
from hub.storage.accounts import SCOPE_SQL
from hub.storage.alerts import ALERT_FIELDS, alert_of
from hub.storage.pool import dict_rows
from hub.storage.registry import DEVICE_COLUMNS, FACILITY_COLUMNS

Conn = AsyncConnection[Any]

BUCKET_SECONDS = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400}
# Buckets are aligned to UTC (date_bin's origin and TimescaleDB's time_bucket agree on it
# for every bucket size here).
_ORIGIN = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"

_DEVICE_SELECT = (
    f"SELECT {DEVICE_COLUMNS}, f.district FROM devices d"
    " JOIN facilities f ON f.id = d.facility_id"
    " LEFT JOIN device_state s ON s.device_id = d.id"
)
_ALERT_COLUMNS = ", ".join(f"a.{name}" for name in ALERT_FIELDS)


# -- facilities ----------------------------------------------------------------------------


async def list_facilities(
    conn: Conn,
    scope: dict[str, Any],
    *,
    district: str | None,
    kind: str | None,
    after: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Facilities in scope, by id, after the cursor's id; limit + 1 rows at most."""
    return await dict_rows(
        conn,
        f"SELECT {FACILITY_COLUMNS} FROM facilities f WHERE {SCOPE_SQL}"
        " AND (%(district)s::text IS NULL OR f.district = %(district)s::text)"
        " AND (%(kind)s::text IS NULL OR f.kind = %(kind)s::text)"
        " AND (%(after)s::text IS NULL OR f.id > %(after)s::text)"
        " ORDER BY f.id LIMIT %(limit)s",
        {**scope, "district": district, "kind": kind, "after": after, "limit": limit + 1},
    )


async def get_facility(conn: Conn, facility_id: str) -> dict[str, Any] | None:
    """One facility's registry row, or None."""
    rows = await dict_rows(
        conn, f"SELECT {FACILITY_COLUMNS} FROM facilities f WHERE f.id = %s", (facility_id,)
    )
    return rows[0] if rows else None


async def district_exists(conn: Conn, district: str) -> bool:
    """True when some facility is registered in the district."""
    rows = await dict_rows(
        conn, "SELECT 1 FROM facilities WHERE district = %s LIMIT 1", (district,)
    )
    return bool(rows)


async def devices_by_type(conn: Conn, facility_id: str) -> dict[str, int]:
    """How many devices of each type the facility has."""
    rows = await dict_rows(
        conn,
        "SELECT type, count(*)::int AS n FROM devices WHERE facility_id = %s GROUP BY type"
        " ORDER BY type",
        (facility_id,),
    )
    return {str(row["type"]): int(row["n"]) for row in rows}


async def map_center(conn: Conn) -> tuple[float, float] | None:
    """The middle of every registered facility's position, or None when none has one."""
    rows = await dict_rows(
        conn,
        "SELECT avg(latitude) AS lat, avg(longitude) AS lon FROM facilities"
        " WHERE latitude IS NOT NULL AND longitude IS NOT NULL",
        (),
    )
    if not rows or rows[0]["lat"] is None:
        return None
    return float(rows[0]["lat"]), float(rows[0]["lon"])


# -- devices -------------------------------------------------------------------------------


async def list_devices(
    conn: Conn,
    scope: dict[str, Any],
    *,
    facility_id: str | None,
    device_type: str | None,
    online: bool | None,
    after: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Devices in scope with their latest state, by id, after the cursor's id."""
    return await dict_rows(
        conn,
        f"SELECT * FROM ({_DEVICE_SELECT} WHERE {SCOPE_SQL}"
        " AND (%(facility)s::text IS NULL OR d.facility_id = %(facility)s::text)"
        " AND (%(type)s::text IS NULL OR d.type = %(type)s::text)"
        " AND (%(after)s::text IS NULL OR d.id > %(after)s::text)) AS listed"
        " WHERE (%(online)s::boolean IS NULL OR online = %(online)s::boolean)"
        " ORDER BY id LIMIT %(limit)s",
        {
            **scope,
            "facility": facility_id,
            "type": device_type,
            "online": online,
            "after": after,
            "limit": limit + 1,
        },
    )


async def get_device(conn: Conn, device_id: str) -> dict[str, Any] | None:
    """One device with its latest state and its facility's district, or None."""
    rows = await dict_rows(conn, f"{_DEVICE_SELECT} WHERE d.id = %s", (device_id,))
    return rows[0] if rows else None


async def device_readings(
    conn: Conn,
    *,
    device_id: str,
    device_type: str,
    start: datetime,
    end: datetime,
    bucket: str,
) -> list[dict[str, Any]]:
    """A device's telemetry per bucket in [start, end); fields its type lacks are None.

    5 minutes of an occupancy counter read the `occupancy_5m` aggregate (a continuous
    aggregate under TimescaleDB, a view otherwise), which has no staff average and no
    message count: those are None there.
    """
    step = BUCKET_SECONDS[bucket]
    params = {"device": device_id, "start": start, "end": end, "step": step}
    if device_type == "occupancy_counter" and bucket == "5m":
        rows = await dict_rows(
            conn,
            "SELECT bucket AS t, avg_count AS count_avg, max_count AS count_max,"
            " NULL::float8 AS staff_avg, max_staff AS staff_max, NULL::real AS battery_min,"
            " NULL::float8 AS presence_share, NULL::bigint AS n"
            " FROM occupancy_5m WHERE device_id = %(device)s"
            f" AND bucket >= date_bin(make_interval(secs => %(step)s), %(start)s, {_ORIGIN})"
            " AND bucket < %(end)s ORDER BY bucket",
            params,
        )
    else:
        rows = await dict_rows(
            conn,
            f"SELECT date_bin(make_interval(secs => %(step)s), ts, {_ORIGIN}) AS t,"
            " avg(count)::float8 AS count_avg, max(count) AS count_max,"
            " avg(staff)::float8 AS staff_avg, max(staff) AS staff_max,"
            " min(battery) AS battery_min, avg(presence::int)::float8 AS presence_share,"
            " count(*) AS n"
            " FROM readings WHERE device_id = %(device)s AND ts >= %(start)s AND ts < %(end)s"
            " GROUP BY 1 ORDER BY 1",
            params,
        )
    measured = {spec.name for spec in CATALOGUE[device_type].telemetry}
    blank = {
        "count_avg": "count",
        "count_max": "count",
        "staff_avg": "staff",
        "staff_max": "staff",
        "battery_min": "battery",
        "presence_share": "presence",
    }
    for row in rows:
        for column, source in blank.items():
            if source not in measured:
                row[column] = None
    return rows


# -- alerts --------------------------------------------------------------------------------


async def list_alerts(
    conn: Conn,
    scope: dict[str, Any],
    *,
    state: str | None,
    kind: str | None,
    priority: str | None,
    facility_id: str | None,
    start: datetime | None,
    end: datetime | None,
    before: tuple[datetime, int] | None,
    limit: int,
) -> list[Alert]:
    """Alerts in scope, newest first, raised before the cursor's (raised_at, id)."""
    rows = await dict_rows(
        conn,
        f"SELECT {_ALERT_COLUMNS} FROM alerts a JOIN facilities f ON f.id = a.facility_id"
        f" WHERE {SCOPE_SQL}"
        " AND (%(state)s::text IS NULL"
        "      OR (%(state)s::text = 'open' AND a.state <> 'resolved')"
        "      OR a.state = %(state)s::text)"
        " AND (%(kind)s::text IS NULL OR a.kind = %(kind)s::text)"
        " AND (%(priority)s::text IS NULL OR a.priority = %(priority)s::text)"
        " AND (%(facility)s::text IS NULL OR a.facility_id = %(facility)s::text)"
        " AND (%(start)s::timestamptz IS NULL OR a.raised_at >= %(start)s::timestamptz)"
        " AND (%(end)s::timestamptz IS NULL OR a.raised_at < %(end)s::timestamptz)"
        " AND (%(before_at)s::timestamptz IS NULL"
        "      OR (a.raised_at, a.id) < (%(before_at)s::timestamptz, %(before_id)s::bigint))"
        " ORDER BY a.raised_at DESC, a.id DESC LIMIT %(limit)s",
        {
            **scope,
            "state": state,
            "kind": kind,
            "priority": priority,
            "facility": facility_id,
            "start": start,
            "end": end,
            "before_at": before[0] if before else None,
            "before_id": before[1] if before else None,
            "limit": limit + 1,
        },
    )
    return [alert_of(row) for row in rows]


async def alert_facility(conn: Conn, alert_id: int) -> tuple[str, str] | None:
    """The facility id and district of an alert, or None when there is no such alert."""
    rows = await dict_rows(
        conn,
        "SELECT a.facility_id, f.district FROM alerts a JOIN facilities f ON f.id = a.facility_id"
        " WHERE a.id = %s",
        (alert_id,),
    )
    return (str(rows[0]["facility_id"]), str(rows[0]["district"])) if rows else None


async def alert_audit(conn: Conn, alert_id: int) -> list[dict[str, Any]]:
    """An alert's trail, oldest first."""
    return await dict_rows(
        conn,
        "SELECT at, actor, action, from_state, to_state, note FROM alert_audit"
        " WHERE alert_id = %s ORDER BY id",
        (alert_id,),
    )


# -- rules and webhooks --------------------------------------------------------------------


async def rule_overrides(conn: Conn, facility_id: str) -> list[dict[str, Any]]:
    """A facility's stored overrides (facility-wide first, then per zone)."""
    return await dict_rows(
        conn,
        "SELECT zone_id, kind, params, updated_at, updated_by FROM rule_overrides"
        " WHERE facility_id = %s ORDER BY zone_id, kind",
        (facility_id,),
    )


async def list_webhooks(conn: Conn, facility_id: str) -> list[dict[str, Any]]:
    """A facility's webhooks with how their endpoints are doing (secrets stay here)."""
    return await dict_rows(
        conn,
        "SELECT id, facility_id, url, format, secret <> '' AS has_secret, enabled, created_at,"
        " consecutive_failures, last_error, last_success_at, last_failure_at"
        " FROM webhooks WHERE facility_id = %s ORDER BY id",
        (facility_id,),
    )


async def delete_webhook(conn: Conn, facility_id: str, webhook_id: int) -> bool:
    """Remove a facility's webhook (and its queued notices); False when it has no such one."""
    cur = await conn.execute(
        "DELETE FROM webhooks WHERE id = %s AND facility_id = %s RETURNING 1",
        (webhook_id, facility_id),
    )
    return await cur.fetchone() is not None


# -- registry ------------------------------------------------------------------------------


async def list_pending(conn: Conn, *, after: str | None, limit: int) -> list[dict[str, Any]]:
    """Devices heard but not registered, by id."""
    return await dict_rows(
        conn,
        "SELECT device_id, facility_id, first_seen, last_seen, messages, last_topic"
        " FROM pending_devices WHERE (%(after)s::text IS NULL OR device_id > %(after)s::text)"
        " ORDER BY device_id LIMIT %(limit)s",
        {"after": after, "limit": limit + 1},
    )


async def list_dead_letters(
    conn: Conn, *, device_id: str | None, reason: str | None, before: int | None, limit: int
) -> list[dict[str, Any]]:
    """Refused messages, newest first, with id below the cursor's."""
    return await dict_rows(
        conn,
        "SELECT id, received_at, topic, reason, detail, facility_id, device_id,"
        " substring(payload FROM 1 FOR 16384) AS payload, payload_size FROM dead_letters"
        " WHERE (%(device)s::text IS NULL OR device_id = %(device)s::text)"
        " AND (%(reason)s::text IS NULL OR reason = %(reason)s::text)"
        " AND (%(before)s::bigint IS NULL OR id < %(before)s::bigint)"
        " ORDER BY id DESC LIMIT %(limit)s",
        {"device": device_id, "reason": reason, "before": before, "limit": limit + 1},
    )
