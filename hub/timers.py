"""Timers in exactly one hub process: offline, battery, capacity, ratio, escalation, long lie.

Leadership is a PostgreSQL advisory lock held on a connection of its own: if the leader
dies, the server drops its session and the lock with it, and another process takes over
on its next try (every FOLLOWER_RETRY_S). What the timers know lives in the database
(`alerts`, `rule_conditions`, `device_state`), so a new leader carries on where the old
one stopped. Every sweep reads the time from the hub's clock, so tests can move it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from hub.clock import Clock
from hub.errors import raise_if_cancelled
from hub.models import DeviceInfo
from hub.rules import (
    Condition,
    RuleParams,
    ZoneSnapshot,
    battery_verdict,
    capacity_breaches,
    decision,
    is_offline,
    ratio_breaches,
)
from hub.settings import Settings
from hub.storage import alerts as alert_rows
from hub.storage import timers as timer_rows
from hub.storage.migrate import RETAINED_TABLES, storage_flavour
from hub.storage.pool import CONNECTION_LOST, keep_connected

if TYPE_CHECKING:
    # The runtime hands the timers the alert store; they never build one.
    from hub.alerts import AlertStore

logger = logging.getLogger(__name__)

# A sweep a second: medium and low alerts reach staff within about a second of their
# condition; high ones (falls, presses) never wait for it.
TICK_S = 1.0
# How often a process that is not the leader tries to become it: a dead leader's timers
# resume within this (plus the server noticing the dead session), well inside 15 s.
FOLLOWER_RETRY_S = 3.0
# Devices handled between yields to the event loop within one sweep.
SWEEP_YIELD_EVERY = 200
# The device rules read every device's state, a cost that grows with the registry: 10 ms
# for 10,000 devices, 0.9 s for 1,000,000 (`carehub bench sweep`). The leader gives them
# at most this share of its time, so with a city's registry they run every ~20 s rather
# than every tick, and the escalations and zone rules keep their second. An offline alert
# (two heartbeats, 120 s by default) is then up to that much later; a site's is not.
DEVICE_SWEEP_SHARE = 0.05


def device_rules_every(cost_s: float) -> float:
    """How long the leader waits between two runs of device rules that take `cost_s`."""
    return cost_s / DEVICE_SWEEP_SHARE


# Housekeeping: live_changes is what a reconnecting screen resumes from (one older than
# this gets a fresh snapshot instead), alert_triggers what makes a redelivered message no
# repeat (brokers keep a session a day; spools replay within hours). Pruned by the leader
# at most this often, a bounded batch at a time so a backlog never blocks a sweep.
PRUNE_EVERY_S = 60.0
PRUNE_BATCH = 10_000
LIVE_CHANGES_KEEP = "24 hours"
ALERT_TRIGGERS_KEEP = "30 days"
# The advisory lock's first key ('care'); the second is the schema's hash (storage/timers.py).
TIMER_LOCK_CLASS = 0x63617265
_HIGH = ("high",)
_ESCALATING = ("high", "medium")
# The open alerts each sweep resolves when their condition ends.
_DEVICE_KINDS = ("device_offline", "low_battery")
_ZONE_KINDS = ("over_capacity", "staff_ratio")


class Timers:
    """Runs the sweeps while this process holds the timer lock."""

    def __init__(
        self,
        settings: Settings,
        pool: AsyncConnectionPool[AsyncConnection[object]],
        alerts: AlertStore,
        clock: Clock,
        params: Callable[[], RuleParams],
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._alerts = alerts
        self._clock = clock
        self._params = params
        self.leader = asyncio.Event()
        self.sweeps = 0
        self._pruned_at = -PRUNE_EVERY_S
        self._flavour: str | None = None
        # When the leader next runs the device rules (time.monotonic()).
        self._devices_due = 0.0
        # How long the last run of the device rules took.
        self.device_sweep_s = 0.0

    @property
    def device_sweep_every_s(self) -> float:
        """The pause the last run of the device rules set before their next."""
        return device_rules_every(self.device_sweep_s)

    async def run(self) -> None:
        """Try for leadership until cancelled; sweep every TICK_S while holding it."""
        # A bug in one sweep must not end offline detection and escalation for good: the
        # lock goes with the connection, and this process tries again.
        await keep_connected(
            self._settings,
            self._lead_if_possible,
            ready=self.leader,
            retry_s=FOLLOWER_RETRY_S,
            log=logger,
            failed="timer sweep failed; retrying",
        )

    async def _lead_if_possible(self, conn: AsyncConnection[Any]) -> None:
        if not await timer_rows.try_timer_lock(conn, TIMER_LOCK_CLASS):
            return
        self.leader.set()
        logger.info("this process runs the timers now")
        try:
            while True:
                await self.sweep(devices=time.monotonic() >= self._devices_due)
                if time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
                    await self.prune()
                # The lock lives with this session: a broken connection ends the term.
                await timer_rows.ping(conn)
                await asyncio.sleep(TICK_S)
        except CONNECTION_LOST as exc:
            # Said here, while this process still knows it led: another may lead now.
            raise_if_cancelled()
            logger.warning("timer leadership lost: %s", exc)
            raise
        finally:
            self.leader.clear()

    async def sweep(self, *, devices: bool = True) -> None:
        """One pass of every timer rule (also callable directly, e.g. by tests); the device
        rules only when `devices` (the leader's loop asks them at their own cadence)."""
        now = self._clock.now()
        params = self._params()
        if devices:
            began = time.monotonic()
            await self._devices(now, params)
            self.device_sweep_s = time.monotonic() - began
            self._devices_due = began + self.device_sweep_every_s
        await self._zones(now, params)
        await self._escalations(now, params)
        await self._long_lies(now, params)
        self.sweeps += 1

    async def prune(self) -> int:
        """Drop live changes and trigger claims past their keep (database time), and on
        plain PostgreSQL readings and events past CAREHUB_RETENTION_DAYS; rows gone."""
        self._pruned_at = time.monotonic()
        removed = 0
        async with self._pool.connection() as conn:
            for table, keep in (
                ("live_changes", LIVE_CHANGES_KEEP),
                ("alert_triggers", ALERT_TRIGGERS_KEEP),
            ):
                removed += await timer_rows.prune_old(conn, table, keep, PRUNE_BATCH)
            if self._flavour is None:
                self._flavour = await storage_flavour(conn)
            # TimescaleDB drops whole chunks by its own policy (storage/migrate.py).
            if self._flavour == "plain":
                for table in RETAINED_TABLES:
                    removed += await timer_rows.prune_past_retention(
                        conn, table, self._settings.retention_days, PRUNE_BATCH
                    )
        return removed

    # -- device rules --------------------------------------------------------------------

    async def _devices(self, now: datetime, params: RuleParams) -> None:
        # Only devices that may be offline or low, or whose alert may end, reach Python: a
        # healthy district of 10,000 devices costs one indexed query, not a blocked loop.
        factor = min(params.values_in_force("device_offline", "heartbeat_factor"))
        threshold = max(params.values_in_force("low_battery", "threshold_percent"))
        async with self._pool.connection() as conn:
            snapshots = await timer_rows.devices_to_check(conn, now, factor, threshold)
            open_alerts = await alert_rows.open_alert_ids(conn, _DEVICE_KINDS)
        for n, snapshot in enumerate(snapshots):
            if n % SWEEP_YIELD_EVERY == SWEEP_YIELD_EVERY - 1:
                await asyncio.sleep(0)  # a district-wide outage must not stall ingest
            device = snapshot.device
            offline = is_offline(snapshot, params, now)
            await self._hold(
                "device_offline",
                device,
                holds=offline,
                open_alerts=open_alerts,
                now=now,
                detail={
                    "last_seen": snapshot.last_seen.isoformat() if snapshot.last_seen else None
                },
            )
            low = battery_verdict(snapshot, params)
            if low is not None:
                await self._hold(
                    "low_battery",
                    device,
                    holds=low,
                    open_alerts=open_alerts,
                    now=now,
                    detail={"battery": snapshot.battery},
                )

    async def _hold(
        self,
        kind: str,
        device: DeviceInfo,
        *,
        holds: bool,
        open_alerts: dict[tuple[str, str], int],
        now: datetime,
        detail: dict[str, Any],
    ) -> None:
        alert_id = open_alerts.get((device.id, kind))
        if holds and alert_id is None:
            condition = Condition(kind, device.id, device.facility_id, device.zone_id, detail)
            await self._raise_condition(condition, now, device_id=device.id)
        elif not holds and alert_id is not None:
            await self._alerts.resolve_condition_ended(alert_id, now, "condition ended")

    # -- zone rules ----------------------------------------------------------------------

    async def _zones(self, now: datetime, params: RuleParams) -> None:
        zones, facility_capacity = await self._zone_snapshots(now)
        holding = {
            (c.subject, c.kind): c for c in [*capacity_breaches(zones, facility_capacity)]
        } | {(c.subject, c.kind): c for c in ratio_breaches(zones)}
        async with self._pool.connection() as conn:
            since = await timer_rows.condition_starts(conn)
            open_alerts = await alert_rows.open_alert_ids(conn, _ZONE_KINDS)
            await timer_rows.start_conditions(
                conn, [c for key, c in holding.items() if key not in since], now
            )
            await timer_rows.end_conditions(conn, [key for key in since if key not in holding])
        for key, condition in holding.items():
            started = since.get(key, now)
            hold_s = params.get(condition.kind, condition.facility_id, condition.zone_id)["hold_s"]
            if key not in open_alerts and now - started >= timedelta(seconds=hold_s):
                await self._raise_condition(condition, now)
        for key, alert_id in open_alerts.items():
            if key not in holding:
                await self._alerts.resolve_condition_ended(alert_id, now, "condition ended")

    async def _raise_condition(
        self, condition: Condition, now: datetime, *, device_id: str | None = None
    ) -> None:
        """Raise the alert of a condition that holds, about a device or a zone (None)."""
        await self._alerts.raise_alert(
            decision(
                condition.kind,
                facility_id=condition.facility_id,
                zone_id=condition.zone_id,
                device_id=device_id,
                subject=condition.subject,
                at=now,
                detail=condition.detail,
            )
        )

    async def _zone_snapshots(self, now: datetime) -> tuple[list[ZoneSnapshot], dict[str, int]]:
        """Zones with the latest count of their fresh counters, and facility capacities."""
        async with self._pool.connection() as conn:
            zones = await timer_rows.zone_snapshots(conn, now)
            capacity = await timer_rows.facility_capacities(conn)
        return zones, capacity

    # -- escalation and long lie ---------------------------------------------------------

    async def _escalations(self, now: datetime, params: RuleParams) -> None:
        async with self._pool.connection() as conn:
            candidates = await alert_rows.escalation_candidates(conn, _ESCALATING)
        for alert in candidates:
            timing = params.get("escalation", alert.facility_id, alert.zone_id)
            age = now - alert.raised_at
            if alert.renotified_at is None and age >= timedelta(seconds=timing["renotify_after_s"]):
                await self._alerts.escalate(alert.id, "renotify", now)
            if (
                alert.overdue_at is None
                and alert.priority in _HIGH
                and age >= timedelta(seconds=timing["overdue_after_s"])
            ):
                await self._alerts.escalate(alert.id, "overdue", now)

    async def _long_lies(self, now: datetime, params: RuleParams) -> None:
        async with self._pool.connection() as conn:
            falls = await alert_rows.unattended_falls(conn)
        for fall in falls:
            limit = params.get("long_lie", fall.facility_id, fall.zone_id)["limit_min"]
            if now - fall.raised_at >= timedelta(minutes=limit):
                detail = {"fall_alert_id": str(fall.id), "limit_min": limit}
                condition = Condition(
                    "long_lie", fall.device_id, fall.facility_id, fall.zone_id, detail
                )
                await self._raise_condition(condition, now, device_id=fall.device_id)
