"""Alerts at scale: two hub processes on one stream, timer handover, floods, and the CLI.

With a broker that has shared subscriptions (Mosquitto, MQTT 5) the two hubs split the
stream as in production. On the embedded broker (no shared subscriptions) both receive
every message, which is harder still: each press is handled twice, concurrently, and the
database alone must keep one open alert per device and count each press once.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from devices import topic
from hub.runtime import run_hub
from hub.settings import Settings
from tests.child_process import database_env, run_carehub
from tests.fix_hub import DB, FACILITY, now_ts, raw_client, register_buttons, wait_for
from tests.hub_pair import two_hubs
from tests.samples import sos_decision

pytestmark = [pytest.mark.mqtt, pytest.mark.db, pytest.mark.slow]

BUTTONS = 200
PRESSES = 1000
TAKEOVER_S = 15.0


async def _register_buttons(db: DB, count: int, prefix: str = "eb-b") -> list[str]:
    ids = [f"{prefix}{n:03d}" for n in range(count)]
    await register_buttons(db, ids, heartbeat_s=300)
    return ids


async def test_two_hubs_keep_one_open_alert_per_device_through_a_burst_of_presses(
    migrated: Settings, db: DB, tmp_path: Path
) -> None:
    """1,000 presses over 200 buttons, two hubs: 200 open sos alerts counting 1,000."""
    buttons = await _register_buttons(db, BUTTONS)
    # A shared subscription wants MQTT 5, and a broker other than the embedded one.
    shared = migrated.mqtt_protocol == 5 and bool(os.environ.get("CAREHUB_TEST_MQTT_URL"))
    async with two_hubs(migrated, tmp_path, shared=shared) as hubs:
        for hub in hubs:
            await hub.pipeline.devices.reload()
        async with raw_client(migrated, "presses") as client:
            client.pending_calls_threshold = 500
            seqs = dict.fromkeys(buttons, 0)
            for start in range(0, PRESSES, 100):
                publishes = []
                for n in range(start, start + 100):
                    device = buttons[n % BUTTONS]
                    seqs[device] += 1
                    body = {
                        "ts": now_ts(),
                        "seq": seqs[device],
                        "event": "pressed",
                        "button": "red",
                    }
                    publishes.append(
                        client.publish(
                            topic(migrated.topic_root, FACILITY, device, "event"),
                            json.dumps(body),
                            qos=1,
                        )
                    )
                await asyncio.gather(*publishes)

        async def counted() -> bool:
            cur = await db.execute(
                "SELECT count(*), coalesce(sum(count), 0) FROM alerts WHERE kind = 'sos'"
            )
            return await cur.fetchone() == (BUTTONS, PRESSES)

        await wait_for(counted, timeout=60)
        cur = await db.execute(
            "SELECT device_id, count(*) FILTER (WHERE state <> 'resolved') FROM alerts"
            " WHERE kind = 'sos' GROUP BY device_id HAVING count(*) <> 1"
        )
        assert await cur.fetchall() == [], "a device has more than one open sos alert"
        cur = await db.execute("SELECT count(*) FROM alert_triggers WHERE kind = 'sos'")
        assert await cur.fetchone() == (PRESSES,)

        # Exactly one of them runs the timers; stopping it hands them to the other.
        await wait_for(lambda: any(hub.timers.leader.is_set() for hub in hubs), timeout=15)
        leaders = [hub for hub in hubs if hub.timers.leader.is_set()]
        assert len(leaders) == 1
        follower = next(hub for hub in hubs if hub is not leaders[0])
        started = time.monotonic()
        # The leader dies: its database sessions end, and the lock with them.
        (leader_timers,) = [t for t in leaders[0].tasks if t.get_name() == "carehub-timers"]
        leader_timers.cancel()
        await wait_for(follower.timers.leader.is_set, timeout=TAKEOVER_S)
        assert time.monotonic() - started < TAKEOVER_S
        sweeps = follower.timers.sweeps
        await wait_for(lambda: follower.timers.sweeps > sweeps, timeout=5)


async def test_a_flood_of_offline_devices_reaches_the_live_feed_grouped_and_all_are_stored(
    migrated: Settings, db: DB
) -> None:
    """300 devices go offline at one facility: at most 10 single alerts, then summaries."""
    await db.execute(
        "INSERT INTO devices (id, facility_id, type, zone_id, heartbeat_s, registered_at)"
        " SELECT 'fs-f' || lpad(n::text, 3, '0'), %s, 'fall_sensor', 'room-101', 60,"
        " now() - interval '1 day' FROM generate_series(0, 299) n",
        (FACILITY,),
    )
    async with run_hub(migrated) as hub:
        await asyncio.wait_for(hub.live.listening.wait(), 15)
        with hub.live.subscribe() as feed:
            await hub.timers.sweep()

            singles: list[dict[str, Any]] = []
            groups: list[dict[str, Any]] = []

            async def summarised() -> bool:
                while not feed.queue.empty():
                    message = feed.queue.get_nowait()
                    if message.get("type") == "alert_group":
                        groups.append(message)
                    elif message.get("action") == "raise":
                        singles.append(message)
                return bool(groups) and len(singles) + groups[-1]["count"] >= 300

            await wait_for(summarised, timeout=30)
            assert not feed.lagging
    cur = await db.execute(
        "SELECT count(*) FROM alerts WHERE kind = 'device_offline' AND facility_id = %s",
        (FACILITY,),
    )
    # The site's own three devices were registered just now: not offline yet.
    assert await cur.fetchone() == (300,)
    assert len(singles) <= 10
    last = groups[-1]
    assert last["facility_id"] == FACILITY
    assert last["kinds"] == {"device_offline": 300 - len(singles)}
    assert "设备离线" in last["text"]
    assert len(groups) < 300 - len(singles), "summaries were not grouped"


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return run_carehub(*args, **database_env(settings))


async def test_audit_verify_and_rules_import_from_the_command_line(
    migrated: Settings, db: DB, tmp_path: Path
) -> None:
    """`carehub audit verify` names a broken row; `carehub rules import` names a bad field."""
    async with run_hub(migrated) as hub:
        for seq in (1, 2):
            await hub.alerts.raise_alert(
                sos_decision(FACILITY, "eb-1", at=hub.clock.now(), seq=seq)
            )
    ok = await asyncio.to_thread(_cli, migrated, "audit", "verify")
    assert ok.returncode == 0, ok.stderr
    assert "audit trail intact: 2 rows, 1 facilities" in ok.stdout
    cur = await db.execute("SELECT max(id) FROM alert_audit")
    row = await cur.fetchone()
    assert row is not None
    await db.execute("UPDATE alert_audit SET note = 'edited' WHERE id = %s", (row[0],))
    broken = await asyncio.to_thread(_cli, migrated, "audit", "verify", "--facility", FACILITY)
    assert broken.returncode == 1
    assert f"chain broken at row {row[0]}: its content was changed" in broken.stdout

    good = tmp_path / "rules.toml"
    good.write_text(f"[facilities.{FACILITY}.zones.room-101.fall]\nmin_confidence = 0.8\n", "utf-8")
    stored = await asyncio.to_thread(_cli, migrated, "rules", "import", str(good))
    assert stored.returncode == 0, stored.stderr
    shown = await asyncio.to_thread(
        _cli, migrated, "rules", "show", "--facility", FACILITY, "--zone", "room-101", "--json"
    )
    assert json.loads(shown.stdout)["fall"] == {"min_confidence": 0.8}
    bad = tmp_path / "bad.toml"
    bad.write_text(f"[facilities.{FACILITY}.fall]\nmin_confidence = 2\n", "utf-8")
    refused = await asyncio.to_thread(_cli, migrated, "rules", "import", str(bad))
    assert refused.returncode == 1
    assert f"facility {FACILITY}: fall.min_confidence: must be between 0 and 1" in refused.stderr
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[facilities.f-nowhere.fall]\nmin_confidence = 0.5\n", "utf-8")
    missing = await asyncio.to_thread(_cli, migrated, "rules", "import", str(unknown))
    assert missing.returncode == 1
    assert "facility f-nowhere: not registered" in missing.stderr
