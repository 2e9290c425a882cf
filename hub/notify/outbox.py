"""The outbox: an alert change's notices queued in its own transaction, floods grouped.

A notice is queued as rows of the `notifications` outbox inside the alert's own
transaction, one row per enabled webhook of the facility, so a stored alert always has its
notices and queuing never waits on the network (hub/notify/delivery.py sends them).

Floods (SPEC §4, hub/rules.py FloodRule): while a facility is flooding, its medium and
low notices are added to one pending summary per webhook ("10 分钟内共 37 条告警 … 设备离线
27 条"), sent after FLOOD_HOLD_S so it collects more. High alerts (sos, fall, long_lie,
dwell) are always notified one by one.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import AsyncConnection

from hub.errors import raise_if_cancelled
from hub.models import AlertChange
from hub.notify.formats import flood_body, notice_body
from hub.rules import FloodRule
from hub.storage import alerts as alert_rows
from hub.storage import notifications as outbox

logger = logging.getLogger(__name__)

# Alert change action -> notice event; other actions (repeat, ack, resolve ...) send nothing.
ACTION_EVENTS = {"raise": "new", "renotify": "escalated", "overdue": "overdue"}
# A flood summary waits this long after its first alert before it is sent, collecting the
# rest of the burst; short enough that staff hear of a flood within seconds.
FLOOD_HOLD_S = 10.0


async def enqueue_notices(
    conn: AsyncConnection[Any],
    change: AlertChange,
    *,
    now: datetime,
    flood: FloodRule,
) -> int:
    """Queue the notices of one alert change on the facility's webhooks; the rows written.

    Call it inside the change's transaction. It runs in a savepoint: should queuing fail,
    the failure is logged and the alert is still stored.
    """
    event = ACTION_EVENTS.get(change.action)
    # A shelved alert (its zone snoozed for maintenance or a drill) is stored, not announced.
    if event is None or change.alert.shelved:
        return 0
    try:
        async with conn.transaction():
            return await _enqueue(conn, change, event=event, now=now, flood=flood)
    except psycopg.Error:
        raise_if_cancelled()
        logger.exception(
            "cannot queue notifications of alert %s",
            change.alert.id,
            extra={"alert_id": change.alert.id, "facility_id": change.alert.facility_id},
        )
        return 0


async def _enqueue(
    conn: AsyncConnection[Any],
    change: AlertChange,
    *,
    event: str,
    now: datetime,
    flood: FloodRule,
) -> int:
    alert = change.alert
    targets = await outbox.webhook_targets(conn, alert.facility_id, alert.zone_id)
    if not targets:
        return 0
    facility_name, zone_name = targets[0].facility_name, targets[0].zone_name
    webhook_ids = [target.id for target in targets]
    if alert.priority != "high" and event in ("new", "escalated"):
        window_count = await alert_rows.raised_since(conn, alert.facility_id, now - flood.window)
        if flood.groups(alert.priority, window_count):
            for webhook_id in webhook_ids:
                await _add_to_flood(
                    conn,
                    webhook_id,
                    kind=alert.kind,
                    event=event,
                    facility_id=alert.facility_id,
                    facility_name=facility_name,
                    window_count=window_count,
                    window_s=flood.window_s,
                    now=now,
                )
            return len(webhook_ids)
    await outbox.insert_notices(
        conn,
        webhook_ids,
        facility_id=alert.facility_id,
        alert_id=alert.id,
        event=event,
        body=notice_body(change, facility_name, event, zone_name=zone_name),
        now=now,
    )
    return len(webhook_ids)


async def _add_to_flood(
    conn: AsyncConnection[Any],
    webhook_id: int,
    *,
    kind: str,
    event: str,
    facility_id: str,
    facility_name: str,
    window_count: int,
    window_s: int,
    now: datetime,
) -> None:
    """Count one notice into the webhook's pending flood summary, opening one if none is."""
    kinds = Counter({kind: 1} if event == "new" else {})
    escalated = 0 if event == "new" else 1

    def body(first_at: datetime) -> dict[str, Any]:
        return flood_body(
            facility_id=facility_id,
            facility_name=facility_name,
            kinds=kinds,
            escalated=escalated,
            window_count=window_count,
            window_s=window_s,
            first_at=first_at,
            last_at=now,
        )

    flood_id, group_count, old = await outbox.open_flood_summary(
        conn,
        webhook_id,
        facility_id=facility_id,
        body=body(now),
        due_at=now + timedelta(seconds=FLOOD_HOLD_S),
        now=now,
    )
    if group_count == 1:
        return
    kinds.update({str(k): int(v) for k, v in dict(old.get("kinds", {})).items()})
    escalated += int(old.get("escalated", 0))
    window_count = max(window_count, int(old.get("window_count", 0)))
    first_at = datetime.fromisoformat(str(old.get("first_at", now.isoformat())))
    await outbox.replace_body(conn, flood_id, body(first_at))
