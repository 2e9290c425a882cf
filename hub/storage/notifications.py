"""Queries of the notification outbox and the webhooks it sends to (hub/notify/)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb

from hub.storage.registry import facility_exists

Connection = AsyncConnection[Any]


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """An enabled webhook of a facility, with the names its notices show."""

    id: int
    facility_name: str
    zone_name: str | None


@dataclass(frozen=True, slots=True)
class Webhook:
    """A webhook as the sender needs it."""

    id: int
    facility_id: str
    url: str
    format: str
    secret: str
    enabled: bool


@dataclass(frozen=True, slots=True)
class ClaimedNotice:
    """One outbox row leased to this process."""

    id: int
    event: str
    body: dict[str, Any]
    attempts: int


@dataclass(frozen=True, slots=True)
class WebhookStatus:
    """What the outbox knows of one webhook's deliveries."""

    id: int
    facility_id: str
    url: str
    format: str
    consecutive_failures: int
    last_error: str | None
    last_success_at: datetime | None
    last_failure_at: datetime | None


@dataclass(frozen=True, slots=True)
class OutboxCounts:
    """The outbox and the webhooks, counted for the health endpoint."""

    webhooks: int
    failing: int
    pending: int
    oldest_pending: datetime | None
    failed_last_hour: int


_STATUS_COLUMNS = "consecutive_failures, last_error, last_success_at, last_failure_at"

_CLAIM = """
WITH due AS (
    SELECT id FROM notifications
    WHERE state IN ('pending', 'sending') AND next_attempt_at <= %(now)s
      AND NOT (webhook_id = ANY(%(busy)s::bigint[]))
    ORDER BY next_attempt_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE notifications n SET state = 'sending', next_attempt_at = %(lease)s
FROM due, webhooks w
WHERE n.id = due.id AND w.id = n.webhook_id
RETURNING n.id, n.event, n.body, n.attempts,
          w.id, w.facility_id, w.url, w.format, w.secret, w.enabled
"""


def _one(row: tuple[Any, ...] | None) -> tuple[Any, ...]:
    """The row a statement with RETURNING (or an aggregate) must have produced."""
    if row is None:
        raise psycopg.DataError("the database returned no row where one was certain")
    return row


# -- queuing ----------------------------------------------------------------------------


async def webhook_targets(
    conn: Connection, facility_id: str, zone_id: str | None
) -> list[WebhookTarget]:
    """The facility's enabled webhooks, by id, with the facility's and the zone's names."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(
            "SELECT w.id, f.name, z.name FROM webhooks w"
            " JOIN facilities f ON f.id = w.facility_id"
            " LEFT JOIN zones z ON z.facility_id = w.facility_id AND z.zone_id = %s"
            " WHERE w.facility_id = %s AND w.enabled ORDER BY w.id",
            (zone_id, facility_id),
        )
        return [WebhookTarget(int(r[0]), str(r[1]), r[2]) for r in await cur.fetchall()]


async def insert_notices(
    conn: Connection,
    webhook_ids: Sequence[int],
    *,
    facility_id: str,
    alert_id: int,
    event: str,
    body: dict[str, Any],
    now: datetime,
) -> None:
    """Queue one notice of an alert on each of `webhook_ids`, due now."""
    notice = Jsonb(body)
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.executemany(
            "INSERT INTO notifications"
            " (webhook_id, facility_id, alert_id, event, body, next_attempt_at, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [(wid, facility_id, alert_id, event, notice, now, now) for wid in webhook_ids],
        )


async def open_flood_summary(
    conn: Connection,
    webhook_id: int,
    *,
    facility_id: str,
    body: dict[str, Any],
    due_at: datetime,
    now: datetime,
) -> tuple[int, int, dict[str, Any]]:
    """Count one notice into the webhook's pending flood summary, opening it with `body`.

    (id, group_count, body as stored). The conflict locks the pending summary until the
    transaction ends, so concurrent alerts of the facility add to it one after the other.
    """
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(
            "INSERT INTO notifications (webhook_id, facility_id, event, body, group_count,"
            " next_attempt_at, created_at) VALUES (%s, %s, 'flood', %s, 1, %s, %s)"
            " ON CONFLICT (webhook_id) WHERE event = 'flood' AND state = 'pending'"
            " AND attempts = 0 DO UPDATE SET group_count = notifications.group_count + 1"
            " RETURNING id, group_count, body",
            (webhook_id, facility_id, Jsonb(body), due_at, now),
        )
        flood_id, group_count, stored = _one(await cur.fetchone())
    return int(flood_id), int(group_count), dict(stored)


async def replace_body(conn: Connection, notice_id: int, body: dict[str, Any]) -> None:
    """Store a new body for a notice not yet sent (a flood summary that grew)."""
    await conn.execute("UPDATE notifications SET body = %s WHERE id = %s", (Jsonb(body), notice_id))


# -- configuration ----------------------------------------------------------------------


async def insert_webhook(
    conn: Connection, facility_id: str, url: str, format: str, secret: str
) -> int | None:
    """Register a webhook; its id, or None when there is no such facility."""
    if not await facility_exists(conn, facility_id):
        return None
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(
            "INSERT INTO webhooks (facility_id, url, format, secret) VALUES (%s, %s, %s, %s)"
            " RETURNING id",
            (facility_id, url, format, secret),
        )
        return int(_one(await cur.fetchone())[0])


# -- sending ----------------------------------------------------------------------------


async def claim_due(
    conn: Connection, *, now: datetime, busy: Sequence[int], limit: int, lease: datetime
) -> list[tuple[Webhook, ClaimedNotice]]:
    """Lease up to `limit` due rows of webhooks not in `busy` until `lease` (SKIP LOCKED)."""
    params = {"now": now, "busy": list(busy), "limit": limit, "lease": lease}
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(_CLAIM, params)
        claimed = await cur.fetchall()
    return [
        (
            Webhook(int(wid), str(facility_id), str(url), str(fmt), str(secret), enabled),
            ClaimedNotice(int(row_id), str(event), dict(body), int(attempts)),
        )
        for row_id, event, body, attempts, wid, facility_id, url, fmt, secret, enabled in claimed
    ]


async def mark_sent(conn: Connection, notice_id: int, *, attempts: int, now: datetime) -> None:
    """Record a notice as delivered on try `attempts`."""
    await conn.execute(
        "UPDATE notifications SET state = 'sent', attempts = %s, sent_at = %s,"
        " next_attempt_at = %s, last_error = NULL WHERE id = %s",
        (attempts, now, now, notice_id),
    )


async def mark_unsent(
    conn: Connection,
    notice_id: int,
    *,
    attempts: int,
    failed: bool,
    next_attempt_at: datetime,
    error: str,
) -> None:
    """Record a failed try: pending again from `next_attempt_at`, or failed for good."""
    await conn.execute(
        "UPDATE notifications SET state = %s, attempts = %s, next_attempt_at = %s,"
        " last_error = %s WHERE id = %s",
        ("failed" if failed else "pending", attempts, next_attempt_at, error, notice_id),
    )


async def record_webhook_try(
    conn: Connection, webhook_id: int, *, ok: bool, error: str, now: datetime
) -> tuple[int, str | None, datetime | None, datetime | None] | None:
    """Count one try on the webhook's record; its failures, error and last times after it."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        if ok:
            await cur.execute(
                "UPDATE webhooks SET consecutive_failures = 0, last_success_at = %s"
                f" WHERE id = %s RETURNING {_STATUS_COLUMNS}",
                (now, webhook_id),
            )
        else:
            await cur.execute(
                "UPDATE webhooks SET consecutive_failures = consecutive_failures + 1,"
                f" last_error = %s, last_failure_at = %s WHERE id = %s RETURNING {_STATUS_COLUMNS}",
                (error, now, webhook_id),
            )
        row = await cur.fetchone()
    return None if row is None else (int(row[0]), row[1], row[2], row[3])


# -- health -----------------------------------------------------------------------------


async def webhook_statuses(conn: Connection, limit: int) -> list[WebhookStatus]:
    """The enabled webhooks' records, most failing first, at most `limit`."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(
            f"SELECT id, facility_id, url, format, {_STATUS_COLUMNS} FROM webhooks WHERE enabled"
            " ORDER BY consecutive_failures DESC, id LIMIT %s",
            (limit,),
        )
        return [
            WebhookStatus(int(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), r[5], r[6], r[7])
            for r in await cur.fetchall()
        ]


async def outbox_counts(
    conn: Connection, *, failing_after: int, failed_since: datetime
) -> OutboxCounts:
    """Webhooks (and those failing `failing_after` times running), pending and failed rows."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(
            "SELECT count(*), count(*) FILTER (WHERE consecutive_failures >= %s)"
            " FROM webhooks WHERE enabled",
            (failing_after,),
        )
        total, failing = _one(await cur.fetchone())
        await cur.execute(
            "SELECT count(*), min(created_at) FROM notifications"
            " WHERE state IN ('pending', 'sending')"
        )
        pending, oldest = _one(await cur.fetchone())
        await cur.execute(
            "SELECT count(*) FROM notifications WHERE created_at > %s AND state = 'failed'",
            (failed_since,),
        )
        failed = _one(await cur.fetchone())[0]
    return OutboxCounts(int(total), int(failing), int(pending), oldest, int(failed))


async def prune_done(conn: Connection, *, before: datetime, limit: int) -> None:
    """Delete at most `limit` sent or failed rows created before `before`."""
    await conn.execute(
        "DELETE FROM notifications WHERE id IN (SELECT id FROM notifications"
        " WHERE created_at < %s AND state IN ('sent', 'failed') LIMIT %s)",
        (before, limit),
    )


async def list_webhooks(conn: Connection, facility_id: str | None = None) -> list[tuple[Any, ...]]:
    """(id, facility_id, format, url, enabled, consecutive_failures, last_error,
    last_success_at) of every webhook, or one facility's, by facility and id."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(
            "SELECT id, facility_id, format, url, enabled, consecutive_failures, last_error,"
            " last_success_at FROM webhooks"
            " WHERE %(facility)s::text IS NULL OR facility_id = %(facility)s::text"
            " ORDER BY facility_id, id",
            {"facility": facility_id},
        )
        return await cur.fetchall()


async def disable_webhook(conn: Connection, webhook_id: int) -> bool:
    """Stop sending to a webhook; False when there is no such webhook."""
    cur = await conn.execute("UPDATE webhooks SET enabled = false WHERE id = %s", (webhook_id,))
    return cur.rowcount > 0
