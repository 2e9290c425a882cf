"""`carehub bench sweep`: how long the timers' device sweep takes for a city's registry.

The timer leader asks the database which devices may be offline or low, or whose offline
or battery alert may end (`storage.timers.devices_to_check`). Its cost grows with the
registry, not with the traffic, so the leader runs it at most once a tick and less often as
it grows (hub.timers.DEVICE_SWEEP_SHARE). This registers N devices in a schema of its own,
all heard a moment ago but for a small share that fell silent or runs low, times that query
over several runs, and says how often the leader would run it.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import datetime

import psycopg

from bench.harness import BenchRun, db_now
from hub.settings import Settings
from hub.storage.timers import devices_to_check
from hub.timers import DEVICE_SWEEP_SHARE, device_rules_every

DEVICES_PER_FACILITY = 50
# One device in this many is silent (offline), one in this many runs low: what a healthy
# district reports on an ordinary day, and what the sweep hands to Python.
SILENT_EVERY = 1_000
LOW_EVERY = 1_500
# The rule's defaults (SPEC §4): offline after two heartbeats, low at 20 %.
HEARTBEAT_FACTOR = 2.0
LOW_BATTERY = 20.0
HEARTBEAT_S = 60
RUNS = 5
# The leader runs the device rules every (their cost / DEVICE_SWEEP_SHARE) seconds, by
# which an offline alert can come late: at most a quarter of the offline limit (two
# heartbeats of 60 s).
TARGET_LATE_S = HEARTBEAT_FACTOR * HEARTBEAT_S / 4


def run_sweep_bench(settings: Settings, devices: int = 1_000_000, keep: bool = False) -> int:
    """Register `devices` and time the device sweep; prints its figures, returns 0."""
    return asyncio.run(_bench(settings, devices, keep=keep))


async def _bench(settings: Settings, devices: int, *, keep: bool) -> int:
    run = BenchRun.new(settings)
    run.announce(
        f"carehub bench sweep: {devices:,} devices registered, the timers' device sweep"
        f" {RUNS} times"
    )
    async with run.database(keep=keep) as conn:
        began = time.perf_counter()
        await _register(conn, devices)
        print(f"  registered in {time.perf_counter() - began:.1f} s", flush=True)
        now = await db_now(conn)
        seconds, found = [], 0
        for _ in range(RUNS):
            began = time.perf_counter()
            found = len(await devices_to_check(conn, now, HEARTBEAT_FACTOR, LOW_BATTERY))
            seconds.append(time.perf_counter() - began)
        median = statistics.median(seconds)
        print(
            f"sweep        min {min(seconds) * 1000:,.0f} ms, median {median * 1000:,.0f} ms,"
            f" max {max(seconds) * 1000:,.0f} ms over {RUNS} runs;"
            f" {found:,} devices to check (expected {_expected(devices):,})"
        )
        # As the leader would space them: never more often than its 1 s tick.
        every = max(device_rules_every(median), 1.0)
        print(
            f"cadence      every {every:,.1f} s ({DEVICE_SWEEP_SHARE:.0%} of the timer leader's"
            f" time): an offline alert up to {every:,.1f} s after two heartbeats"
        )
        verdict = "PASS" if every <= TARGET_LATE_S else "MISS"
        print(f"{verdict:<12} offline alerts late by ≤ {TARGET_LATE_S:g} s: {every:,.1f} s")
    return 0


def _expected(devices: int) -> int:
    """Devices the sweep must return: the silent and the low (some are both)."""
    return sum(
        1
        for n in range(devices)
        if n % SILENT_EVERY == SILENT_EVERY - 1 or n % LOW_EVERY == LOW_EVERY - 1
    )


async def _register(conn: psycopg.AsyncConnection[object], devices: int) -> None:
    """Facilities, rooms, devices and their states, written by the database itself."""
    facilities = -(-devices // DEVICES_PER_FACILITY)
    now: datetime = await db_now(conn)
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO facilities (id, name, kind, district)"
            " SELECT 'SW' || n, 'sweep ' || n, 'integrated', 'sweep'"
            " FROM generate_series(0, %s - 1) n",
            (facilities,),
        )
        await conn.execute(
            "INSERT INTO zones (facility_id, zone_id, name, kind)"
            " SELECT 'SW' || n, 'room1', 'room', 'room' FROM generate_series(0, %s - 1) n",
            (facilities,),
        )
        await conn.execute(
            "INSERT INTO devices (id, facility_id, type, zone_id, heartbeat_s, registered_at)"
            " SELECT 'sw-' || n, 'SW' || (n / %s), 'fall_sensor', 'room1', %s, %s"
            " FROM generate_series(0, %s - 1) n",
            (DEVICES_PER_FACILITY, HEARTBEAT_S, now, devices),
        )
        # Heard a moment ago, or (the silent share) ten heartbeats ago.
        await conn.execute(
            "INSERT INTO device_state (device_id, last_seen, last_seq, online, battery)"
            " SELECT 'sw-' || n,"
            "  CASE WHEN n %% %s = %s - 1 THEN %s - make_interval(secs => 10 * %s) ELSE %s END,"
            "  1, true, CASE WHEN n %% %s = %s - 1 THEN 10 ELSE 80 END"
            " FROM generate_series(0, %s - 1) n",
            (
                SILENT_EVERY,
                SILENT_EVERY,
                now,
                HEARTBEAT_S,
                now,
                LOW_EVERY,
                LOW_EVERY,
                devices,
            ),
        )
    await conn.execute("ANALYZE facilities, zones, devices, device_state")
