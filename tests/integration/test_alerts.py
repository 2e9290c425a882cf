"""Alerts over real MQTT (SPEC §4): raised by devices, acked back to them, kept in the database.

The hub runs in this event loop with a clock the test moves, so escalation and long-lie
timers fire in seconds of test time; the timer sweep is called directly after moving it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from hub.alerts.audit import verify_audit
from hub.clock import ManualClock
from hub.errors import AlertError
from hub.runtime import Hub
from hub.settings import Settings
from hub.timers import DEVICE_SWEEP_SHARE, TIMER_LOCK_CLASS
from tests.fix_hub import (
    DB,
    FACILITY,
    FakeDevice,
    clocked_hub,
    escalation_marks,
    fake_device,
    rows,
    wait_for,
)
from tests.samples import sos_decision

pytestmark = [pytest.mark.mqtt, pytest.mark.db]


@pytest.fixture
async def hub(migrated: Settings, clock: ManualClock) -> AsyncIterator[Hub]:
    """A hub on the test's schema with the test's clock, its timers and live feed running."""
    async with clocked_hub(migrated, clock) as running:
        yield running


async def open_alerts(db: DB, kind: str) -> list[tuple[Any, ...]]:
    return await rows(
        db,
        "SELECT id, state, count, seq, device_id FROM alerts WHERE kind = %s"
        " AND state <> 'resolved' ORDER BY id",
        kind,
    )


async def test_sos_is_raised_repeated_acked_and_resolved_through_its_whole_lifecycle(
    hub: Hub, db: DB
) -> None:
    """A press raises one sos; a repeat counts; each state reaches the button on `ack`."""
    settings = hub.settings
    async with fake_device(settings, "eb-1") as button:
        with hub.live.subscribe() as feed:
            await button.send("event", button.message(event="pressed", button="red"))
            await wait_for(lambda: len(button.acks) >= 1)
            rows = await open_alerts(db, "sos")
            assert len(rows) == 1
            alert_id, state, count, seq, device = rows[0]
            assert (state, count, seq, device) == ("active", 1, 1, "eb-1")
            assert button.acks[0] == {"seq": 1, "alert_id": str(alert_id), "state": "received"}
            live = await asyncio.wait_for(feed.queue.get(), 5)
            assert live["action"] == "raise"
            assert live["alert"]["id"] == str(alert_id)

            # The same message redelivered is no repeat; a second press is.
            first = button.message(event="pressed", button="red")
            await button.send("event", first)
            await button.send("event", first)
            await wait_for(lambda: len(button.acks) >= 2)
            await asyncio.sleep(0.3)
            rows = await open_alerts(db, "sos")
            assert [(r[0], r[2]) for r in rows] == [(alert_id, 2)]
            assert len(button.acks) == 2

            # Cancelling at the button keeps a latched sos open.
            await button.send("event", button.message(event="cancelled"))
            await wait_for(lambda: _cleared(db, alert_id))
            assert (await open_alerts(db, "sos"))[0][1] == "active"

            await hub.alerts.acknowledge(alert_id, "staff-wang")
            await hub.alerts.attend(alert_id, "staff-wang", "on site")
            with pytest.raises(AlertError) as refused:
                await hub.alerts.resolve(alert_id, "staff-wang", "maybe")
            assert refused.value.code == "invalid"
            await hub.alerts.resolve(alert_id, "staff-wang", "real", "helped up")
            await wait_for(lambda: [a["state"] for a in button.acks][-1:] == ["resolved"])
            assert [a["state"] for a in button.acks] == [
                "received",
                "received",
                "acknowledged",
                "attended",
                "resolved",
            ]
            with pytest.raises(AlertError) as again:
                await hub.alerts.acknowledge(alert_id, "staff-li")
            assert again.value.code == "conflict"

    cur = await db.execute(
        "SELECT action, from_state, to_state, actor FROM alert_audit WHERE alert_id = %s"
        " ORDER BY id",
        (alert_id,),
    )
    assert await cur.fetchall() == [
        ("raise", None, "active", "system"),
        ("repeat", "active", "active", "system"),
        ("clear", "active", "active", "device"),
        ("acknowledge", "active", "acknowledged", "staff-wang"),
        ("attend", "acknowledged", "attended", "staff-wang"),
        ("resolve", "attended", "resolved", "staff-wang"),
    ]
    cur = await db.execute(
        "SELECT disposition, note, acknowledged_by FROM alerts WHERE id = %s", (alert_id,)
    )
    assert await cur.fetchone() == ("real", "helped up", "staff-wang")
    assert await verify_audit(db) == []


async def test_a_press_is_stored_and_acked_while_telemetry_cannot_be_written(
    hub: Hub, db: DB
) -> None:
    """Events have their own lane: a press never waits behind telemetry, even stuck telemetry."""
    settings = hub.settings
    blocker = await psycopg.AsyncConnection.connect(
        settings.database_url, options=f"-c search_path={settings.database_schema},public"
    )
    async with blocker, fake_device(settings, "eb-1") as button:
        # SHARE: readings can be read, not written. The telemetry lane's batch waits on it.
        await blocker.execute("LOCK TABLE readings IN SHARE MODE")
        for battery in (90, 89, 88):
            await button.send("telemetry", button.message(battery=battery))

        async def telemetry_stuck() -> bool:
            waiting = await rows(
                db,
                "SELECT 1 FROM pg_locks WHERE NOT granted AND relation = 'readings'::regclass",
            )
            return bool(waiting)

        await wait_for(telemetry_stuck)
        await button.send("event", button.message(event="pressed", button="red"))
        await wait_for(lambda: bool(button.acks), timeout=5)
        assert button.acks[0]["state"] == "received"
        assert [row[4] for row in await open_alerts(db, "sos")] == ["eb-1"]
        stored = await rows(db, "SELECT event FROM events WHERE device_id = 'eb-1'")
        assert stored == [("pressed",)]
        assert await rows(db, "SELECT count(*) FROM readings") == [(0,)]

        await blocker.rollback()

        async def readings_stored() -> bool:
            return await rows(db, "SELECT count(*) FROM readings") == [(3,)]

        await wait_for(readings_stored)


async def _cleared(db: DB, alert_id: int) -> bool:
    cur = await db.execute("SELECT cleared_at IS NOT NULL FROM alerts WHERE id = %s", (alert_id,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def test_a_test_press_is_answered_on_ack_and_raises_no_alert(hub: Hub, db: DB) -> None:
    """A scheduled test call is recorded and answered, with no alarm to staff."""
    async with fake_device(hub.settings, "eb-1") as button:
        await button.send("event", button.message(event="pressed", button="red", test=True))
        await wait_for(lambda: len(button.acks) >= 1)
        assert button.acks[0] == {"seq": 1, "alert_id": None, "state": "received", "test": True}
    assert await open_alerts(db, "sos") == []

    async def recorded() -> bool:
        cur = await db.execute("SELECT count(*) FROM events WHERE device_id = 'eb-1'")
        return await cur.fetchone() == (1,)

    # The answer goes out at once; the event itself lands with its batch.
    await wait_for(recorded)


async def test_an_unacknowledged_fall_escalates_then_goes_overdue_then_becomes_a_long_lie(
    hub: Hub, db: DB, clock: ManualClock
) -> None:
    """Fall: renotify at 60 s, overdue at 180 s, long_lie at 10 min, on the hub's clock."""
    async with fake_device(hub.settings, "fs-1") as sensor:
        await sensor.send(
            "event", sensor.message(event="fall_detected", confidence=0.4, posture="lying")
        )
        await sensor.send(
            "event", sensor.message(event="fall_detected", confidence=0.9, posture="lying")
        )
        await wait_for(lambda: len(sensor.acks) >= 1)
        await asyncio.sleep(0.2)
        falls = await open_alerts(db, "fall")
        assert len(falls) == 1, "a fall below the zone's confidence threshold raised an alert"
        fall_id = falls[0][0]

        clock.advance(61)
        await hub.timers.sweep()
        assert await escalation_marks(db, fall_id) == (True, False)
        clock.advance(120)
        await hub.timers.sweep()
        cur = await db.execute(
            "SELECT overdue_at IS NOT NULL FROM alerts WHERE id = %s", (fall_id,)
        )
        assert await cur.fetchone() == (True,)
        assert await open_alerts(db, "long_lie") == []

        # The person got up by themselves: the latched fall stays open.
        await sensor.send("event", sensor.message(event="fall_cleared"))
        await wait_for(lambda: _cleared(db, fall_id))
        clock.advance(10 * 60)
        await hub.timers.sweep()
        long_lies = await open_alerts(db, "long_lie")
        assert len(long_lies) == 1
        assert long_lies[0][4] == "fs-1"
        # A second sweep raises nothing more.
        await hub.timers.sweep()
        assert len(await open_alerts(db, "long_lie")) == 1
    cur = await db.execute(
        "SELECT action FROM alert_audit WHERE alert_id = %s ORDER BY id", (fall_id,)
    )
    assert [row[0] for row in await cur.fetchall()] == ["raise", "renotify", "overdue", "clear"]


async def test_the_device_rules_keep_a_cadence_of_their_own_set_by_their_cost(
    hub: Hub, db: DB, clock: ManualClock
) -> None:
    """A sweep without the device rules leaves a silent device alone; with them it is
    offline, and their next run waits for their cost over DEVICE_SWEEP_SHARE."""
    clock.advance(121)  # nothing heard from the site's devices for two heartbeats
    await hub.timers.sweep(devices=False)
    assert await open_alerts(db, "device_offline") == []
    await hub.timers.sweep()
    assert {row[4] for row in await open_alerts(db, "device_offline")} == {"fs-1", "eb-1", "oc-1"}
    took = hub.timers.device_sweep_s
    assert 0 < took < 1
    assert hub.timers.device_sweep_every_s == pytest.approx(took / DEVICE_SWEEP_SHARE)


async def test_offline_and_low_battery_resolve_by_themselves_when_the_condition_ends(
    hub: Hub, db: DB, clock: ManualClock
) -> None:
    """Non-latched kinds: offline after 2 x heartbeat, back online resolves; battery too."""
    async with fake_device(hub.settings, "fs-1") as sensor:
        await sensor.send("telemetry", sensor.message(presence=True, battery=12, rssi=-60))
        await wait_for(lambda: _stored_state(db, "fs-1", 12))
        await hub.timers.sweep()
        battery = await open_alerts(db, "low_battery")
        assert [row[4] for row in battery] == ["fs-1"]

        clock.advance(121)  # heartbeat_s is 60 at the test site
        await hub.timers.sweep()
        offline = {row[4] for row in await open_alerts(db, "device_offline")}
        assert offline == {"fs-1", "eb-1", "oc-1"}

        await sensor.send("telemetry", sensor.message(presence=True, battery=80, rssi=-60))
        await wait_for(lambda: _stored_state(db, "fs-1", 80))
        await hub.timers.sweep()
    assert {row[4] for row in await open_alerts(db, "device_offline")} == {"eb-1", "oc-1"}
    assert await open_alerts(db, "low_battery") == []
    # Closed by the system, not judged by anyone: never a false alarm (nor `other`).
    cur = await db.execute(
        "SELECT disposition, resolved_by FROM alerts"
        " WHERE kind IN ('low_battery', 'device_offline') AND state = 'resolved'"
    )
    assert await cur.fetchall() == [("self_resolved", "system")] * 2


async def _stored_state(db: DB, device_id: str, battery: float) -> bool:
    cur = await db.execute("SELECT battery FROM device_state WHERE device_id = %s", (device_id,))
    row = await cur.fetchone()
    return row is not None and row[0] == battery


async def test_over_capacity_and_staff_ratio_need_their_hold_time_and_clear_themselves(
    hub: Hub, db: DB, clock: ManualClock
) -> None:
    """A class above capacity for 2 min and above its ratio for 5 min; both end when it does."""
    async with fake_device(hub.settings, "oc-1") as counter:
        # 托小班 A: capacity 15, ratio 1:5. 17 people of whom 2 staff: 15 children > 10.
        await counter.send("telemetry", counter.message(count=17, staff=2, zone="class-a"))
        await wait_for(lambda: _count_stored(db, "oc-1", 17))
        await hub.timers.sweep()
        assert await open_alerts(db, "over_capacity") == []
        # A count older than 2 heartbeats (2 min here) is not trusted, and the hub's own
        # timer task sweeps every second: the clock moves in steps, each with a fresh count.
        for _ in range(2):
            await _surge_for(db, clock, counter, 61)
        await hub.timers.sweep()
        assert len(await open_alerts(db, "over_capacity")) == 1
        assert await open_alerts(db, "staff_ratio") == []
        for _ in range(3):
            await _surge_for(db, clock, counter, 60)
        await hub.timers.sweep()
        assert len(await open_alerts(db, "staff_ratio")) == 1

        await counter.send("telemetry", counter.message(count=12, staff=3, zone="class-a"))
        await wait_for(lambda: _count_stored(db, "oc-1", 12))
        await hub.timers.sweep()
    assert await open_alerts(db, "over_capacity") == []
    assert await open_alerts(db, "staff_ratio") == []
    cur = await db.execute("SELECT subject, kind FROM alerts ORDER BY id")
    subjects = await cur.fetchall()
    assert (f"zone:{FACILITY}/class-a", "over_capacity") in subjects
    assert (f"zone:{FACILITY}/class-a", "staff_ratio") in subjects


async def _surge_for(db: DB, clock: ManualClock, counter: FakeDevice, seconds: float) -> None:
    """Move the hub's clock, then report 17 people (2 staff) and wait until it is stored."""
    clock.advance(seconds)
    advanced = clock.now()
    await counter.send("telemetry", counter.message(count=17, staff=2, zone="class-a"))

    async def fresh() -> bool:
        cur = await db.execute(
            "SELECT last_seen >= %s AND count = 17 FROM device_state WHERE device_id = 'oc-1'",
            (advanced,),
        )
        row = await cur.fetchone()
        return bool(row and row[0])

    await wait_for(fresh)


async def _count_stored(db: DB, device_id: str, count: int) -> bool:
    cur = await db.execute("SELECT count FROM device_state WHERE device_id = %s", (device_id,))
    row = await cur.fetchone()
    return row is not None and row[0] == count


async def test_a_tampered_audit_row_is_named_by_verify(hub: Hub, db: DB) -> None:
    """Editing or deleting an audit row breaks the facility's chain at that row."""
    async with fake_device(hub.settings, "eb-1") as button:
        for _ in range(3):
            await button.send("event", button.message(event="pressed", button="pendant"))
        await wait_for(lambda: len(button.acks) >= 3)
    alert_id = (await open_alerts(db, "sos"))[0][0]
    await hub.alerts.acknowledge(alert_id, "staff-wang")
    assert await verify_audit(db) == []
    cur = await db.execute("SELECT id FROM alert_audit ORDER BY id")
    ids = [row[0] for row in await cur.fetchall()]
    await db.execute("UPDATE alert_audit SET actor = 'someone-else' WHERE id = %s", (ids[-1],))
    problems = await verify_audit(db, FACILITY)
    assert [(p.row_id, p.why) for p in problems] == [(ids[-1], "its content was changed")]
    await db.execute("DELETE FROM alert_audit WHERE id = %s", (ids[-1],))
    await db.execute("DELETE FROM alert_audit WHERE id = %s", (ids[1],))
    problems = await verify_audit(db, FACILITY)
    assert [p.row_id for p in problems] == [ids[2]]


async def test_one_open_alert_per_device_and_kind_is_kept_by_the_database(hub: Hub, db: DB) -> None:
    """Concurrent raises of one device's sos from many tasks give one alert and its count."""
    now = hub.clock.now()
    decisions = [sos_decision(FACILITY, "eb-1", at=now, seq=1000 + n) for n in range(40)]
    await asyncio.gather(*(hub.alerts.raise_alert(d) for d in decisions))
    rows = await open_alerts(db, "sos")
    assert [(r[2]) for r in rows] == [40]
    with pytest.raises(psycopg.errors.UniqueViolation):
        await db.execute(
            "INSERT INTO alerts (facility_id, device_id, subject, kind, priority, latched,"
            " raised_at, last_raised_at) VALUES (%s, 'eb-1', 'eb-1', 'sos', 'high', true,"
            " now(), now())",
            (FACILITY,),
        )


async def test_a_dwell_is_a_latched_high_alert_acked_to_the_sensor(hub: Hub, db: DB) -> None:
    """No movement for N s: one high, latched dwell alert, acked; a repeat counts on it."""
    async with fake_device(hub.settings, "fs-1") as sensor:
        await sensor.send("event", sensor.message(event="dwell", seconds=1800))
        await wait_for(lambda: len(sensor.acks) >= 1)
        (row,) = await open_alerts(db, "dwell")
        dwell_id, state, count, seq, device = row
        assert (state, count, seq, device) == ("active", 1, 1, "fs-1")
        assert sensor.acks[0] == {"seq": 1, "alert_id": str(dwell_id), "state": "received"}

        await sensor.send("event", sensor.message(event="dwell", seconds=2400))
        await wait_for(lambda: len(sensor.acks) >= 2)
        assert [(r[0], r[2]) for r in await open_alerts(db, "dwell")] == [(dwell_id, 2)]

        await hub.alerts.acknowledge(dwell_id, "staff-li")
        await wait_for(lambda: sensor.acks[-1]["state"] == "acknowledged")
    cur = await db.execute(
        "SELECT priority, latched, detail->>'seconds' FROM alerts WHERE id = %s", (dwell_id,)
    )
    assert await cur.fetchone() == ("high", True, "2400")


async def test_the_leader_prunes_old_live_changes_and_trigger_claims(hub: Hub, db: DB) -> None:
    """live_changes older than a day and trigger claims older than 30 days are dropped."""
    async with fake_device(hub.settings, "eb-1") as button:
        await button.send("event", button.message(event="pressed", button="red"))
        await wait_for(lambda: len(button.acks) >= 1)
    await db.execute(
        "INSERT INTO live_changes (at, facility_id, change) VALUES"
        " (now() - interval '25 hours', %s, '{}'), (now() - interval '2 hours', %s, '{}')",
        (FACILITY, FACILITY),
    )
    await db.execute(
        "INSERT INTO alert_triggers (device_id, seq, kind, at) VALUES"
        " ('eb-1', 900, 'sos', now() - interval '31 days'),"
        " ('eb-1', 901, 'sos', now() - interval '29 days')"
    )
    assert await hub.timers.prune() == 2
    cur = await db.execute(
        "SELECT count(*) FILTER (WHERE at < now() - interval '1 day'), count(*) FROM live_changes"
    )
    remaining = await cur.fetchone()
    assert remaining is not None
    assert remaining[0] == 0
    assert remaining[1] >= 2  # the press's change and the 2-hour-old one are kept
    cur = await db.execute("SELECT seq FROM alert_triggers WHERE device_id = 'eb-1' ORDER BY seq")
    assert [row[0] for row in await cur.fetchall()] == [1, 901]


async def test_a_failing_sweep_is_logged_and_the_timers_go_on(
    hub: Hub, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in one sweep does not end the timers: leadership is taken again, sweeps resume."""
    real = hub.timers._escalations
    failed = asyncio.Event()

    async def broken_once(*args: Any) -> None:
        if not failed.is_set():
            failed.set()
            raise RuntimeError("a bug in a rule")
        await real(*args)

    monkeypatch.setattr(hub.timers, "_escalations", broken_once)
    await asyncio.wait_for(failed.wait(), 10)
    after_failure = hub.timers.sweeps
    await wait_for(lambda: hub.timers.sweeps > after_failure + 1, timeout=15)
    assert hub.timers.leader.is_set()
    assert not any(task.done() for task in hub.tasks)
    assert "timer sweep failed; retrying" in caplog.text


async def test_a_lost_leader_session_is_said_and_leadership_is_taken_again(
    hub: Hub, db: DB, caplog: pytest.LogCaptureFixture
) -> None:
    """The database ends the leader's session (a restart, a failover): the log says the
    term ended, and the process takes the lock again on a new session."""
    await asyncio.wait_for(hub.timers.leader.wait(), 15)
    cur = await db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND classid = %s AND objid::int8 = hashtext(current_schema())::int8 & 4294967295",
        (TIMER_LOCK_CLASS,),
    )
    assert [row[0] for row in await cur.fetchall()] == [True]
    await wait_for(lambda: "timer leadership lost" in caplog.text, timeout=10)
    await wait_for(hub.timers.leader.is_set, timeout=15)
    after = hub.timers.sweeps
    await wait_for(lambda: hub.timers.sweeps > after, timeout=10)
